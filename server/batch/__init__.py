"""Batch inference's durable state: uploaded files (and, next, batch jobs) on disk.

Everything here lives under the `data_dir` setting (SQLite plus plain files), survives a restart
or a SIGKILL, and is owned by the key that made it. It imports only the shared base (contract,
errors, settings); the HTTP routes in server/api/routes/ call it.
"""
