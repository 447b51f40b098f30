"""DTMF digits stored in batches, not one row per frame. Pure: no I/O, the caller passes the clock.

A caller pressing keys sends a `dtmf` frame per key; a hostile stream can send thousands a second, and
each was one event row (one write on the store's single writer, shared by every call). Digits are
gathered per stream and stored as one event at most once per `window_s`, holding at most `max_digits`
(a flood keeps its count, not every digit), and the rest when the stream ends.

Each stored payload keeps its digits in the order they arrived (`digits`, a string) and, when the
batch knows the stream's origin (the time `start` was received, the analysis's time 0), when each one
came (`at_ms`, one per kept digit, ms since that origin), so a timeline can place every key press.
"""

from __future__ import annotations

from typing import Any

WINDOW_S = 1.0
MAX_DIGITS = 64


class DtmfBatch:
    """Digits of one stream waiting to be stored."""

    __slots__ = ("at_ms", "count", "digits", "first_at", "max_digits", "origin", "tracks", "window_s")

    def __init__(
        self, window_s: float = WINDOW_S, max_digits: int = MAX_DIGITS, origin: float | None = None
    ) -> None:
        self.window_s, self.max_digits, self.origin = window_s, max_digits, origin
        self.digits = ""
        self.at_ms: list[float] = []
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
            if self.origin is not None:
                self.at_ms.append(round((now - self.origin) * 1000.0, 3))

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
        if self.origin is not None:
            payload["at_ms"] = self.at_ms
        if self.count > len(self.digits):
            payload["dropped"] = self.count - len(self.digits)
        self.digits, self.count, self.tracks, self.first_at, self.at_ms = "", 0, set(), None, []
        return payload
