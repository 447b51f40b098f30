"""Real synthetic speech for meter tests, and whole synthetic calls with known ground truth.

Test helper only. `speak()` runs the `espeak-ng` binary (Debian package `espeak-ng`) once per text and
keeps the result in a module-level cache; tests that need it skip cleanly when the binary is missing.
`synth_call()` builds the `MediaEvidence` a media session would record for a call whose every timing is
known: the model's speech sent in 80 ms bursts with a playout clock, the caller's speech on the inbound
media clock, an echo path (delay, loss) from what was played, noise, μ-law, lost frames, jitter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from bridge.analysis import MediaEvidence
from bridge.g711 import ulaw_decode, ulaw_encode
from bridge.meters.levels import speech_offset, speech_onset
from bridge.played import played_track
from bridge.speech import have_espeak, synthesize

__all__ = [
    "CALLER_LINES",
    "MODEL_LINES",
    "CallTruth",
    "conversation",
    "have_espeak",
    "speak",
    "synth_call",
]

_CACHE: dict[tuple[str, int], np.ndarray] = {}


def speak(text: str, rate: int = 8000) -> np.ndarray:
    """int16 mono speech for `text` at `rate` Hz (read-only array, cached per text and rate)."""
    key = (text, rate)
    if key not in _CACHE:
        if not have_espeak():
            pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
        out = synthesize(text, rate, voice=None, words_per_minute=175)
        out.setflags(write=False)
        _CACHE[key] = out
    return _CACHE[key]


# --- Synthetic calls with known ground truth --------------------------------------------------------

MODEL_LINES = (
    "Hello, thanks for calling. How can I help you today?",
    "Sure, I can help you with that booking.",
    "Your table for two is confirmed for seven thirty tomorrow evening.",
    "Is there anything else you would like me to do?",
)
CALLER_LINES = (
    "Hi, I would like to book a table please.",
    "For two people, tomorrow evening around seven thirty.",
    "No, that is all, thank you very much.",
)


def conversation(
    duration_s: float, *, double_talk: bool = False, seed: int = 0, rate: int = 8000
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(model, caller) line schedules for `synth_call`: the model talks most of the time (0.4 s pauses);
    with `double_talk` the caller talks over it about half of the time, else the caller is silent."""
    model: list[tuple[str, float]] = []
    t = 0.5
    while True:
        text = MODEL_LINES[(len(model) + seed) % len(MODEL_LINES)]
        end = t + len(speak(text, rate)) / rate
        if end > duration_s - 0.5:
            break
        model.append((text, t))
        t = end + 0.4
    caller: list[tuple[str, float]] = []
    t = 1.3
    while double_talk:
        text = CALLER_LINES[(len(caller) + seed) % len(CALLER_LINES)]
        end = t + len(speak(text, rate)) / rate
        if end > duration_s - 0.5:
            break
        caller.append((text, t))
        t = end + 2.5
    return model, caller


@dataclass(frozen=True)
class CallTruth:
    """What the synthetic call really did (local clock, origin = `start` received)."""

    first_audio_ms: float | None
    first_audio_heard_ms: float | None
    latencies_ms: list[float]  # per caller line that the model answered
    echo_delay_ms: float | None
    echo_loss_db: float | None
    lost_frames: int
    media_offset_s: float
    played: np.ndarray = field(repr=False)  # what the phone heard, local clock


def synth_call(
    *,
    duration_s: float = 20.0,
    model: list[tuple[str, float]] | None = None,  # (text, time in the model's output stream, s)
    caller: list[tuple[str, float]] | None = None,  # (text, media time, s)
    echo: tuple[float, float] | None = None,  # (delay ms, loss dB)
    noise_dbfs: float | None = None,
    lost: list[int] | None = None,  # inbound frame indices (20 ms) that never arrive
    jitter_ms: float = 0.0,  # inbound transit jitter, uniform [0, jitter_ms]
    transit_s: float = 0.045,  # inbound fixed transit: media time t is local t + transit; its frame leaves
    # the phone once its last sample exists, so the frame with media time t arrives at t + 20 ms + transit
    net_s: float = 0.12,  # outbound: send → playout at the phone
    first_send_s: float = 0.35,
    ulaw: bool = True,
    mark_every: int = 4,
    seed: int = 0,
    rate: int = 8000,
) -> tuple[MediaEvidence, CallTruth]:
    """A call as a media session would record it, built from espeak-ng speech and a known channel."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * rate)
    # Model output stream: sent in 80 ms frames (4 chunks at once), as a Moshi backend does.
    out = np.zeros(n, dtype=np.int16)
    onsets: list[int] = []
    for text, t in model or []:
        x, i = speak(text, rate), round(t * rate)
        out[i : i + len(x)] = x[: n - i]
        onsets.append(i + (speech_onset(x, rate) or 0))
    m = n // 160
    send = first_send_s + 0.08 * (np.arange(m) // 4)
    play = np.empty(m)
    for k in range(m):
        play[k] = max(send[k] + net_s, play[k - 1] + 0.02 if k else 0.0)
    sends = np.column_stack([send, play, np.zeros(m)])
    # `play` is where the product's playout clock puts each chunk: at the least-late echo of the marks
    # after it, which (no return delay here) come back as the audio before them ends.
    marks = [
        (f"m{k}", float(send[k]), float(play[k] + 0.02), False) for k in range(mark_every - 1, m, mark_every)
    ]
    played = played_track(out, sends, rate)

    # Inbound: caller + echo of what was played + noise, on the media clock, then μ-law.
    offset = transit_s  # media time -> local time (a causal line: sending waits for the frame's end)
    off = round(offset * rate)
    inbound = np.zeros(n)
    ends: list[float] = []
    for text, t in caller or []:
        x, i = speak(text, rate), round(t * rate)
        inbound[i : i + len(x)] += x[: n - i]
        ends.append((i + (speech_offset(x, rate) or len(x))) / rate + offset)
    if echo is not None:
        d = round(echo[0] * rate / 1000)
        src = np.zeros(n + off + d)
        src[: len(played)] = played[: len(src)]
        # Played at local t, heard back at local t + D = media time t + D − offset.
        shift = d - off
        seg = src[max(0, -shift) : max(0, -shift) + n - max(0, shift)]
        inbound[max(0, shift) : max(0, shift) + len(seg)] += seg * 10 ** (-echo[1] / 20)
    if noise_dbfs is not None:
        inbound += rng.normal(0.0, 32768 * 10 ** (noise_dbfs / 20), n)
    pcm = np.clip(np.rint(inbound), -32768, 32767).astype(np.int16)
    if ulaw:
        pcm = ulaw_decode(ulaw_encode(pcm))
    frames = np.arange(n // 160)
    keep = np.ones(len(frames), dtype=bool)
    keep[list(lost or [])] = False
    pcm = pcm[: len(frames) * 160].copy()
    pcm.reshape(-1, 160)[~keep] = 0
    jit = rng.uniform(0.0, jitter_ms / 1000, len(frames))
    jit[np.flatnonzero(keep)[0]] = 0.0  # the least-delayed frame pins the clock mapping to `offset`
    arrivals = np.column_stack([offset + 0.02 + frames * 0.02 + jit, frames * 20.0])[keep]

    # Truth.
    first_ms = heard_ms = None
    if onsets:
        o = min(onsets)
        k = o // 160
        first_ms, heard_ms = send[k] * 1000, (play[k] + (o - 160 * k) / rate) * 1000
    model_onsets = np.sort([play[o // 160] + (o % 160) / rate for o in onsets])
    latencies = [
        float((model_onsets[model_onsets > e][0] - e) * 1000) for e in ends if (model_onsets > e).any()
    ]
    ev = MediaEvidence(
        rate=rate,
        inbound_pcm=pcm,
        inbound_arrivals=arrivals,
        sent_pcm=out[: m * 160],
        sends=sends,
        marks=marks,
        underruns=0,
        frames_to_model=len(frames) // 4,
        step_ms=[],
        late_frames=0,
    )
    truth = CallTruth(
        first_ms,
        heard_ms,
        latencies,
        echo[0] if echo else None,
        echo[1] if echo else None,
        int((~keep).sum()),
        offset,
        played,
    )
    return ev, truth
