"""Fine-tuning: chat data → a LoRA adapter (or a full model) that the server can load."""
