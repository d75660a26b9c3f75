"""An installed wheel works on its own: it builds the demo model and runs `kangaroo-serve`.

The wheel is built from a copy of the package sources and installed into a fresh virtual
environment outside the repository. That environment reaches the engine and the other
dependencies through a path file pointing at this one's site-packages; path files there are
not processed, so this repository's editable install (and with it server/, finetune/ and
scripts/ of the checkout) stays out of reach.
"""

import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

SOURCES = ("pyproject.toml", "README.md", "server", "finetune")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the kangaroo wheel installed; its folder."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    dist = root / "dist"
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", dist, src],
        check=True,
        cwd=root,
    )
    (wheel,) = dist.glob("kangaroo-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "kangaroo-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", python, "install", "--no-deps", wheel], check=True)
    return venv


def _run(venv: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_installed_package_builds_the_demo_model(installed: Path, tmp_path: Path) -> None:
    # The whole build (tokenizer, base model, skills data, the trainer, the export) from the
    # installed package alone; a few training steps, where the server trains three hundred.
    script = textwrap.dedent(
        f"""
        import importlib.util, json
        from pathlib import Path
        import finetune, server
        from finetune.demo.build import build_demo_model
        for package in (server, finetune):
            assert package.__file__.startswith({str(installed)!r}), package.__file__
        assert importlib.util.find_spec("scripts") is None
        out = Path("model")
        build_demo_model(out, max_steps=2, eval_every=1)
        print(json.dumps(sorted(p.name for p in out.iterdir())))
        """
    )
    done = _run(installed, [str(installed / "bin" / "python"), "-c", script], tmp_path)
    assert done.returncode == 0, done.stderr
    files = done.stdout.strip().splitlines()[-1]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "kangaroo-demo.json"):
        assert name in files


def test_the_installed_command_starts(installed: Path, tmp_path: Path) -> None:
    done = _run(installed, [str(installed / "bin" / "kangaroo-serve"), "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--max-num-seqs" in done.stdout
    assert str(REPO) not in done.stdout + done.stderr


def test_the_wheel_carries_the_playground_and_the_vllm_plugin(installed: Path) -> None:
    site = next((installed / "lib").glob("python3*/site-packages"))
    assert {p.name for p in (site / "server" / "playground").iterdir()} >= {
        "index.html",
        "app.js",
        "style.css",
    }
    (entry_points,) = site.glob("kangaroo-*.dist-info/entry_points.txt")
    plugins = (
        "kangaroo_cpu_lora_fix = server.engine.vllm_engine:install_cpu_lora_fix",
        "kangaroo_cpu_bitmask = server.engine.cpu_bitmask:install",
    )
    assert all(plugin in entry_points.read_text() for plugin in plugins)
