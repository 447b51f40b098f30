"""Terminal text that fits 100 columns: long lines wrap under their own first word, never mid-word."""

from __future__ import annotations

import textwrap

WIDTH = 100


def wrap(text: str, first: str = "", rest: str | None = None, width: int = WIDTH) -> list[str]:
    """`text` after the prefix `first`, continued under `rest` (default: as far in as the text starts).

    A word longer than the line (a path, a URL) keeps its own line whole rather than being cut.
    """
    hang = " " * len(first) if rest is None else rest
    return textwrap.wrap(
        text,
        width,
        initial_indent=first,
        subsequent_indent=hang,
        break_long_words=False,
        break_on_hyphens=False,
        replace_whitespace=False,
        drop_whitespace=True,
    ) or [first.rstrip()]
