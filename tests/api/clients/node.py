"""The JavaScript clients' scripts (js/, installed by `npm ci` in the set-up), run under node."""

import json
import subprocess
from pathlib import Path
from typing import Any

JS = Path(__file__).parent / "js"


def run_node(script: str, *args: str) -> Any:
    """Run `script` of js/ with `args`; what it printed last, as JSON (it fails the test if
    node exits non-zero)."""
    done = subprocess.run(
        ["node", script, *args], cwd=JS, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
