"""Inbound/outbound pipelines against compositions of the independently tested codec and resampler."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from bridge.framing import FrameAccumulator, InboundPipeline, OutboundPipeline
from bridge.g711 import ulaw_decode, ulaw_encode
from bridge.resample import StreamResampler

RNG = np.random.default_rng(11)


def speechlike(n: int, rate: int) -> npt.NDArray[np.float32]:
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1870 * t) + 0.05 * RNG.standard_normal(n)
    return x.astype(np.float32)


def ulaw_of(x: npt.NDArray[np.float32]) -> bytes:
    return ulaw_encode(np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16))


# ---- FrameAccumulator ------------------------------------------------------------------------------


def test_accumulator_reframes_any_split_exactly_and_frames_are_independent() -> None:
    x = np.arange(10_000, dtype=np.float32)
    acc = FrameAccumulator(1920)
    frames, fed = [], 0
    while fed < len(x):
        n = int(RNG.integers(0, 2500))
        frames += acc.push(x[fed : fed + n])
        fed = min(fed + n, len(x))
        assert acc.pending == fed % 1920
    assert all(f.shape == (1920,) and f.dtype == np.float32 for f in frames)
    np.testing.assert_array_equal(np.concatenate(frames), x[: len(frames) * 1920])
    frames[0][:] = -1  # a consumer scribbling on a frame must not affect later ones
    more = acc.push(np.zeros(1920 - acc.pending, np.float32))
    np.testing.assert_array_equal(more[0][:10], x[len(frames) * 1920 :][:10])


def test_accumulator_reset_drops_the_partial_frame() -> None:
    acc = FrameAccumulator(4, np.int16)
    acc.push(np.array([1, 2, 3], np.int16))
    acc.reset()
    out = acc.push(np.array([5, 6, 7, 8], np.int16))
    np.testing.assert_array_equal(out[0], [5, 6, 7, 8])
    with pytest.raises(ValueError):
        FrameAccumulator(0)


# ---- InboundPipeline -------------------------------------------------------------------------------


def test_inbound_gives_1920_sample_frames_equal_to_decode_then_resample() -> None:
    payload = ulaw_of(speechlike(8000, 8000))  # 1 s
    expected = StreamResampler(8000, 24000).process(ulaw_decode(payload) / np.float32(32768))
    ib = InboundPipeline()
    frames, pcm = [], []
    for i in range(0, len(payload), 160):
        got = ib.push(payload[i : i + 160])
        assert len(got) == (1 if (i // 160) % 4 == 3 else 0)  # one frame per four 20 ms payloads
        frames += got
        pcm.append(ib.pcm8k_last)
    assert len(frames) == 12 and ib.pending == 24000 - 12 * 1920
    assert all(f.shape == (1920,) and f.dtype == np.float32 for f in frames)
    np.testing.assert_allclose(np.concatenate(frames), expected[: 12 * 1920], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(pcm), ulaw_decode(payload))


def test_inbound_payload_sizes_do_not_matter() -> None:
    payload = ulaw_of(speechlike(4000, 8000))
    a, b = InboundPipeline(), InboundPipeline()
    whole = a.push(payload)
    parts, i = [], 0
    for n in [1, 159, 321, 7, 0, 2000, 1512]:
        parts += b.push(payload[i : i + n])
        i += n
    assert i == len(payload) and len(parts) == len(whole) == 6
    np.testing.assert_allclose(np.concatenate(parts), np.concatenate(whole), rtol=0, atol=1e-6)


def test_push_silence_equals_pushing_ulaw_silence_and_keeps_the_clock() -> None:
    payload = ulaw_of(speechlike(1600, 8000))
    a, b = InboundPipeline(), InboundPipeline()
    fa = a.push(payload[:800]) + a.push_silence(480) + a.push(payload[800:])
    fb = b.push(payload[:800]) + b.push(b"\xff" * 480) + b.push(payload[800:])
    assert len(fa) == len(fb) == (1600 + 480) * 3 // 1920
    np.testing.assert_allclose(np.concatenate(fa), np.concatenate(fb), rtol=0, atol=0)
    a.push_silence(320)
    np.testing.assert_array_equal(a.pcm8k_last, np.zeros(320, np.int16))


# ---- OutboundPipeline ------------------------------------------------------------------------------


def test_outbound_frame_gives_four_160_byte_chunks_equal_to_resample_then_encode() -> None:
    x = speechlike(24000, 24000)
    y = StreamResampler(24000, 8000).process(x)
    expected_pcm = np.clip(np.rint(y * 32768), -32768, 32767).astype(np.int16)
    ob = OutboundPipeline()
    chunks, pcm = [], []
    for i in range(0, len(x) - 1920 + 1, 1920):
        got = ob.push(x[i : i + 1920])
        assert [len(c) for c in got] == [160] * 4
        chunks += got
        pcm.append(ob.pcm8k_last)
    pcm_all = np.concatenate(pcm)
    assert len(pcm_all) == 12 * 640
    # float32 rounding may move a sample by one LSB at a .5 boundary, never more
    assert np.abs(pcm_all.astype(int) - expected_pcm[: len(pcm_all)]).max() <= 1
    assert b"".join(chunks) == ulaw_encode(pcm_all)


def test_outbound_clips_instead_of_wrapping() -> None:
    t = np.arange(1920) / 24000
    loud = (1.8 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    ob = OutboundPipeline()
    ob.push(loud)
    pcm = ob.pcm8k_last.astype(int)
    ideal = 1.8 * 32768 * np.sin(2 * np.pi * 500 * (np.arange(640) / 8000 - ob.delay_ms / 1000))
    big = np.abs(ideal) > 40000
    assert pcm.min() == -32768 and pcm.max() == 32767
    assert np.all(np.sign(pcm[30:][big[30:]]) == np.sign(ideal[30:][big[30:]]))  # a wrap would flip sign


def test_outbound_odd_sizes_hold_the_remainder_and_flush_pads_it() -> None:
    x = speechlike(3 * 1000, 24000)
    ob = OutboundPipeline()
    c1 = ob.push(x[:300])  # 100 samples at 8 kHz: not a chunk yet
    assert c1 == [] and ob.pending == 100 and ob.pcm8k_last.size == 0
    c2 = ob.push(x[300:])  # 900 more: 6 chunks, 40 left over
    assert [len(c) for c in c2] == [160] * 6 and ob.pending == 40
    tail = ob.flush()
    assert len(tail) == 1 and tail[0][40:] == b"\xff" * 120 and ob.pending == 0
    whole = OutboundPipeline()
    whole.push(x)
    assert b"".join(c2) == ulaw_encode(whole.pcm8k_last)
    with pytest.raises(ValueError):
        ob.push(np.zeros(100, np.float32))


# ---- round trip ----------------------------------------------------------------------------------------


def test_echo_round_trip_is_delayed_by_both_resamplers_and_keeps_the_signal() -> None:
    t = np.arange(8000) / 8000  # in-band tones only: the filters must pass them untouched
    payload = ulaw_of(
        (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t)).astype(np.float32)
    )
    ib, ob = InboundPipeline(), OutboundPipeline()
    out = b"".join(c for i in range(0, 8000, 160) for f in ib.push(payload[i : i + 160]) for c in ob.push(f))
    assert len(out) == 7680  # 4 frames of 1920 are complete; the rest waits for the fifth
    back = ulaw_decode(out).astype(np.float64) / 32768
    sent = ulaw_decode(payload).astype(np.float64) / 32768

    def snr_db(lag: int) -> float:
        ref, err = sent[100 : len(back) - lag], back[100 + lag :] - sent[100 : len(back) - lag]
        return float(10 * np.log10(np.sum(ref**2) / np.sum(err**2)))

    lag = round((ib.delay_ms + ob.delay_ms) * 8)  # 2 x 1.25 ms = 20 samples at 8 kHz
    assert lag == 20
    assert max(range(10, 31), key=snr_db) == lag
    assert snr_db(lag) > 30  # two μ-law passes (~37 dB each)
