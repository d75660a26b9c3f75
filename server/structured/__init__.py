"""Structured outputs and tool calls: the engine-independent parts.

`schemas.py` refuses, by name and place, the JSON-schema keywords the engine cannot enforce
exactly; `json_text.py` keeps JSON strings valid as text streams out. The HTTP layer turns
requests into engine constraints with them (`server/api/structured.py`). Imports: `engine`
(its plain types), `errors`, `contract`.
"""
