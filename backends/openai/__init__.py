"""The OpenAI-compatible wing: `OpenAIBackend` (`backend.py`) talks to a server (OpenAI, vLLM's,
llama.cpp's, ...) over HTTP; `wire.py` holds the request and response shapes, `http_client.py`
the retries, timeouts and key handling (also used by `search.served_reward`).
"""
