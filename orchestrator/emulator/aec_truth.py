"""What the echo canceller really did, from the emulator's own signals: true ERLE and caller distortion.

The emulated line renders its parts apart (`MediaStreamClient.parts()`, kept per call as
`<CallSid>.parts.npz`): the clean caller, the echo of what the phone played, the noise. The product
keeps what its model heard after the canceller, on the media clock (`<call>.model-in.wav`), which is
the phone's clock sample for sample (media.timestamp = frame k * 20 ms). So, with no product code:

- ERLE: over 0.5 s windows where the echo is there (above -55 dBFS) and the caller is silent (under
  1/10000 of the echo's energy), 10 log10(echo energy / energy of what the model heard less caller and
  noise). The median over windows from `after_s` on, and when every later window reached 20 dB.
- Caller distortion: where the caller talks (its 125 ms energy above -40 dBFS), the level change and
  the SDR of what the model heard (less the noise) against the clean caller. μ-law alone costs ~37 dB.

Windows holding a lost frame are left out (the model heard silence there, by design). Pure numpy.
"""

from __future__ import annotations

import wave
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["aec_truth", "aec_truth_files"]

RATE = 8000
_FULL = 32768.0


def _dbfs_energy(dbfs: float, n: int) -> float:
    return n * (_FULL * 10 ** (dbfs / 20)) ** 2


def aec_truth(
    model_input: npt.NDArray[np.generic],
    parts: Mapping[str, npt.NDArray[np.generic]],
    lost_timestamps_ms: Sequence[float] = (),
    *,
    rate: int = RATE,
    window_s: float = 0.5,
    after_s: float = 2.0,
) -> dict[str, Any]:
    caller = np.asarray(parts["caller"], dtype=np.float64)
    n = min(len(model_input), len(caller))
    caller = caller[:n]
    echo = np.asarray(parts["echo"], dtype=np.float64)[:n] if "echo" in parts else np.zeros(n)
    noise = np.asarray(parts["noise"], dtype=np.float64)[:n] if "noise" in parts else np.zeros(n)
    echo = np.pad(echo, (0, n - len(echo)))
    noise = np.pad(noise, (0, n - len(noise)))
    heard = np.asarray(model_input, dtype=np.float64)[:n]
    ok = np.ones(n, bool)
    for ts in lost_timestamps_ms:
        a = round(ts * rate / 1000)
        ok[a : a + rate // 50] = False
    win = round(window_s * rate)
    resid = heard - caller - noise
    starts, erle = [], []
    for i in range(0, n - win + 1, win):
        sl = slice(i, i + win)
        pe, pc = float(np.sum(echo[sl] ** 2)), float(np.sum(caller[sl] ** 2))
        if ok[sl].all() and pe > _dbfs_energy(-55.0, win) and pc < 1e-4 * pe:
            starts.append(i / rate)
            erle.append(10 * np.log10(pe / (float(np.sum(resid[sl] ** 2)) + 1e-9)))
    out: dict[str, Any] = {"erle_windows": len(erle)}
    s, v = np.array(starts), np.array(erle)
    late = v[s >= after_s] if len(v) else v
    out["erle_db"] = float(np.median(late)) if len(late) else None
    out["erle_min_db"] = float(late.min()) if len(late) else None
    out["erle_20db_after_s"] = next(
        (float(s[j] + window_s) for j in range(len(v)) if (v[j:] >= 20.0).all()), None
    )
    quarter = max(1, win // 4)
    env = np.convolve(caller * caller, np.ones(quarter), "same") > _dbfs_energy(-40.0, quarter)
    talk = env & ok
    out["caller_talk_s"] = float(np.count_nonzero(talk)) / rate
    if np.count_nonzero(talk) >= rate // 2:
        c, o = caller[talk], (heard - noise)[talk]
        pc, po = float(np.sum(c**2)), float(np.sum(o**2))
        out["caller_level_change_db"] = 10 * np.log10(max(po, 1e-9) / pc)
        out["caller_sdr_db"] = 10 * np.log10(pc / max(float(np.sum((o - c) ** 2)), 1e-9))
    return out


def _read_mono(path: Path) -> npt.NDArray[np.int16]:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def aec_truth_files(truth_dir: Path, call_sid: str, model_input_wav: Path, **kw: Any) -> dict[str, Any]:
    """`aec_truth` from the files a call left: the emulator's parts and truth, the product's model input."""
    import json

    truth = json.loads((truth_dir / f"{call_sid}.json").read_text())
    stream = truth.get("stream") or {}
    lost = [f["timestamp_ms"] for f in stream.get("frames_lost", [])]
    with np.load(truth_dir / f"{call_sid}.parts.npz") as z:
        parts = {k: z[k] for k in z.files}
    return aec_truth(_read_mono(model_input_wav), parts, lost, **kw)
