"""Fine-tuning: chat data → a LoRA adapter (or a full model) that the server can load.

`data.py` reads and checks rows, `batching.py` packs them, `preflight.py` holds vLLM's rules for
an adapter, `trainer.py` trains in one straight line, `adapter.py` writes the folder, `report.py`
the training record, `push.py` sends an adapter to a running server; `demo/` builds the server's
demo model with this trainer. Imports from `server/`: only `contract`, `settings` and `engine`.
"""
