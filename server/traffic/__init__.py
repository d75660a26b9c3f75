"""What every request passes on its way to the engine and back.

    keys (auth.py) ─► body limit ─► rate limits (limits.py) ─► queue (admission.py)
        ─► engine, under a deadline (tickets.py) ─► usage (usage.py), log line (request_log.py)

Imports: `observability`, `engine` (its plain types), `errors`, `settings`, `contract`.
"""
