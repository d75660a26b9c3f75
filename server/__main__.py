"""`python -m server` / `kangaroo-serve`: start the OpenAI-compatible server."""

import sys

import uvicorn

from server.app import create_app
from server.contract import SettingsError
from server.drain import DrainingServer, exit_now
from server.observability.logs import configure_logging
from server.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    """Parse settings and serve until stopped.

    Exit codes: 0 after a drain, 1 when the engine failed to start or died (a supervisor
    should restart the process), 2 for bad settings, 128 + N after a second signal N.
    """
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
        check_tool_call_parser(settings.tool_call_parser)
    except SettingsError as exc:
        print(f"kangaroo-serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    app = create_app(settings, on_fatal_error=lambda: server.fail())
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's records go through our handler (JSON or text)
        access_log=False,  # the request log is ours
        timeout_graceful_shutdown=5,  # after our own drain, only idle connections are left
    )
    state = app.state.kangaroo
    server = DrainingServer(config, state)
    server.run()
    if state.engine_starting:  # stopped before the model had loaded
        exit_now(state, server.exit_code)
    return server.exit_code


def check_tool_call_parser(name: str) -> None:
    """SettingsError unless vLLM knows the tool parser named (auto and generic are ours).

    Only a named parser needs vLLM's list, so only then is vLLM imported before the port opens.
    """
    if name in ("auto", "generic"):
        return
    from server.engine.vllm_engine import resolve_tool_format

    resolve_tool_format(name, tokenizer=None)


# vLLM starts worker processes that re-import the main module: the guard keeps them from
# starting a second server.
if __name__ == "__main__":
    sys.exit(main())
