"""Batch inference: uploaded files, batch jobs and their runner (durable state under
`data_dir`), and the offline runner (`python -m server.batch run`, locally or on Ray).

The server's part lives on disk (SQLite plus plain files), survives a restart or a SIGKILL, and
is owned by the key that made it; it imports only the shared base (contract, errors, settings)
and the HTTP routes in server/api/routes/ call it. The offline runner's entry points
(`__main__`, `offline`, `on_ray`, `in_process`) sit on top instead: they build the whole app
in-process, as `python -m server` does, and send each line through the live route.
"""
