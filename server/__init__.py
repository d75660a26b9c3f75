"""Kangaroo's OpenAI-compatible generation server on an in-process vLLM engine.

The floor plan, top to bottom. A module imports only from its own layer and the layers below
it; tests/test_floor_plan.py checks this, and that no import cycle exists.

    __main__.py, app.py   the process: settings → logging → app (middleware, routes) → uvicorn
    api/                  the HTTP face: routes/, request schemas, replies, SSE, OpenAPI
    state.py, drain.py    one process's state (engine life, adapters, traffic); drain on SIGTERM
    adapters/  traffic/   the adapter registry / what each request passes: keys, limits, queue,
                          deadlines, body limit, usage, the per-request log line
    observability/        metrics, log format, request ids
    structured/           what the engine can enforce: JSON-schema refusals, JSON string guard
    engine/               the engine seam, chat formatting (tools too), vLLM behind it (the
                          only module importing vLLM)
    errors.py settings.py API errors and their one mapping to HTTP; the server's settings
    contract.py           what server/ and finetune/ share: error base, settings layering, the
                          adapter folder (file names, manifest, fingerprint, LoRA ranks)
    playground/           the browser page's static files (no Python)

`finetune/` sits between the layers: it may import `contract`, `settings` and `engine` from
here (what it writes for, and the engine it checks its adapters on), never the HTTP side; in
turn `state.py` imports `finetune.demo` to build the demo model on first start, and nothing
below `state` imports `finetune`.

Features get a folder at the layer they belong to: structured outputs and tool calls beside
`engine/` (what a request asks the engine to constrain); batch jobs and stored responses will sit
beside `traffic/` (durable work that runs through the same engine and limits).
"""
