"""The streaming resampler against its requirements, measured through the streaming path.

Requirements (DESIGN.md, reference/resampling.md): at most 5 ms added per direction; 0.1 dB ripple over
300-3400 Hz; >= 40 dB rejection of whatever would alias into the call (24k->8k) and of the images
(8k->24k); exact output length on every call; chunking does not change the result.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from scipy import signal

from bridge.resample import FILTER_TAPS, StreamResampler

UP, DOWN = (8000, 24000), (24000, 8000)
CHUNK_20MS = {8000: 160, 24000: 480}


def stream(r: StreamResampler, x: npt.NDArray[np.float32], chunk: int) -> npt.NDArray[np.float32]:
    return np.concatenate([r.process(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def through(rates: tuple[int, int], x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Run x through a fresh resampler in 20 ms chunks, as on a call."""
    return stream(StreamResampler(*rates), x, CHUNK_20MS[rates[0]])


def tone(f: float, rate: int, seconds: float, amp: float = 0.5) -> npt.NDArray[np.float32]:
    n = np.arange(round(rate * seconds))
    return (amp * np.sin(2 * np.pi * f * n / rate)).astype(np.float32)


def amplitude_at(y: npt.NDArray[np.float32], f: float, rate: int) -> float:
    # The last second of y holds a whole number of cycles of every integer-Hz tone, so this projection
    # sees f alone (no leakage from images or other tones).
    tail = y[-rate:].astype(np.float64)
    n = np.arange(rate)
    return float(2 * abs(np.sum(tail * np.exp(-2j * np.pi * f * n / rate))) / rate)


def lag_ms(y: npt.NDArray[np.float32], ideal: npt.NDArray[np.float64], rate: int) -> float:
    """Lag of y behind ideal by cross-correlation, to a fraction of a sample (parabolic peak)."""
    c = signal.correlate(y.astype(np.float64), ideal, mode="full")
    k = int(np.argmax(c))
    a, b, d = c[k - 1], c[k], c[k + 1]
    frac = 0.5 * (a - d) / (a - 2 * b + d)
    return 1000.0 * (k + frac - (len(ideal) - 1)) / rate


# ---- contract -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rates", [UP, DOWN])
def test_every_call_returns_exactly_the_rate_ratio_and_chunking_changes_nothing(
    rates: tuple[int, int],
) -> None:
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, 3 * 4000).astype(np.float32)
    whole = StreamResampler(*rates).process(x)
    r = StreamResampler(*rates)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 700))
        if rates == DOWN:
            n = 3 * (n // 3 + 1)
        chunk = x[i : i + n]
        out = r.process(chunk)
        assert len(out) == len(chunk) * rates[1] // rates[0] > 0
        assert out.dtype == np.float32
        parts.append(out)
        i += n
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rates", [UP, DOWN])
def test_output_equals_textbook_upfirdn_with_the_same_filter(rates: tuple[int, int]) -> None:
    x = np.random.default_rng(3).uniform(-1, 1, 4800).astype(np.float32)
    y = through(rates, x)
    if rates == UP:
        ref = signal.upfirdn(3 * FILTER_TAPS, x.astype(np.float64), up=3)[: 3 * len(x)]
    else:
        ref = signal.upfirdn(FILTER_TAPS, x.astype(np.float64), down=3)[: len(x) // 3]
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-6)


def test_reset_forgets_history_and_gain_scales() -> None:
    x = np.random.default_rng(1).uniform(-1, 1, 960).astype(np.float32)
    r = StreamResampler(*DOWN)
    r.process(x)
    r.reset()
    np.testing.assert_array_equal(r.process(x), StreamResampler(*DOWN).process(x))
    np.testing.assert_allclose(
        StreamResampler(*DOWN, gain=32768.0).process(x),
        32768.0 * StreamResampler(*DOWN).process(x),
        rtol=1e-6,
        atol=1e-3,
    )


def test_rejects_other_rates_and_down_chunks_not_a_multiple_of_3() -> None:
    with pytest.raises(ValueError, match="8000"):
        StreamResampler(16000, 8000)
    with pytest.raises(ValueError, match="multiple of 3"):
        StreamResampler(*DOWN).process(np.zeros(160, np.float32))
    assert StreamResampler(*UP).process(np.zeros(0, np.float32)).size == 0


# ---- delay ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rates", [UP, DOWN])
def test_impulse_comes_out_delayed_by_delay_ms_and_at_most_5ms(rates: tuple[int, int]) -> None:
    fin, fout = rates
    x = np.zeros(fin // 5, np.float32)  # 200 ms
    at = 3 * (len(x) // 6)  # a multiple of 3 so it lands on an 8 kHz sample either way
    x[at] = 1.0
    y = through(rates, x)
    measured_ms = 1000.0 * (int(np.argmax(np.abs(y))) / fout - at / fin)
    r = StreamResampler(*rates)
    assert measured_ms == pytest.approx(r.delay_ms, abs=1e-9)
    assert 0 < measured_ms <= 5.0


@pytest.mark.parametrize("rates", [UP, DOWN])
def test_chirp_cross_correlation_shows_the_same_delay(rates: tuple[int, int]) -> None:
    fin, fout = rates

    def chirp(rate: int) -> npt.NDArray[np.float64]:
        t = np.arange(rate // 2) / rate  # 0.5 s sweep 300 -> 3400 Hz, Hann-windowed
        return signal.windows.hann(len(t)) * signal.chirp(t, 300, t[-1], 3400)

    y = through(rates, (0.5 * chirp(fin)).astype(np.float32))
    measured = lag_ms(y, chirp(fout), fout)
    assert measured == pytest.approx(StreamResampler(*rates).delay_ms, abs=0.02)
    assert measured <= 5.0


# ---- quality --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rates", [UP, DOWN])
def test_passband_ripple_300_to_3400_hz_is_within_0_1_db(rates: tuple[int, int]) -> None:
    fin, fout = rates
    freqs = np.arange(300, 3401, 100)
    gains_db = np.array(
        [20 * np.log10(amplitude_at(through(rates, tone(f, fin, 1.1)), f, fout) / 0.5) for f in freqs]
    )
    assert gains_db.max() - gains_db.min() <= 0.1, dict(
        zip(freqs.tolist(), gains_db.round(4).tolist(), strict=True)
    )
    assert np.all(np.abs(gains_db) <= 0.1)


def test_24k_to_8k_attenuates_everything_that_would_alias_into_the_call_by_40_db() -> None:
    def power(f: float) -> float:
        y = through(DOWN, tone(f, 24000, 1.1))[-8000:].astype(np.float64)
        return float(np.mean(y**2))  # all of it lands in 0-4 kHz after decimation

    ref = power(1000)
    worst = max((10 * np.log10(power(f) / ref), f) for f in np.arange(4600, 11901, 100))
    assert worst[0] <= -40.0, f"alias of {worst[1]} Hz only {worst[0]:.1f} dB below a 1 kHz tone"
    assert 10 * np.log10(power(3400) / ref) > -0.1  # not by cutting the band itself


def test_8k_to_24k_images_at_4_6_to_12_khz_are_40_db_below_the_tone() -> None:
    worst = -np.inf
    for f in np.arange(300, 3401, 100):
        y = through(UP, tone(f, 8000, 1.1))[-24000:].astype(np.float64)
        spec = np.abs(np.fft.rfft(y)) ** 2  # 1 Hz bins over the last second
        image = spec[4600:12001].sum() / spec[f]
        worst = max(worst, 10 * np.log10(image))
    assert worst <= -40.0, f"images only {worst:.1f} dB below the tone"
