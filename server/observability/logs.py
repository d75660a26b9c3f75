"""Logging set-up: one JSON object per line (for log pipelines), or plain text.

The request log (`server.traffic.request_log`) adds its fields under `request`; in JSON they become
keys of the line, so every request is one line with its id, key id, model, tokens and timings.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from server.settings import Settings


class JsonFormatter(logging.Formatter):
    """A record as one JSON line: time, level, logger, message, and the request's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The line for `record`."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "request", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Plain text; a request's fields follow its message as key=value pairs."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The line for `record`."""
        text = super().format(record)
        fields = getattr(record, "request", None)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("method",))
        return text


def configure_logging(settings: Settings) -> None:
    """Send our records and uvicorn's to stderr in the chosen format, at the chosen level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
