"""Twilio's outbound buffer on the phone, as a pure model: audio queued and played in order, marks
echoed once the audio before them has played, `clear` dropping what is queued. No I/O, no clock of its
own: the media client calls it once per 20 ms frame with the phone's time.
"""

from __future__ import annotations

from collections import deque

from orchestrator.emulator.audio import FRAME

_SILENCE = b"\xff" * FRAME  # mu-law silence


class PlayoutBuffer:
    """Twilio's outbound buffer (section C): audio played in order, marks echoed once all before them played.

    `play(n, now)` is called once per 20 ms frame, at the frame's start on the phone's clock, and returns
    the frame the phone hears (silence where the queue ran dry) plus the marks whose audio finished *by
    the end of the previous frame* — the caller echoes those now, so a mark is never echoed before its
    audio has really played. Only what had arrived by `now` can play (a line is causal: the timer may
    run late, but audio that came in after the frame began waits for the next one). A mark arriving
    with nothing queued or pending is echoed at once (`push_mark` returns it); `clear()` drops the audio
    and returns every pending mark.
    """

    def __init__(self) -> None:
        # (arrival time, item): bytes = audio, str = a mark's name
        self._queue: deque[tuple[float, bytes | str]] = deque()
        self._finished: list[str] = []  # marks whose audio ended within the last played frame
        self.queued_bytes = 0

    def push_audio(self, payload: bytes, at: float = 0.0) -> None:
        if payload:
            self._queue.append((at, payload))
            self.queued_bytes += len(payload)

    def push_mark(self, name: str, at: float = 0.0) -> list[str]:
        if not self._queue and not self._finished:
            return [name]
        self._queue.append((at, name))
        return []

    def clear(self) -> list[str]:
        marks = self._finished + [m for _, m in self._queue if isinstance(m, str)]
        self._queue.clear()
        self._finished = []
        self.queued_bytes = 0
        return marks

    def play(self, n: int = FRAME, now: float = float("inf")) -> tuple[bytes, list[str]]:
        queue = self._queue
        while queue and isinstance(queue[0][1], str) and queue[0][0] <= now:  # behind audio now played
            self._finished.append(queue.popleft()[1])  # type: ignore[arg-type]
        echo_now, self._finished = self._finished, []
        out = bytearray()
        while queue and queue[0][0] <= now and (len(out) < n or isinstance(queue[0][1], str)):
            at, head = queue[0]
            if isinstance(head, str):
                self._finished.append(head)
                queue.popleft()
                continue
            take = head[: n - len(out)]
            out += take
            self.queued_bytes -= len(take)
            if len(take) == len(head):
                queue.popleft()
            else:
                queue[0] = (at, head[len(take) :])
        return bytes(out) + _SILENCE[: n - len(out)], echo_now
