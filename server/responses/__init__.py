"""Stored responses of the Responses API and the ones generating in this process: the response
objects, input items and every stream event on disk (SQLite under `data_dir`), owned by the key
that made them; runs that go on when their client drops, followed from any sequence number.
The HTTP route (server/api/routes/responses.py) builds the events from the chat path's output.
"""
