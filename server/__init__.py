"""Kangaroo's OpenAI-compatible generation server on an in-process vLLM engine."""
