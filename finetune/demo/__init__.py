"""The built-in demo model, built from nothing with this package's trainer (no download).

`skills.py` generates its synthetic chat data; `build.py` trains a tokenizer, builds a small
Llama and trains it on those skills, then caches it. The server imports `build` to serve the
demo model; nothing here imports the server beyond what `finetune` may.
"""
