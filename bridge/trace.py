"""A call's media stream frame by frame, kept beside its recording: what `orchestrator replay` feeds again.

One compressed ``.npz`` per call (``c_<id>.trace.npz`` next to ``c_<id>.wav``), written when the session
finishes and read back with every array checked. It holds:

- inbound: every media frame that arrived, as (arrival s since `start`, `media.timestamp` ms, payload
  bytes), with the μ-law codes on the media clock (index = timestamp ms x 8, as the session keeps them;
  lost frames are 0xFF, μ-law silence). A frame's payload is read back from there, so a frame that came
  late for a slot already filled (out of order, a duplicate) is replayed with what the slot holds;
- outbound: the μ-law we sent in order, and per 160-byte chunk (send s, estimated playout start s,
  flushed 0/1); the marks echoed (name, sent s, echoed s, not played: flushed or echoed by a clear);
  the times we sent `clear`;
- when the stream ended (a replay hangs up at the same point of the recording).

It holds the caller's voice, as the recording does: the server keeps it only with MEDIA_TRACE=on (the
local rig of `demo`, `scenario` and the tests turns it on). Pure but for `write_trace`/`read_trace`.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["TRACE_SUFFIX", "MediaTrace", "TraceError", "read_trace", "trace_path", "write_trace"]

TRACE_SUFFIX = ".trace.npz"
VERSION = 1
RATE = 8000
MAX_FRAME_BYTES = 64 * 1024
MAX_TRACE_BYTES = 256 * 1024 * 1024  # a 4-hour call is ~230 MB of codes both ways: refuse anything larger


class TraceError(ValueError):
    """A trace file that is missing, not ours, or inconsistent; the message says which and why."""


def trace_path(recording: Path) -> Path:
    """``c_<id>.wav`` -> ``c_<id>.trace.npz``."""
    return recording.with_name(recording.stem + TRACE_SUFFIX)


@dataclass(frozen=True)
class MediaTrace:
    inbound_codes: npt.NDArray[np.uint8]
    inbound_arrivals: npt.NDArray[np.float64]  # (n, 2): arrival s since start, timestamp ms
    inbound_sizes: npt.NDArray[np.int32]  # (n,): payload bytes of each arrival
    sent_codes: npt.NDArray[np.uint8]
    sends: npt.NDArray[np.float64]  # (m, 3): send s, playout start s, flushed
    mark_names: tuple[str, ...]
    marks: npt.NDArray[np.float64]  # (k, 3): sent s, echoed s, not played (flushed or cleared)
    clears: npt.NDArray[np.float64]  # (c,): when we sent `clear`, s since start
    ended_s: float = float("nan")  # when the stream ended (stop, hang-up, close), s since start

    def frames(self) -> Iterator[tuple[float, int, bytes]]:
        """Every inbound frame as it arrived: (arrival s since start, timestamp ms, payload)."""
        codes = self.inbound_codes.tobytes()
        for (rel, ts), size in zip(self.inbound_arrivals.tolist(), self.inbound_sizes.tolist(), strict=True):
            at = int(ts) * RATE // 1000
            payload = codes[at : at + int(size)]
            yield float(rel), int(ts), payload + b"\xff" * (int(size) - len(payload))

    def check(self) -> None:
        """Raise TraceError unless the arrays fit together (shapes, finite times, bounded frames)."""
        n = self.inbound_arrivals.shape[0]
        if self.inbound_arrivals.shape != (n, 2) or self.inbound_sizes.shape != (n,):
            raise TraceError(
                f"inbound arrivals {self.inbound_arrivals.shape} and sizes {self.inbound_sizes.shape} differ"
            )
        if n and (self.inbound_sizes.min() < 0 or self.inbound_sizes.max() > MAX_FRAME_BYTES):
            raise TraceError("an inbound frame size is out of bounds")
        m = self.sends.shape[0]
        if self.sends.shape != (m, 3) or self.marks.shape != (len(self.mark_names), 3):
            raise TraceError("outbound sends or marks have the wrong shape")
        for name, a in (
            ("arrival times", self.inbound_arrivals),
            ("send times", self.sends),
            ("clears", self.clears),
        ):
            if a.size and not np.isfinite(a).all():
                raise TraceError(f"{name} are not all finite")
        if n and (np.diff(self.inbound_arrivals[:, 0]) < 0).any():
            raise TraceError("inbound arrival times go backwards")


def write_trace(path: Path, trace: MediaTrace) -> None:
    """Write atomically (a temp file renamed): a crash leaves the old file or none, never half of one."""
    trace.check()
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        version=np.array([VERSION], np.int32),
        inbound_codes=trace.inbound_codes,
        inbound_arrivals=trace.inbound_arrivals,
        inbound_sizes=trace.inbound_sizes,
        sent_codes=trace.sent_codes,
        sends=trace.sends,
        mark_names=np.array(trace.mark_names, dtype=np.str_),
        marks=trace.marks,
        clears=trace.clears,
        ended_s=np.array([trace.ended_s], np.float64),
    )
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def read_trace(path: Path) -> MediaTrace:
    """The trace at `path`, checked; TraceError with the reason otherwise."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise TraceError(f"no media trace at {path} ({exc.strerror or exc})") from None
    if size > MAX_TRACE_BYTES:
        raise TraceError(f"{path} is {size} bytes: more than a media trace can be")
    try:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["version"][0])
            if version != VERSION:
                raise TraceError(f"{path} is trace version {version}; this code reads version {VERSION}")
            trace = MediaTrace(
                inbound_codes=np.asarray(z["inbound_codes"], np.uint8),
                inbound_arrivals=np.asarray(z["inbound_arrivals"], np.float64),
                inbound_sizes=np.asarray(z["inbound_sizes"], np.int32),
                sent_codes=np.asarray(z["sent_codes"], np.uint8),
                sends=np.asarray(z["sends"], np.float64),
                mark_names=tuple(str(s) for s in z["mark_names"].tolist()),
                marks=np.asarray(z["marks"], np.float64),
                clears=np.asarray(z["clears"], np.float64),
                ended_s=float(z["ended_s"][0]),
            )
    except TraceError:
        raise
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile, EOFError) as exc:
        raise TraceError(f"{path} is not a media trace ({type(exc).__name__}: {exc})") from None
    trace.check()
    return trace
