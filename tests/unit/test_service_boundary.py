"""The server's handlers and follow-up work name service operations; none of them touches the store.

Read from the source with `ast`: any `.store` attribute in these modules (a lambda handed to
`AsyncService.run` included) is raw store access that belongs in `orchestrator.service`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = [
    "orchestrator/web/hooks.py",
    "orchestrator/web/media.py",
    "orchestrator/web/app.py",
    "orchestrator/web/effects.py",
    "orchestrator/evaluation.py",
    "orchestrator/reconcile.py",
    "orchestrator/retention.py",
    "orchestrator/web/worker_loop.py",
]


def store_accesses(source: str) -> list[int]:
    return [
        n.lineno for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute) and n.attr == "store"
    ]


def test_the_check_sees_store_access_inside_a_lambda() -> None:
    assert store_accesses("await state.service.run(lambda s: s.store.update_call(cid))\n") == [1]
    assert store_accesses("await state.service.attach_stream(cid, stream_sid=sid)\n") == []


@pytest.mark.parametrize("path", HANDLERS)
def test_no_store_access_outside_the_service(path: str) -> None:
    assert store_accesses((ROOT / path).read_text(encoding="utf-8")) == []
