"""The Hugging Face transformers wing: `TransformersBackend` (`backend.py`, the facade) runs a
local model in this process. `decode.py` decodes rows together, `batch.py` stacks their caches,
`states.py` reads hidden states, `prefix_cache.py` keeps prompt prefixes' caches, `grammar.py`
masks logits for constrained decoding (xgrammar). Imported on use: everything here loads torch.
"""
