"""The import graph of orchestrator/ and bridge/: no cycles (lazy and type-only imports included), and
nothing below the command line imports it.

Read from the source with `ast`, not by importing: an import inside a function or under
`if TYPE_CHECKING:` is an edge too, because a cycle that only a lazy import hides is still a knot a
reader has to untie (and the next top-level import makes it a real one).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "bridge")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module of ours that `name` (a module or something in one) names, if any."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ours that `module` imports, wherever the import statement stands."""
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(r for a in node.names if (r := _resolve(a.name, known)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:  # `from pkg import mod` names the module, `from mod import x` the module
                target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else _resolve(base, known)
                if target:
                    out.add(target)
    out.discard(module)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(g):
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(g[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def is_cli(module: str) -> bool:
    """The command line: `orchestrator.cli` and its commands, the emulator's own command, `__main__`."""
    last = module.rpartition(".")[2]
    return module.startswith("orchestrator.cli.") or last in ("cli", "__main__")


def test_the_graph_is_read_from_every_kind_of_import() -> None:
    g = graph()
    assert "orchestrator.web.hooks" in g["orchestrator.web.app"]  # inside create_app
    assert "orchestrator.web.state" in g["orchestrator.evaluation"]  # under TYPE_CHECKING
    assert "orchestrator.emulator.calls" in g["orchestrator.emulator"]  # the package's own __init__


def test_cycle_finder_finds_a_knot_through_a_lazy_import() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_nothing_below_the_command_line_imports_it() -> None:
    offenders = {m: sorted(d for d in deps if is_cli(d)) for m, deps in graph().items() if not is_cli(m)}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_only_the_composition_root_builds_the_app() -> None:
    users = sorted(m for m, deps in graph().items() if "orchestrator.web.app" in deps)
    assert users == ["orchestrator.bootstrap"]
