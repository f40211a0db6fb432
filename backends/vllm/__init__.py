"""The vLLM wing: `VLLMBackend` (`backend.py`) runs vLLM's engine in this process, and
`steering.py` is the worker extension that applies interventions inside vLLM's workers (vLLM
imports it there by name, `backends.vllm.steering.SteeringWorkerExtension`).
"""
