"""The Hugging Face transformers wing: `TransformersBackend` (`backend.py`, the facade) runs a
local model in this process. `batch.py` is the running batch (rows join and leave between
steps); `forward.py` owns every forward of the model (prefill, decode, score, hidden states) and
the KV caches; `sampling.py` chooses tokens and decides when a row stops; `states.py` is the
hidden-state API; `prefix_cache.py` keeps prompt prefixes' keys and values; `grammar.py` masks
logits for constrained decoding (xgrammar). Imported on use: everything here loads torch.
"""
