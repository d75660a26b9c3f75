"""`python -m server` / `kangaroo-serve`: start the OpenAI-compatible server."""

import logging
import sys

import uvicorn

from server.app import create_app
from server.errors import SettingsError
from server.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    """Parse settings, serve until stopped; the exit code says whether start-up failed."""
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        print(f"kangaroo-serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    failed = []

    def stop_after_failure() -> None:
        failed.append(True)
        server.should_exit = True

    app = create_app(settings, on_start_failure=stop_after_failure)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False
    )
    server = uvicorn.Server(config)
    server.run()
    return 1 if failed else 0


# vLLM starts worker processes that re-import the main module: the guard keeps them from
# starting a second server.
if __name__ == "__main__":
    sys.exit(main())
