"""The floor plan holds: no import cycle, every import goes down a layer, nothing imports scripts/.

Every `import` in server/ and finetune/ counts, also those inside functions: an import deferred
to call time is still a dependency, and a cycle through one is still a knot.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("server", "finetune")

_BASE = {"server.contract", "server.errors", "server.settings"}
_ENGINE = _BASE | {"server.engine"}
_STRUCTURED = _ENGINE | {"server.structured"}
_FEATURES = _STRUCTURED | {
    "server.observability",
    "server.adapters",
    "server.traffic",
    "server.batch",
    "server.responses",
}
_OFFLINE = _FEATURES | {"finetune", "server.state", "server.drain", "server.api", "server.app"}
# What each part of the tree may import besides itself (README, "Code map").
ALLOWED: dict[str, set[str]] = {
    "server": set(),
    "server.contract": set(),
    "server.errors": {"server.contract"},
    "server.settings": {"server.contract"},
    "server.engine": _BASE,
    "server.structured": _ENGINE,
    "server.batch": _BASE,
    "server.responses": _BASE | {"server.batch"},
    "server.observability": _ENGINE,
    "server.adapters": _ENGINE | {"server.observability"},
    "server.traffic": _ENGINE | {"server.observability"},
    "finetune": {"server.contract", "server.settings", "server.engine"},
    "server.state": _FEATURES | {"finetune"},
    "server.drain": _FEATURES | {"finetune", "server.state"},
    "server.api": _FEATURES | {"finetune", "server.state"},
    "server.app": _FEATURES | {"finetune", "server.state", "server.drain", "server.api"},
    "server.__main__": _FEATURES | {"finetune", "server.state", "server.drain", "server.app"},
    # The offline batch runner drives the whole app in-process (no HTTP), as __main__ serves
    # it: these four sit on top, beside the entry point; the rest of server.batch stays below.
    "server.batch.in_process": _OFFLINE,
    "server.batch.offline": _OFFLINE,
    "server.batch.on_ray": _OFFLINE,
    "server.batch.__main__": _OFFLINE,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
    }


def _imported(tree: ast.AST, modules: dict[str, Path]) -> Iterator[str]:
    """Names of everything `tree` imports; `from pkg import mod` yields `pkg.mod` when it is one."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            yield node.module
            for alias in node.names:
                if f"{node.module}.{alias.name}" in modules:
                    yield f"{node.module}.{alias.name}"


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = {
            m
            for m in _imported(tree, modules)
            if m.split(".")[0] in (*PACKAGES, "scripts", "tests")
        }
    return graph


def _unit(module: str) -> str:
    if module == "server":  # the package's own __init__: a docstring
        return module
    matches = [u for u in ALLOWED if u != "server" and (module == u or module.startswith(u + "."))]
    assert matches, f"{module} belongs to no part of the floor plan: add it to ALLOWED"
    return max(matches, key=len)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_module_imports_scripts_or_tests() -> None:
    offenders = {
        (module, target)
        for module, targets in _graph().items()
        for target in targets
        if target.split(".")[0] in ("scripts", "tests")
    }
    assert not offenders


def test_there_is_no_import_cycle() -> None:
    assert _cycle(_graph()) is None


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_import_goes_down_the_floor_plan() -> None:
    upward = []
    for module, targets in _graph().items():
        unit = _unit(module)
        for target in targets:
            other = _unit(target)
            if other != unit and not any(
                other == allowed or other.startswith(allowed + ".") for allowed in ALLOWED[unit]
            ):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the floor plan:\n" + "\n".join(sorted(upward))


def test_every_folder_says_what_lives_there() -> None:
    for package in (REPO / name for name in PACKAGES):
        for init in package.rglob("__init__.py"):
            doc = ast.get_docstring(ast.parse(init.read_text()))
            assert doc, f"{init.relative_to(REPO)} has no docstring"
