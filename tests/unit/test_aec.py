"""The echo canceller (bridge/aec.py) against truth made from the source signals.

Each call is built from the emulator's own pieces (`EchoPath`, `room_impulse_response`, `NoiseSource`)
and espeak-ng speech: the far end (what the phone played) and the caller are rendered apart, the echo
component and the clean caller are known, the line quantises the sum to μ-law. Truth never reads the
canceller's estimates: ERLE = echo power / power of (output - caller - noise) over single-talk
windows; caller distortion = level change and SDR of the output against the clean caller where the
caller talks (the residual echo and μ-law count against the SDR).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest

from bridge.aec import EchoCanceller
from bridge.g711 import ulaw_decode, ulaw_encode
from bridge.speech import have_espeak, synthesize
from orchestrator.emulator.audio import EchoPath, NoiseSource, room_impulse_response

RATE = 8000
BLOCK = 640
WIN = 4000  # 0.5 s truth windows
MODEL = (
    "Hello, thanks for calling. How can I help you today?",
    "Sure, I can help you with that booking.",
    "Your table for two is confirmed for seven thirty tomorrow evening.",
    "Is there anything else you would like me to do?",
)
CALLER = (
    "Hi, I would like to book a table please.",
    "For two people, tomorrow evening around seven thirty.",
    "No, that is all, thank you very much.",
)


@functools.cache
def _speech(text: str, voice: str | None) -> np.ndarray:
    if have_espeak():
        return synthesize(text, RATE, voice=voice, words_per_minute=175).astype(np.float64)
    # speech-like noise: 3 syllables/s of pink-ish bursts
    rng = np.random.default_rng(len(text))
    n = int(len(text) * 0.06 * RATE)
    env = np.maximum(np.sin(np.arange(n) * 2 * np.pi * 3 / RATE), 0) ** 2
    return np.convolve(rng.standard_normal(n), np.ones(4) / 4, "same") * env * 6000


def _track(lines: tuple[str, ...], n: int, start_s: float, gap_s: float, voice: str | None) -> np.ndarray:
    out, t, i = np.zeros(n), round(start_s * RATE), 0
    while True:
        x = _speech(lines[i % len(lines)], voice)
        if t + len(x) > n:
            return out
        out[t : t + len(x)] = x
        t, i = t + len(x) + round(gap_s * RATE), i + 1


@dataclass
class Call:
    mic: np.ndarray  # what the canceller gets (μ-law decoded)
    ref: np.ndarray  # what played, placed with the playout error and the canceller's lead
    echo: np.ndarray
    caller: np.ndarray
    noise: np.ndarray


def make_call(
    duration_s: float = 10.0,
    *,
    delay_ms: float | None = 100.0,
    loss_db: float = 10.0,
    rt60_s: float | None = None,
    double_talk: bool = False,
    noise_dbfs: float | None = None,
    placement_error_ms: float = 0.0,
    jump: tuple[float, float] | None = None,  # (at s, new delay ms)
    lead_ms: float = 40.0,
    model_gap_s: float = 0.4,  # the model's pause between sentences (2-3 s: it listens, as in a conversation)
) -> Call:
    n = int(duration_s * RATE) // BLOCK * BLOCK
    far = _track(MODEL, n, 0.3, model_gap_s, None)
    caller = _track(CALLER, n, 2.5, 2.0, "en-us+f3") if double_talk else np.zeros(n)
    echo = np.zeros(n)
    if delay_ms is not None:
        rir = room_impulse_response(rt60_s, 1.0, seed=1)[0] if rt60_s else None
        paths = [(0, EchoPath(delay_ms, loss_db, rir))]
        if jump:
            paths.append((round(jump[0] * RATE) // 160 * 160, EchoPath(jump[1], loss_db, rir)))
        cur = paths[0][1]
        for f in range(0, n, 160):
            for at, path in paths:
                path.feed(far[f : f + 160])
                cur = path if at == f else cur
            echo[f : f + 160] = cur.take(160)
    noise: np.ndarray = np.zeros(n)
    if noise_dbfs is not None:
        src = NoiseSource(noise_dbfs, seed=2)
        noise = np.concatenate([src.take(160) for _ in range(n // 160)]).astype(np.float64)
    line = np.clip(np.rint(echo + caller + noise), -32768, 32767).astype(np.int16)
    mic = ulaw_decode(ulaw_encode(line)).astype(np.float64)
    shift = round((lead_ms + placement_error_ms) * RATE / 1000)  # ref[i] = far[i + shift]
    ref = np.zeros(n)
    ref[: n - shift] = far[shift:] if shift >= 0 else 0
    if shift < 0:
        ref[-shift:] = far[: n + shift]
    return Call(mic, ref, echo, caller, noise)


def cancel(call: Call, aec: EchoCanceller | None = None) -> np.ndarray:
    aec = aec or EchoCanceller()
    mic, ref = call.mic.astype(np.int16), np.clip(np.rint(call.ref), -32768, 32767).astype(np.int16)
    return np.concatenate(
        [aec.process(mic[i : i + BLOCK], ref[i : i + BLOCK]) for i in range(0, len(mic), BLOCK)]
    )


def erle_windows(call: Call, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(window start in s, true ERLE dB) for every 0.5 s window with echo and no caller speech."""
    resid = out - call.caller - call.noise
    starts, vals = [], []
    for i in range(0, len(out) - WIN + 1, WIN):
        pe = float(np.sum(call.echo[i : i + WIN] ** 2))
        pc = float(np.sum(call.caller[i : i + WIN] ** 2))
        if pe > WIN * (32768 * 10 ** (-55 / 20)) ** 2 and pc < 1e-4 * pe:
            starts.append(i / RATE)
            vals.append(10 * np.log10(pe / (float(np.sum(resid[i : i + WIN] ** 2)) + 1e-9)))
    return np.array(starts), np.array(vals)


def caller_distortion(call: Call, out: np.ndarray, after_s: float = 0.0) -> tuple[float, float]:
    """(level change dB, SDR dB) of the output against the clean caller where the caller talks."""
    a = round(after_s * RATE)
    c, o = call.caller[a:], out[a:] - call.noise[a:]
    talk = np.abs(np.convolve(c, np.ones(160) / 160, "same")) > 0  # any caller energy nearby
    env = np.convolve(c * c, np.ones(WIN // 4), "same") > (WIN // 4) * (32768 * 10 ** (-40 / 20)) ** 2
    m = talk & env
    pc, po = float(np.sum(c[m] ** 2)), float(np.sum(o[m] ** 2))
    return 10 * np.log10(po / pc), 10 * np.log10(pc / float(np.sum((o[m] - c[m]) ** 2)))


def converge_time(
    starts: np.ndarray, vals: np.ndarray, target_db: float, after_s: float = 0.0
) -> float | None:
    """The first window from which on (after `after_s`) every window reaches `target_db`; time since after_s."""
    sel = starts >= after_s
    s, v = starts[sel], vals[sel]
    for j in range(len(v)):
        if (v[j:] >= target_db).all():
            return float(s[j] + WIN / RATE - after_s)
    return None


# --- Tests ------------------------------------------------------------------------------------------


def test_silence_in_silence_out_and_block_shape() -> None:
    aec = EchoCanceller()
    z = np.zeros(BLOCK, np.int16)
    assert np.array_equal(aec.process(z, z), np.zeros(BLOCK, np.float32))
    with pytest.raises(ValueError, match="640"):
        aec.process(np.zeros(160), np.zeros(160))


def test_clean_call_passes_the_caller_through_unchanged() -> None:
    call = make_call(10.0, delay_ms=None, double_talk=True, noise_dbfs=-50.0)
    out = cancel(call)
    level, _ = caller_distortion(call, out)
    # against what the canceller got (μ-law alone costs the caller ~37 dB SDR, before any canceller)
    sdr_vs_input = 10 * np.log10(np.sum(call.mic**2) / (np.sum((out - call.mic) ** 2) + 1e-9))
    assert abs(level) <= 0.1 and sdr_vs_input >= 40.0, (level, sdr_vs_input)


@pytest.mark.parametrize(("delay", "loss", "err"), [(100, 10, 0.0), (300, 20, -20.0), (40, 6, 20.0)])
def test_pure_echo_erle(delay: float, loss: float, err: float) -> None:
    call = make_call(10.0, delay_ms=delay, loss_db=loss, placement_error_ms=err)
    aec = EchoCanceller()
    starts, vals = erle_windows(call, cancel(call, aec))
    late = vals[starts >= 5.0]
    assert late.size >= 3 and np.median(late) >= 28.0, (starts, vals)
    t25 = converge_time(starts, vals, 25.0)  # the least-squares start: from the block the lag is found
    assert t25 is not None and t25 <= 2.0, (starts, vals)
    # the bulk delay it found: the path's delay plus the reference lead and the placement error
    assert aec.stats.delay_ms is not None and abs(aec.stats.delay_ms - (delay + 40.0 + err)) <= 1.0
    # settled: one filter adapts and gives the output for most of the call (half the products)
    assert aec.stats.one_filter_blocks >= aec.stats.single_talk_blocks // 2, aec.stats


def test_room_echo_erle() -> None:
    call = make_call(10.0, delay_ms=60.0, loss_db=10.0, rt60_s=0.4)
    starts, vals = erle_windows(call, cancel(call))
    late = vals[starts >= 5.0]
    assert late.size >= 3 and np.median(late) >= 18.0, (starts, vals)


def test_double_talk_keeps_the_caller() -> None:
    call = make_call(12.0, delay_ms=120.0, loss_db=10.0, double_talk=True)
    aec = EchoCanceller()
    out = cancel(call, aec)
    # the caller starts at 2.5 s, on a canceller settled on one filter: the first word must not reach
    # the output through that filter's update (its kept state gives the output, two filters again)
    assert aec.stats.one_filter_blocks > 0 and aec.stats.double_talk_blocks > 0, aec.stats
    level, sdr = caller_distortion(call, out, after_s=2.0)
    starts, vals = erle_windows(call, out)
    assert abs(level) <= 1.0, level
    assert sdr >= 30.0, sdr  # the residual echo and μ-law (~37 dB alone) count against it
    assert np.median(vals[starts >= 5.0]) >= 28.0, (starts, vals)


def test_reconverges_after_a_delay_jump() -> None:
    call = make_call(16.0, delay_ms=100.0, loss_db=10.0, jump=(7.0, 250.0))
    starts, vals = erle_windows(call, cancel(call))
    after = vals[starts >= 11.0]
    assert after.size >= 2 and np.median(after) >= 30.0, (starts, vals)
    t25 = converge_time(starts, vals, 25.0, after_s=7.0)
    assert t25 is not None and t25 <= 2.0, (starts, vals)


def test_while_nothing_plays_it_does_no_arithmetic_and_gives_what_the_filter_would() -> None:
    """The model listens for 2.5 s between sentences: once the adapted window holds only silence the
    step is skipped. Against the same call with a reference that is never exactly silent (a -300 dB
    dither), which takes the full path every step: the same output."""
    call = make_call(14.0, delay_ms=120.0, loss_db=10.0, double_talk=True, model_gap_s=2.5)
    skipping = EchoCanceller()
    out = cancel(call, skipping)
    dither = np.where(call.ref == 0, 1e-15, 0.0)
    full = EchoCanceller()
    mic = call.mic.astype(np.int16)
    ref = np.clip(np.rint(call.ref), -32768, 32767).astype(np.float64) + dither
    out_full = np.concatenate(
        [full.process(mic[i : i + BLOCK], ref[i : i + BLOCK]) for i in range(0, len(mic), BLOCK)]
    )
    assert skipping.stats.idle_blocks >= 40 and full.stats.idle_blocks == 0
    assert np.max(np.abs(out - out_full)) <= 1e-2  # int16 units: float rounding only
    starts, vals = erle_windows(call, out)
    assert np.median(vals[starts >= 5.0]) >= 25.0, (starts, vals)
