"""The emulator's ground truth is computed without the code it judges.

An earlier emulator located "first heard speech" with the product's own onset function, so the two
agreed by construction while a real line disagreed by half a second. The emulator may use the wire
format (`bridge.protocol`) and the line's codec (`bridge.g711`), never the product's meters, analysis,
playout model or session.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

EMULATOR = Path(__file__).resolve().parents[2] / "orchestrator" / "emulator"
JUDGES = (
    "bridge.meters",
    "bridge.analysis",
    "bridge.played",
    "bridge.playout",
    "bridge.session",
    "bridge.cancel",
    "bridge.aec",
    "orchestrator.criteria",
    "orchestrator.thresholds",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_emulator_module_imports_the_products_judges() -> None:
    files = sorted(EMULATOR.glob("*.py"))
    assert len(files) >= 5  # the package is where this test thinks it is
    for path in files:
        bad = sorted(n for n in _imports(path) if n.startswith(JUDGES))
        assert not bad, f"{path.name} imports {bad}"


def test_importing_the_emulator_loads_none_of_them() -> None:
    code = (
        "import sys, orchestrator.emulator, orchestrator.emulator.media, orchestrator.emulator.audio\n"
        f"print(sorted(m for m in sys.modules if m.startswith({JUDGES!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
