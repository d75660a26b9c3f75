"""What operators see: Prometheus metrics, the log format, request ids.

Imports: `engine` (its plain types), `settings`, `contract`.
"""
