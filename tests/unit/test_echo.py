"""Whole-call echo path estimate against an injected echo path (delay, loss), with double-talk and noise."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.g711 import ulaw_decode, ulaw_encode
from bridge.meters.echo import estimate_echo
from tests.speech import CALLER_LINES, MODEL_LINES, speak

R = 8000


def _scene(
    delay_ms: float | None,
    loss_db: float,
    *,
    double_talk: bool = False,
    noise_dbfs: float | None = None,
    seed: int = 0,
    duration_s: float = 24.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(played, inbound) on one clock: model speech played; inbound = caller + echo + noise, μ-law."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * R)
    played = np.zeros(n)
    t = 0.5
    for i in range(20):
        clip = speak(MODEL_LINES[(i + seed) % len(MODEL_LINES)])
        k = int(t * R)
        if k + len(clip) > n:
            break
        played[k : k + len(clip)] = clip
        t += len(clip) / R + 0.4
    inbound = np.zeros(n)
    if delay_ms is not None:
        d = round(delay_ms * R / 1000)
        inbound[d:] += played[: n - d] * 10 ** (-loss_db / 20)
    if double_talk:  # the caller talks over the model about half of the time
        t = 1.3
        for i in range(20):
            clip = speak(CALLER_LINES[(i + seed) % len(CALLER_LINES)])
            k = int(t * R)
            if k + len(clip) > n:
                break
            inbound[k : k + len(clip)] += clip
            t += len(clip) / R + 2.5
    if noise_dbfs is not None:
        inbound += rng.normal(0, 32768 * 10 ** (noise_dbfs / 20), n)
    to16 = np.clip(np.rint(inbound), -32768, 32767).astype(np.int16)
    return played.astype(np.int16), ulaw_decode(ulaw_encode(to16))


@pytest.mark.parametrize("delay_ms", [40, 100, 200, 400])
@pytest.mark.parametrize("loss_db", [6, 12, 20, 30, 40])
def test_echo_found_with_delay_and_loss_on_clean_line(delay_ms: int, loss_db: int) -> None:
    est = estimate_echo(*_scene(delay_ms, loss_db))
    assert est.detected
    assert est.delay_ms == pytest.approx(delay_ms, abs=5)
    assert est.erl_db == pytest.approx(loss_db, abs=2)


@pytest.mark.parametrize(("delay_ms", "loss_db"), [(40, 6), (100, 20), (200, 30), (400, 40)])
def test_echo_found_under_double_talk(delay_ms: int, loss_db: int) -> None:
    est = estimate_echo(*_scene(delay_ms, loss_db, double_talk=True))
    assert est.detected
    assert est.peak < 0.8 * estimate_echo(*_scene(delay_ms, loss_db)).peak  # the caller did disturb it
    assert est.delay_ms == pytest.approx(delay_ms, abs=5)
    assert est.erl_db == pytest.approx(loss_db, abs=2)


# (200 ms / 30 dB under this much double-talk and -50 dBFS noise is missed: see the module docstring.)
@pytest.mark.parametrize(("delay_ms", "loss_db"), [(40, 6), (100, 20), (200, 20), (400, 30)])
def test_echo_found_in_line_noise_with_double_talk(delay_ms: int, loss_db: int) -> None:
    est = estimate_echo(*_scene(delay_ms, loss_db, double_talk=True, noise_dbfs=-50.0))
    assert est.detected
    assert est.delay_ms == pytest.approx(delay_ms, abs=5)
    assert est.erl_db == pytest.approx(loss_db, abs=2)


def test_detection_stops_when_echo_is_buried_in_line_noise() -> None:
    # Model speech ≈ −21 dBFS, so a 40 dB loss leaves the echo at ≈ −61 dBFS. The whole-call fit still
    # finds it, with its loss, 16 dB under −45 dBFS noise (a per-second GCC-PHAT did not)...
    est = estimate_echo(*_scene(200, 40, noise_dbfs=-45.0))
    assert (
        est.detected and est.delay_ms == pytest.approx(200, abs=1) and est.erl_db == pytest.approx(40, abs=2)
    )
    # ... but not 26 dB under -35 dBFS noise, where it is noise-level in the estimate too.
    assert not estimate_echo(*_scene(200, 40, noise_dbfs=-35.0)).detected
    assert estimate_echo(*_scene(200, 40, noise_dbfs=-65.0)).detected


def test_inaudible_echo_on_a_noiseless_line_is_measured_but_not_flagged() -> None:
    # At 65 dB loss the echo (≈ −86 dBFS) is at μ-law's smallest steps: the path is still found, but it
    # is no echo problem, and quantisation already biases its level (measured ≈ 61 dB).
    est = estimate_echo(*_scene(200, 65))
    assert not est.detected
    assert est.delay_ms == pytest.approx(200, abs=1)
    assert est.erl_db is not None and est.erl_db > 55


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("double_talk", "noise_dbfs"), [(False, None), (True, None), (True, -50.0), (False, -40.0)]
)
def test_no_echo_flag_on_clean_calls(seed: int, double_talk: bool, noise_dbfs: float | None) -> None:
    est = estimate_echo(*_scene(None, 0, double_talk=double_talk, noise_dbfs=noise_dbfs, seed=seed))
    assert not est.detected
    assert est.segments_used > 10
    assert est.segments_flagged < 3


def test_caller_audio_played_back_later_is_not_echo() -> None:
    # An "echo" backend plays the caller's own audio back 300 ms later: the inbound leads the played
    # audio (negative lag), which is not an echo path and must not be flagged.
    played, inbound = _scene(None, 0, double_talk=True)
    d = int(0.3 * R)
    played = np.concatenate([np.zeros(d, dtype=np.int16), inbound[:-d]])
    assert not estimate_echo(played, inbound).detected


def test_nothing_played_means_no_segments() -> None:
    est = estimate_echo(np.zeros(5 * R, dtype=np.int16), np.zeros(5 * R, dtype=np.int16))
    assert est == type(est)(False, None, None, 0.0, 0, 0)


@pytest.mark.parametrize("delay_ms", [300, 500])
def test_a_reply_cut_by_the_hang_up_does_not_read_the_echo_quiet(delay_ms: int) -> None:
    # The record ends in the middle of the loudest reply: the echo of its last `delay_ms` never made it
    # into the inbound audio. Counted as played-without-echo, it read a 300 ms echo at 25 dB 1.2-1.5 dB
    # quiet (the normal equations take every played sample's whole echo as observed).
    n, d = 9 * R, round(delay_ms * R / 1000)
    played = np.zeros(n)
    first, last = speak(MODEL_LINES[0]), speak(MODEL_LINES[2])
    played[R // 2 : R // 2 + len(first)] = first
    cut = n - len(last) // 2
    played[cut:] = last[: n - cut]
    inbound = np.zeros(n)
    inbound[d:] = played[: n - d] * 10 ** (-25 / 20)
    inbound += np.random.default_rng(0).normal(0, 32768 * 10 ** (-60 / 20), n)
    received = ulaw_decode(ulaw_encode(np.clip(np.rint(inbound), -32768, 32767).astype(np.int16)))
    est = estimate_echo(played.astype(np.int16), received)
    assert est.detected
    assert est.delay_ms == pytest.approx(delay_ms, abs=0.5)
    assert est.erl_db == pytest.approx(25.0, abs=0.4)


def test_a_voice_like_itself_over_our_replay_of_it_is_not_an_echo() -> None:
    # The caller counts while we replay their earlier counting: over seconds of double talk one voice
    # resembles itself enough for a path to stand out (z ~9-10 at ~250 ms in the rig's clean calls).
    # Such a path predicts echo where the caller was silent and the line held only noise.
    n = 12 * R
    played, inbound = np.zeros(n), np.zeros(n)
    rng = np.random.default_rng(5)
    inbound += rng.normal(0, 32768 * 10 ** (-55 / 20), n)
    first, second = speak(CALLER_LINES[0]), speak(CALLER_LINES[1])
    played[R // 2 : R // 2 + len(second)] = second  # our reply alone: the line holds only noise
    k = 6 * R
    played[k : k + len(second)] = second  # and again, while the caller talks over it
    inbound[k + 2000 : k + 2000 + len(first)] += first
    x = played.astype(np.int16)
    y = ulaw_decode(ulaw_encode(np.clip(np.rint(inbound), -32768, 32767).astype(np.int16)))
    # a path that explained the double talk would have to put its echo into the quiet first reply
    from bridge.meters.echo import _absent_ratio

    fake = np.zeros(n)
    fake[2000:] = x[:-2000] * 10 ** (-26 / 20)
    received = np.ones(n, dtype=bool)
    assert _absent_ratio(fake, y.astype(np.float64), received, 160) > 0.5
    # a real echo of the same replies at the same level is where it should be
    real = y.astype(np.float64) + fake
    assert _absent_ratio(fake, real, received, 160) < 0.05
    assert not estimate_echo(x, y).detected
