#!/usr/bin/env bash
# Install what is missing, then start the server (flags are passed on: --model, --port, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m server "$@"
