"""The engine: the seam the rest of the server talks to, and vLLM behind it.

`generation.py` defines what the server asks of an engine in plain types (`Engine`,
`SamplingOptions`, `ChoiceDelta`); `vllm_engine.py` implements it on vLLM's `AsyncLLM` and is the
only module in the project that imports vLLM; `cpu_bitmask.py` is a kernel vLLM loads into its
processes as a plugin. Imports: `contract`, `errors`, `settings`.
"""
