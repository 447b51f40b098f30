"""Levels, speech onset/offset, VAD and inbound timing, against injected ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.meters.levels import ULAW_MAX, measure_levels, speech_offset, speech_onset, window_dbfs
from bridge.meters.timing import inbound_gaps, interarrival_jitter, media_clock_offset_s
from bridge.meters.vad import detect_speech
from orchestrator.emulator.audio import find_speech
from tests.speech import CALLER_LINES, speak

R = 8000


def _noise(n: int, dbfs: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 32768 * 10 ** (dbfs / 20), n)


def _i16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


# --- levels ---------------------------------------------------------------------------------------


def test_sine_level_peak_and_no_clipping() -> None:
    t = np.arange(R) / R
    x = _i16(16384 * np.sin(2 * np.pi * 1000 * t))  # half scale: −6.02 − 3.01 dBFS
    lv = measure_levels(x)
    assert lv.rms_dbfs == pytest.approx(-9.03, abs=0.02)
    assert lv.peak == 16384
    assert lv.clip_ratio == 0.0
    assert lv.silence_ratio == 0.0


def test_clip_ratio_counts_samples_at_ulaw_max_and_custom_threshold() -> None:
    x = np.zeros(10_000, dtype=np.int16)
    x[:37] = ULAW_MAX
    x[100:113] = -ULAW_MAX
    x[200:205] = 30_000
    assert measure_levels(x).clip_ratio == pytest.approx(50 / 10_000)
    assert measure_levels(x, clip_threshold=30_000).clip_ratio == pytest.approx(55 / 10_000)


def test_silence_ratio_is_share_of_quiet_10ms_windows() -> None:
    x = _noise(R, -60.0)  # 100 windows
    x[: 30 * 80] += _noise(30 * 80, -20.0, seed=1)
    assert measure_levels(_i16(x)).silence_ratio == pytest.approx(0.70)
    assert measure_levels(np.zeros(0, dtype=np.int16)).silence_ratio == 1.0


def test_window_dbfs_of_digital_silence_is_floored_not_minus_infinity() -> None:
    assert np.all(window_dbfs(np.zeros(800, dtype=np.int16)) == -120.0)


# --- speech onset / offset ------------------------------------------------------------------------


@pytest.mark.parametrize("start", [4000, 4001, 4037, 4079, 4123])
def test_onset_and_offset_are_located_to_the_sample_wherever_the_grid_falls(start: int) -> None:
    x = np.zeros(3 * R)
    burst = _noise(R // 2, -20.0, seed=start)
    burst[0] = burst[-1] = 5000.0  # the first and last samples are certainly above the refine level
    x[start : start + len(burst)] = burst
    pcm = _i16(x)
    assert speech_onset(pcm) == start
    assert speech_offset(pcm) == start + len(burst)


def test_onset_needs_50ms_above_minus_40_dbfs() -> None:
    # Windows slide, so a window that only touches a loud burst counts too: a burst needs ~40 ms of
    # its own to make 50 ms of loud windows. 30 ms is never enough.
    x = np.zeros(2 * R)
    x[1000:1240] = _noise(240, -20.0)  # 30 ms: too short
    x[8000:10000] = _noise(2000, -46.0)  # long but too quiet
    assert speech_onset(_i16(x)) is None
    x[12000:12400] = _noise(400, -20.0, seed=3)  # 50 ms: enough
    assert speech_onset(_i16(x)) == pytest.approx(12000, abs=2)


def test_onset_of_placed_espeak_speech() -> None:
    clip = speak("Hello, how can I help you?")
    x = np.zeros(3 * R, dtype=np.int16)
    x[5000 : 5000 + len(clip)] = clip
    assert speech_onset(x) == 5000 + speech_onset(clip)
    assert speech_offset(x) == 5000 + speech_offset(clip)


# --- VAD -------------------------------------------------------------------------------------------

_LINES = (
    "Hello, this is a test of the phone bridge.",
    "How are you today?",
    "Yes.",
    "I would like to book a table for two people tomorrow evening, please.",
)


def _speech_scene(noise_dbfs: float | None, seed: int = 7) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The lines 1.5 s apart, line noise added; truth from the clean scene by the emulator's own
    onset code (-40 dBFS, 50 ms), which shares nothing with the meters under test."""
    x = np.zeros(17 * R)
    t = 1.0
    for text in _LINES:
        clip = speak(text)
        i = int(t * R)
        x[i : i + len(clip)] += clip
        t += len(clip) / R + 1.5
    truth = [(s.onset / R, s.end / R) for s in find_speech(_i16(x), -40.0)]
    if noise_dbfs is not None:
        x += _noise(len(x), noise_dbfs, seed=seed)
    return _i16(x), truth


@pytest.mark.parametrize("noise_dbfs", [None, -60.0, -50.0, -45.0])
def test_vad_finds_each_utterance_within_50ms_of_energy_truth(noise_dbfs: float | None) -> None:
    pcm, truth = _speech_scene(noise_dbfs)
    segs = detect_speech(pcm)
    assert len(segs) == len(truth)
    for seg, (on, off) in zip(segs, truth, strict=True):
        assert seg.start_s == pytest.approx(on, abs=0.05)
        assert seg.end_s == pytest.approx(off, abs=0.05)


@pytest.mark.parametrize("seed", [7, 8, 9])
@pytest.mark.parametrize("noise_dbfs", [-45.0, -42.0, -40.0])
def test_on_a_noisy_line_boundaries_are_where_the_clean_speech_crosses_minus_40(
    noise_dbfs: float, seed: int
) -> None:
    # The raised threshold alone (floor + 9 dB) ended fading words up to 90 ms early and started soft
    # onsets up to 48 ms late at -40 dBFS; widened to the power-summed level they stay within ~16 ms.
    pcm, truth = _speech_scene(noise_dbfs, seed)
    segs = detect_speech(pcm)
    assert len(segs) == len(truth)
    for seg, (on, off) in zip(segs, truth, strict=True):
        assert seg.start_s == pytest.approx(on, abs=0.02)
        assert seg.end_s == pytest.approx(off, abs=0.02)


@pytest.mark.parametrize("noise_dbfs", [-65.0, -55.0, -45.0, -40.0])
def test_vad_finds_nothing_in_low_noise(noise_dbfs: float) -> None:
    assert detect_speech(_i16(_noise(10 * R, noise_dbfs))) == []


def test_vad_finds_nothing_in_digital_silence_or_short_input() -> None:
    assert detect_speech(np.zeros(5 * R, dtype=np.int16)) == []
    assert detect_speech(np.zeros(100, dtype=np.int16)) == []


# --- timing ----------------------------------------------------------------------------------------


def test_lost_frames_counted_exactly_including_at_the_start() -> None:
    frames = np.arange(500)
    lost = {0, 1, 50, 51, 52, 200, 499}
    ts = np.array([f * 20 for f in frames if f not in lost], dtype=float)
    gaps = inbound_gaps(ts)
    # frame 499 is the last one: its loss is invisible to timestamps (nothing arrives after it).
    assert gaps.lost_frames == 6
    assert gaps.total_ms == 120.0
    assert gaps.count == 3


def test_no_gaps_when_nothing_is_lost() -> None:
    assert inbound_gaps(np.arange(100) * 20.0).lost_frames == 0
    assert inbound_gaps(np.empty(0)).total_ms == 0.0


@pytest.mark.parametrize("spread_ms", [0.0, 15.0, 60.0])
def test_jitter_matches_injected_uniform_transit_jitter(spread_ms: float) -> None:
    # Transit ~ U(0, a): D is the difference of two such draws, E|D| = a/3, which RFC 3550's J tracks.
    rng = np.random.default_rng(1)
    n = 20_000
    ts = np.arange(n) * 20.0
    arrivals = 0.05 + ts / 1000 + rng.uniform(0, spread_ms / 1000, n)
    j = interarrival_jitter(arrivals, ts)
    assert j.mean_ms == pytest.approx(spread_ms / 3, rel=0.05, abs=1e-9)
    assert j.max_ms >= j.mean_ms


def test_media_clock_offset_is_the_least_delayed_frame() -> None:
    ts = np.arange(100) * 20.0
    delay = np.random.default_rng(2).uniform(0.01, 0.08, 100)
    delay[37] = 0.003
    # A causal sender: the frame with media time t leaves once its last sample exists, at t + 20 ms;
    # the offset is the fixed transit alone (3 ms for the least-delayed frame), the frame taken out.
    assert media_clock_offset_s(0.5 + ts / 1000 + 0.02 + delay, ts) == pytest.approx(0.503)


def test_the_noise_floor_of_a_noisy_line_ignores_near_silence_whatever_the_windows_phase() -> None:
    # A -40 dBFS noisy line whose replies also carry stretches at mu-law's smallest steps (a synthetic
    # voice's pauses, about 12 % of the windows): counted as noise, they let the 10th percentile fall
    # anywhere between them and the noise as the 10 ms windows' phase moved (-43 to -49 dBFS seen), and
    # product and truth read the model's onsets 13-35 ms apart.
    from bridge.meters.levels import noise_floor_dbfs
    from orchestrator.emulator.audio import noise_floor_dbfs as truth_floor

    rng = np.random.default_rng(4)
    n = 8 * 8000
    x = rng.normal(0.0, 32768 * 10 ** (-40 / 20), n)
    for start in range(4000, n - 2000, 16000):  # near-silence of ~1900 samples every 2 s
        x[start : start + 1900] = rng.choice([-8.0, 0.0, 0.0, 8.0], 1900)
    x[:1000] = 0.0  # and digital silence before anything played
    pcm = np.rint(x).astype(np.int16)
    for shift in (0, 10, 23, 46, 60, 79):
        shifted = np.concatenate([np.zeros(shift, np.int16), pcm])
        product, truth = noise_floor_dbfs(shifted, 8000), truth_floor(shifted.astype(np.float64))
        assert product == pytest.approx(-41.0, abs=0.6)  # the noise windows' own 10th percentile
        assert truth == pytest.approx(product, abs=0.3)


def test_a_clean_line_keeps_the_floor_of_its_silence_not_of_its_speech() -> None:
    # No steady noise: speech, its quiet tails and digital silence. The floor stays below anything
    # audible (so the onset threshold is -40 dBFS), not the quiet end of the speech itself.
    from bridge.meters.levels import noise_floor_dbfs, speech_threshold_dbfs
    from orchestrator.emulator.audio import noise_floor_dbfs as truth_floor

    voice = speak(CALLER_LINES[0])
    pcm = np.concatenate([np.zeros(4000, np.int16), voice, np.zeros(8000, np.int16), voice])
    assert noise_floor_dbfs(pcm, 8000) < -60.0
    assert speech_threshold_dbfs(noise_floor_dbfs(pcm, 8000)) == -40.0
    assert truth_floor(pcm.astype(np.float64)) < -60.0
