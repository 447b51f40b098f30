"""Resamplers for the call path, measured side by side: ours, soxr's streaming presets, audioop.ratecv.

Prints, per resampler and direction, in 20 ms chunks as on a call:
- delay: audio fed but not yet emitted after each call (withheld) plus the content offset found by
  cross-correlating a chirp with its ideal (group delay); mean / max over the steady state, in ms;
- the share of 20 ms calls that return nothing;
- passband ripple over 300-3400 Hz (tones, gain from a 1 s projection);
- 24k->8k alias rejection: what a tone at f leaves in the 8 kHz output, dB re a 1 kHz tone;
- 8k->24k images: power at 4.6-12 kHz after a tone, dB re the total;
- CPU µs per 20 ms chunk;
then the CPU per call-second of the whole inbound + outbound audio path (decode, 8k->24k, re-chunk,
24k->8k, encode) for our pipelines vs the audioop way (ulaw2lin + ratecv both ways + lin2ulaw), and vs
G.711 tables + soxr HQ streams, with ratios measured in this same run.

Usage: python benchmarks/resampler.py [--quick]   (run from the repository root)
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soxr
from scipy import optimize, signal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.framing import InboundPipeline, OutboundPipeline
from bridge.g711 import ulaw_decode, ulaw_encode
from bridge.resample import NUM_TAPS, StreamResampler

CHUNK = {8000: 160, 24000: 480}
DIRECTIONS = [(8000, 24000), (24000, 8000)]
SOXR_PRESETS = ["QQ", "LQ", "MQ", "HQ", "VHQ"]
ALIAS_TONES = [4200, 4500, 4600, 5000, 7000, 9000, 11000, 11900]
IMAGE_TONES = [1000, 3000, 3400]


def load_audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")  # stdlib <= 3.12, audioop-lts on 3.13+
        except ImportError:
            return None


AUDIOOP = load_audioop()


# ---- one streaming interface over the three kinds ------------------------------------------------------


class Stream:
    """process(float chunk) -> float output so far; flush() -> whatever was withheld."""

    def __init__(self, kind: str, fin: int, fout: int) -> None:
        self.kind, self.fin, self.fout = kind, fin, fout
        if kind == "ours":
            self._r: Any = StreamResampler(fin, fout)
        elif kind == "ratecv":
            self._state: Any = None
        else:
            self._r = soxr.ResampleStream(fin, fout, 1, dtype="float32", quality=kind)

    def process(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "ours":
            return self._r.process(x)
        if self.kind == "ratecv":
            assert AUDIOOP is not None
            pcm = np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16).tobytes()
            out, self._state = AUDIOOP.ratecv(pcm, 2, 1, self.fin, self.fout, self._state)
            return np.frombuffer(out, np.int16).astype(np.float32) / 32768
        return self._r.resample_chunk(x)

    def flush(self) -> np.ndarray:
        if self.kind in ("ours", "ratecv"):
            return np.zeros(0, np.float32)
        return self._r.resample_chunk(np.zeros(0, np.float32), last=True)


def run_stream(kind: str, fin: int, fout: int, x: np.ndarray) -> tuple[np.ndarray, list[float], int]:
    """Feed x in 20 ms chunks: (whole output incl. flush, withheld ms after each call, empty calls)."""
    s, outs, withheld, empty, fed, emitted = Stream(kind, fin, fout), [], [], 0, 0, 0
    step = CHUNK[fin]
    for i in range(0, len(x), step):
        y = s.process(x[i : i + step])
        fed += len(x[i : i + step])
        emitted += len(y)
        empty += len(y) == 0
        withheld.append(1000.0 * (fed / fin - emitted / fout))
        outs.append(y)
    outs.append(s.flush())
    return np.concatenate(outs).astype(np.float64), withheld, empty


# ---- measurements --------------------------------------------------------------------------------------


def sweep(t: np.ndarray, seconds: float) -> np.ndarray:
    """A Hann-windowed 300 -> 3400 Hz chirp as a function of continuous time, so it can be shifted."""
    inside = (t >= 0) & (t <= seconds)
    tc = np.clip(t, 0, seconds)
    return inside * (0.5 - 0.5 * np.cos(2 * np.pi * tc / seconds)) * signal.chirp(tc, 300, seconds, 3400)


def offset_ms(y: np.ndarray, rate: int, seconds: float) -> float:
    """Content offset of y against the ideal sweep: the correlation peak, refined by shifting the
    analytic sweep (no interpolation bias)."""
    t = np.arange(len(y)) / rate
    c = signal.correlate(y, sweep(t, seconds), mode="full", method="fft")
    k = (int(np.argmax(c)) - (len(y) - 1)) / rate
    res = optimize.minimize_scalar(
        lambda d: -float(np.dot(y, sweep(t - d, seconds))),
        bounds=(k - 1.5 / rate, k + 1.5 / rate),
        method="bounded",
        options={"xatol": 1e-8},
    )
    return 1000.0 * float(res.x)


def delay(kind: str, fin: int, fout: int, seconds: float) -> tuple[float, float, float]:
    x = 0.5 * sweep(np.arange(round(fin * seconds)) / fin, seconds)
    y, withheld, empty = run_stream(kind, fin, fout, x.astype(np.float32))
    off = offset_ms(y, fout, seconds)
    steady = np.array(withheld[len(withheld) // 4 :]) + off
    return float(steady.mean()), float(steady.max()), 100.0 * empty / len(withheld)


def tone_out(kind: str, fin: int, fout: int, f: float) -> np.ndarray:
    """1 s of steady output (whole number of cycles of any integer-Hz tone) for a 0.5-amplitude tone."""
    x = (0.5 * np.sin(2 * np.pi * f * np.arange(round(1.5 * fin)) / fin)).astype(np.float32)
    y, _, _ = run_stream(kind, fin, fout, x)
    return y[fout // 4 : fout // 4 + fout]


def gain_db(y: np.ndarray, f: float, rate: int) -> float:
    amp = 2 * abs(np.sum(y * np.exp(-2j * np.pi * f * np.arange(len(y)) / rate))) / len(y)
    return float(20 * np.log10(amp / 0.5))


def ripple_db(kind: str, fin: int, fout: int, step_hz: int) -> float:
    g = [gain_db(tone_out(kind, fin, fout, f), f, fout) for f in [*range(300, 3400, step_hz), 3400]]
    return max(g) - min(g)


def alias_db(kind: str, freqs: list[int]) -> list[float]:
    def power(f: float) -> float:
        return float(np.mean(tone_out(kind, 24000, 8000, f) ** 2))

    ref = power(1000)
    return [10 * np.log10(max(power(f), 1e-30) / ref) for f in freqs]


def image_db(kind: str, f: float) -> float:
    spec = np.abs(np.fft.rfft(tone_out(kind, 8000, 24000, f))) ** 2
    return float(10 * np.log10(max(spec[4600:12001].sum(), 1e-30) / spec.sum()))


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Seconds for one fn() call, the best of `repeats` (the machine is shared; the minimum is the cost)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_us_per_chunk(kind: str, fin: int, fout: int, n_chunks: int, repeats: int) -> float:
    x = (0.3 * np.random.default_rng(0).uniform(-1, 1, CHUNK[fin] * n_chunks)).astype(np.float32)
    step = CHUNK[fin]
    if kind == "ratecv":
        assert AUDIOOP is not None
        chunks_b = [(x[i : i + step] * 32767).astype(np.int16).tobytes() for i in range(0, len(x), step)]

        def run() -> None:
            state = None
            for c in chunks_b:
                _, state = AUDIOOP.ratecv(c, 2, 1, fin, fout, state)

        return 1e6 * best_of(run, repeats) / n_chunks
    chunks = [x[i : i + step] for i in range(0, len(x), step)]

    def run_f() -> None:
        s = Stream(kind, fin, fout)
        for c in chunks:
            s.process(c)

    return 1e6 * best_of(run_f, repeats) / n_chunks


# ---- the whole audio path per call-second --------------------------------------------------------------


def call_audio(seconds: float) -> list[bytes]:
    t = np.arange(round(8000 * seconds)) / 8000
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    codes = ulaw_encode(np.rint(x * 32767).astype(np.int16))
    return [codes[i : i + 160] for i in range(0, len(codes), 160)]


def path_ours(payloads: list[bytes]) -> Callable[[], object]:
    def run() -> None:
        ib, ob = InboundPipeline(), OutboundPipeline()
        for p in payloads:
            for frame in ib.push(p):  # the echo: the model's frame is the caller's frame
                ob.push(frame)

    return run


def path_audioop(payloads: list[bytes]) -> Callable[[], object]:
    # Favourable to audioop: int16 bytes throughout, no float conversion or 80 ms re-chunking, which a
    # float32 model would need on top.
    assert AUDIOOP is not None
    ao = AUDIOOP

    def run() -> None:
        up_state = down_state = None
        for p in payloads:
            up, up_state = ao.ratecv(ao.ulaw2lin(p, 2), 2, 1, 8000, 24000, up_state)
            down, down_state = ao.ratecv(up, 2, 1, 24000, 8000, down_state)
            ao.lin2ulaw(down, 2)

    return run


def path_soxr_hq(payloads: list[bytes]) -> Callable[[], object]:
    def run() -> None:
        up = soxr.ResampleStream(8000, 24000, 1, dtype="int16", quality="HQ")
        down = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality="HQ")
        for p in payloads:
            ulaw_encode(down.resample_chunk(up.resample_chunk(ulaw_decode(p))))

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (CI): coarse tone grid, few repeats")
    args = ap.parse_args()
    q = args.quick
    kinds = ["ours", *SOXR_PRESETS] + (["ratecv"] if AUDIOOP else [])
    if not AUDIOOP:
        print("audioop not importable (Python 3.13+ without audioop-lts): its rows are skipped")
    step_hz, n_chunks, repeats = (500, 50, 3) if q else (100, 1000, 7)
    label = {"ours": f"ours ({NUM_TAPS}-tap FIR)", "ratecv": "audioop.ratecv"}

    print(f"Resamplers at 20 ms chunks{' (--quick)' if q else ''}; delay = withheld + content offset, ms\n")
    print(f"{'resampler':22} {'8k->24k mean/max':>17} {'24k->8k mean/max':>17} {'empty calls':>12} "
          f"{'ripple up/down dB':>18} {'CPU us/20ms up/down':>20}")  # fmt: skip
    for k in kinds:
        d_up, d_dn = delay(k, 8000, 24000, 1.0 if q else 3.0), delay(k, 24000, 8000, 1.0 if q else 3.0)
        rip = [ripple_db(k, fi, fo, step_hz) for fi, fo in DIRECTIONS]
        cpu = [cpu_us_per_chunk(k, fi, fo, n_chunks, repeats) for fi, fo in DIRECTIONS]
        print(f"{label.get(k, 'soxr ' + k):22} {d_up[0]:8.2f} /{d_up[1]:7.2f} {d_dn[0]:8.2f} /{d_dn[1]:7.2f} "
              f"{max(d_up[2], d_dn[2]):11.0f}% {rip[0]:8.4f} /{rip[1]:8.4f} {cpu[0]:9.1f} /{cpu[1]:8.1f}")  # fmt: skip

    print("\n24k->8k: what a tone leaves in the call, dB re a 1 kHz tone (aliases fold to 8000 - f, ...)")
    grid = list(range(4600, 11901, 100 if not q else 500))
    print(f"{'resampler':22} " + " ".join(f"{f:>7}" for f in ALIAS_TONES) + f" {'worst 4.6-11.9k':>16}")
    for k in kinds:
        row, worst = alias_db(k, ALIAS_TONES), max(alias_db(k, grid))
        print(f"{label.get(k, 'soxr ' + k):22} " + " ".join(f"{v:7.1f}" for v in row) + f" {worst:16.1f}")

    print("\n8k->24k: image power at 4.6-12 kHz, dB re the total, per tone")
    print(f"{'resampler':22} " + " ".join(f"{f:>7}" for f in IMAGE_TONES) + f" {'worst 0.3-3.4k':>16}")
    for k in kinds:
        worst = max(image_db(k, f) for f in [*range(300, 3400, step_hz), 3400])
        print(f"{label.get(k, 'soxr ' + k):22} " + " ".join(f"{image_db(k, f):7.1f}" for f in IMAGE_TONES)
              + f" {worst:16.1f}")  # fmt: skip

    seconds = 1.0 if q else 10.0
    payloads = call_audio(seconds)
    print(f"\nWhole audio path, echo of {seconds:g} s in 20 ms payloads, best of {repeats}:")
    paths = {"ours: G.711 tables + FIR pipelines": path_ours(payloads)}
    if AUDIOOP:
        paths["audioop: ulaw2lin + ratecv x2 + lin2ulaw"] = path_audioop(payloads)
    paths["G.711 tables + soxr HQ streams (int16)"] = path_soxr_hq(payloads)
    cost = {name: 1e3 * best_of(fn, repeats) / seconds for name, fn in paths.items()}
    base = cost.get("audioop: ulaw2lin + ratecv x2 + lin2ulaw")
    for name, ms in cost.items():
        ratio = f"{ms / base:5.2f} x audioop" if base else ""
        print(f"  {name:42} {ms:7.3f} ms CPU per call-second ({1e3 * ms / 50:5.1f} us per 20 ms)  {ratio}")


if __name__ == "__main__":
    main()
