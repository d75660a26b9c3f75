"""The HTTP face: routes (one file per resource) and what they share.

`protocol.py` holds the request schemas, `sampling.py` turns them into engine options,
`replies.py` the pieces of OpenAI's response format, `sse.py` the event stream, `disconnect.py`
stops work for clients that left, `openapi.py` documents what every route answers. Each request
path reads top-down in its route file: validate → prompt → admit → engine → stream or collect.
Imports: every layer below (`state`, `traffic`, `adapters`, `observability`, `engine`, ...).
"""
