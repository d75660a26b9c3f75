"""Hot-loaded LoRA adapters: checks, the versioned registry on disk, and routing to the engine.

`checks.py` inspects an adapter folder without the engine, `store.py` is the registry on disk
that replicas share, `registry.py` maps model names to engine adapters, pushes and deletes.
Imports: `observability`, `engine`, `errors`, `settings`, `contract`.
"""
