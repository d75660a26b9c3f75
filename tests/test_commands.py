"""The README's two commands exist, and CI runs exactly the test command."""

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"^\s*(\./scripts/\S+\.sh)", text, flags=re.MULTILINE)


def test_readme_names_the_serve_and_test_commands() -> None:
    commands = _readme_commands()
    assert "./scripts/serve.sh" in commands
    assert "./scripts/test.sh" in commands
    for command in commands:
        path = REPO / command
        assert path.is_file(), command
        assert path.stat().st_mode & 0o111, f"{command} is not executable"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    lines = [line for line in ci.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[-1].split()[-1] == "scripts/test.sh"
    assert Path(REPO / ".ci" / "run").stat().st_mode & 0o111


def test_both_commands_install_first() -> None:
    for script in ("serve.sh", "test.sh"):
        assert "scripts/setup.sh" in (REPO / "scripts" / script).read_text()


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "kangaroo-serve"
    r = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert "--max-num-seqs" in r.stdout
