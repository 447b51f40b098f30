"""DTMF digits stored in batches, not one row per frame. Pure: no I/O, the caller passes the clock.

A caller pressing keys sends a `dtmf` frame per key; a hostile stream can send thousands a second, and
each was one event row (one write on the store's single writer, shared by every call). Digits are
gathered per stream and stored as one event at most once per `window_s`, holding at most `max_digits`
(a flood keeps its count, not every digit), and the rest when the stream ends.
"""

from __future__ import annotations

from typing import Any

WINDOW_S = 1.0
MAX_DIGITS = 64


class DtmfBatch:
    """Digits of one stream waiting to be stored."""

    __slots__ = ("count", "digits", "first_at", "max_digits", "tracks", "window_s")

    def __init__(self, window_s: float = WINDOW_S, max_digits: int = MAX_DIGITS) -> None:
        self.window_s, self.max_digits = window_s, max_digits
        self.digits = ""
        self.count = 0  # frames, kept or not
        self.tracks: set[str] = set()
        self.first_at: float | None = None

    def add(self, digit: str, track: str, now: float) -> None:
        if self.first_at is None:
            self.first_at = now
        self.count += 1
        self.tracks.add(track)
        if len(self.digits) < self.max_digits:
            self.digits += digit

    def due(self, now: float) -> bool:
        """True once the oldest waiting digit has waited `window_s`: store `take()` now."""
        return self.first_at is not None and now - self.first_at >= self.window_s

    def take(self) -> dict[str, Any] | None:
        """The waiting digits as one event payload (None when there are none); starts a new batch."""
        if self.first_at is None:
            return None
        payload: dict[str, Any] = {
            "digits": self.digits,
            "count": self.count,
            "track": ",".join(sorted(self.tracks)),
        }
        if self.count > len(self.digits):
            payload["dropped"] = self.count - len(self.digits)
        self.digits, self.count, self.tracks, self.first_at = "", 0, set(), None
        return payload
