"""The inbound echo canceller's plumbing (bridge/cancel.py): the reference on our clock, the media clock
mapping, silence, and the pipeline hook. The canceller's own quality is tests/unit/test_aec.py's."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bridge.cancel import InboundCanceller, PlayedReference
from bridge.framing import InboundPipeline
from bridge.g711 import ulaw_decode, ulaw_encode
from bridge.inbound import InboundTrack

RATE = 8000


def chunk(value: int, n: int = 160) -> bytes:
    return ulaw_encode(np.full(n, value, np.int16))


def test_reference_places_chunks_back_to_back_through_estimate_jitter() -> None:
    ref = PlayedReference()
    a, b = chunk(1000), chunk(-2000)
    ref.place(a, 0.100)
    ref.place(b, 0.1203)  # the estimate says 0.3 ms late: the phone plays it right after the first
    got = ref.read(800, 320)
    assert np.array_equal(got[:160], ulaw_decode(a).astype(np.float32))
    assert np.array_equal(got[160:], ulaw_decode(b).astype(np.float32))


def test_reference_leaves_a_gap_where_the_phone_ran_dry_and_clear_silences_the_rest() -> None:
    ref = PlayedReference()
    ref.place(chunk(1000), 0.100)
    ref.place(chunk(1000), 0.200)  # 80 ms after the first ended: a real gap
    got = ref.read(800, 960)
    assert got[160:800].max() == 0 and got[800:].min() > 0
    ref.clear(0.210)
    assert ref.read(800 + 880, 80).max() == 0  # dropped by the phone
    assert ref.read(800 + 800, 80).min() > 0  # played before the clear
    ref.place(chunk(-500), 0.205)  # a new run after a clear is placed where its estimate says
    assert ref.read(1640, 160)[0] < 0


def test_reference_memory_is_bounded_on_a_long_call() -> None:
    ref = PlayedReference(keep_s=1.0)
    for k in range(50 * 60):  # a minute of back-to-back chunks, read as the call goes
        ref.place(chunk(100), 0.02 * k)
        ref.read(160 * k, 160)
    assert len(ref._buf) <= 4 * RATE
    assert ref.read(160 * 2999, 160).min() > 0


class Passthrough:
    """An EchoCanceller stand-in that records what it was given and subtracts nothing."""

    lead = 320

    def __init__(self) -> None:
        self.calls: list[tuple[npt.NDArray[np.int16], npt.NDArray[np.float32]]] = []

    def process(self, mic: npt.NDArray[np.int16], ref: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.calls.append((mic.copy(), ref.copy()))
        return mic.astype(np.float32)


def test_blocks_map_from_the_media_clock_to_ours_with_the_lead() -> None:
    fake = Passthrough()
    canceller = InboundCanceller(fake)  # type: ignore[arg-type]
    # what the phone played: a ramp of chunks from 0.5 s local
    for k in range(20):
        canceller.reference.place(ulaw_encode(np.full(160, 100 * (k + 1), np.int16)), 0.5 + 0.02 * k)
    canceller.offset = 0.25  # local = media + 0.25 s
    mic = np.full(640, 300, np.int16)
    canceller(mic, at=2000)  # media sample 2000 = local 0.5 s; the reference is read 40 ms ahead
    _, ref = fake.calls[-1]
    assert ref[0] == ulaw_decode(ulaw_encode(np.array([300], np.int16)))[0]  # chunk 2 starts at +40 ms
    assert np.frombuffer(bytes(canceller.model_input), np.int16).tolist() == mic.tolist()


def test_before_the_first_frame_and_on_digital_silence_the_model_hears_the_line_or_silence() -> None:
    fake = Passthrough()
    canceller = InboundCanceller(fake)  # type: ignore[arg-type]
    out = canceller(np.full(640, 7, np.int16), at=0)  # no offset yet: passed through, not cancelled
    assert out.tolist() == [7.0] * 640 and not fake.calls
    canceller.offset = 0.0
    out = canceller(np.zeros(640, np.int16), at=640)  # a gap filled with zeros: never "minus the echo"
    assert not out.any() and len(fake.calls) == 1 and canceller.silent_blocks == 1
    assert len(canceller.model_input_pcm()) == 1280


def test_the_pipeline_runs_the_canceller_on_each_whole_block_with_its_media_index() -> None:
    seen: list[int] = []

    def halve(block: npt.NDArray[np.int16], at: int) -> npt.NDArray[np.float32]:
        seen.append(at)
        return block.astype(np.float32) / 2

    plain, cancelled = InboundPipeline(), InboundPipeline(canceller=halve)
    payload = ulaw_encode((np.sin(np.arange(160) / 5) * 8000).astype(np.int16))
    frames_a = [f for _ in range(12) for f in plain.push(payload)]
    frames_b = [f for _ in range(12) for f in cancelled.push(payload)]
    assert seen == [0, 640, 1280]
    assert len(frames_a) == len(frames_b) == 3
    np.testing.assert_allclose(frames_b[2], frames_a[2] / 2, atol=1e-6)


def test_the_track_hands_its_clock_offset_to_the_canceller() -> None:
    canceller = InboundCanceller(Passthrough())  # type: ignore[arg-type]
    track = InboundTrack(canceller=canceller)
    track.receive(0, chunk(10), rel=0.045)
    assert canceller.offset == track.offset == 0.045 - 0.02
