"""CPU per call-second of the server's media path, against the audioop way, in the same run; and audio quality.

Part 1, the codec path: per 20 ms Twilio message of an echo call: ``json.loads`` -> base64 decode ->
inbound audio -> (the model's frame, echoed) -> outbound audio -> base64 encode -> ``json.dumps`` of the
outbound media message. Compared with the same transport around the audioop way (ulaw2lin + ratecv both
ways + lin2ulaw) and with the transport alone (the floor: payload echoed untouched).

Part 2, the full server-side path: a masked WebSocket frame in (the ``websockets`` sans-I/O parser stands
in for the socket layer, on both sides alike), ``MediaStream`` parse and checks, the real ``MediaSession``
(gap tracking, evidence, its queue, worker and sender tasks on an asyncio loop, playout clock, marks),
the real echo backend (400 ms delay line), outbound pipeline, serialization, a WebSocket frame out. The
baseline is built the way the peers do it: the same frames in and out, ``json.loads``, ``ulaw2lin`` +
``ratecv`` up, re-chunk to 80 ms float32 frames for the same echo backend, ``ratecv`` down + ``lin2ulaw``,
``json.dumps`` of a dict. Both run on an asyncio loop with one loop turn per WebSocket message, as any
asyncio server receives them (the baseline used to run as a plain loop, which left the event loop's own
cost on our side of the ratio only). CPU is process time (best of N: the machine is shared).

Part 3, quality of both paths: the echo round trip's SNR on speech-band noise (what comes back vs what
went in, gain and delay fitted), the images the model hears (8k->24k, power at 4.6-12 kHz re total) and
what a model's energy above 4 kHz leaves in the call (24k->8k, worst alias re a 1 kHz tone).

Usage: python benchmarks/transport_cost.py [--quick]   (run from the repository root)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
from websockets.protocol import Protocol, Side

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import header
from resampler import AUDIOOP, alias_db, call_audio, image_db

from bridge.backends.echo import EchoSession
from bridge.framing import InboundPipeline, OutboundPipeline
from bridge.g711 import ulaw_decode, ulaw_encode
from bridge.protocol import Media, MediaStream, OutboundMedia, Start, parse_outbound
from bridge.session import MediaSession, SessionConfig

STREAM_SID = "MZ" + "0" * 32


def inbound_messages(seconds: float, payloads: list[bytes] | None = None) -> list[str]:
    # As Twilio sends them: every number a string.
    return [
        json.dumps(
            {
                "event": "media",
                "sequenceNumber": str(i + 2),
                "streamSid": STREAM_SID,
                "media": {
                    "track": "inbound",
                    "chunk": str(i + 1),
                    "timestamp": str(20 * i),
                    "payload": base64.b64encode(p).decode("ascii"),
                },
            }
        )
        for i, p in enumerate(payloads if payloads is not None else call_audio(seconds))
    ]


def outbound(chunk: bytes) -> str:
    payload = base64.b64encode(chunk).decode("ascii")
    return json.dumps({"event": "media", "streamSid": STREAM_SID, "media": {"payload": payload}})


def floor(messages: list[str]) -> Callable[[], object]:
    def run() -> None:
        for m in messages:
            outbound(base64.b64decode(json.loads(m)["media"]["payload"]))

    return run


def ours(messages: list[str]) -> Callable[[], object]:
    def run() -> None:
        ib, ob = InboundPipeline(), OutboundPipeline()
        for m in messages:
            for frame in ib.push(base64.b64decode(json.loads(m)["media"]["payload"])):
                for chunk in ob.push(frame):
                    outbound(chunk)

    return run


def audioop_way(messages: list[str]) -> Callable[[], object]:
    assert AUDIOOP is not None
    ao = AUDIOOP

    def run() -> None:
        up_state = down_state = None
        for m in messages:
            lin = ao.ulaw2lin(base64.b64decode(json.loads(m)["media"]["payload"]), 2)
            up, up_state = ao.ratecv(lin, 2, 1, 8000, 24000, up_state)
            down, down_state = ao.ratecv(up, 2, 1, 24000, 8000, down_state)
            outbound(ao.lin2ulaw(down, 2))

    return run


# ---- part 2: the full server-side path ----------------------------------------------------------------

START = Start(1, STREAM_SID, "AC" + "0" * 32, "CA" + "0" * 32, custom_parameters={"call_id": "bench"})
ECHO_DELAY_MS = 400.0


def ws_frames(messages: list[str]) -> list[bytes]:
    """Each text message as the carrier puts it on the wire: one masked WebSocket frame (client side)."""
    client = Protocol(Side.CLIENT)
    out = []
    for m in messages:
        client.send_text(m.encode())
        out.append(b"".join(client.data_to_send()))
    return out


def _sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the echo backend's process) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("coroutine suspended")


async def _ours_full(frames: list[bytes]) -> tuple[float, list[bytes]]:
    ws = Protocol(Side.SERVER, max_size=64 * 1024)
    stream = MediaStream(max_frame_bytes=64 * 1024)
    stream.receive_text(START.serialize())
    stream.events_received()
    wire: list[bytes] = []

    async def send(texts: list[str]) -> None:  # the server writes a burst's frames as one buffer
        for text in texts:
            ws.send_text(text.encode())
        wire.append(b"".join(ws.data_to_send()))

    # No pacing hold (the lead limit is real time; this measures CPU): everything else is the real session.
    config = SessionConfig(max_lead_s=1e9, jitter_buffer_s=0.0)
    session = MediaSession(
        call_id="bench", stream=stream, backend=EchoSession(ECHO_DELAY_MS), send=send, config=config
    )
    session.start()
    t0 = time.process_time()
    for data in frames:  # one loop iteration per WebSocket message, as in the server's read loop
        ws.receive_data(data)
        for frame in ws.events_received():
            stream.receive_text(frame.data.decode())
            for ev in stream.events_received():
                if isinstance(ev, Media):
                    session.on_media(ev, time.monotonic())
        await asyncio.sleep(0)
    for _ in range(4):
        await asyncio.sleep(0)
    cpu = time.process_time() - t0
    await session.finish("bench")
    return cpu, wire


def ours_full(frames: list[bytes]) -> tuple[float, list[bytes]]:
    return asyncio.run(_ours_full(frames))


async def _audioop_full(frames: list[bytes]) -> tuple[float, list[bytes]]:
    assert AUDIOOP is not None
    ao = AUDIOOP
    ws = Protocol(Side.SERVER, max_size=64 * 1024)
    echo = EchoSession(ECHO_DELAY_MS)
    wire: list[bytes] = []
    up_state = down_state = None
    buf = bytearray()
    t0 = time.process_time()
    for data in frames:
        ws.receive_data(data)
        for frame in ws.events_received():
            msg = json.loads(frame.data)
            if msg["event"] != "media":
                continue
            lin = ao.ulaw2lin(base64.b64decode(msg["media"]["payload"]), 2)
            up, up_state = ao.ratecv(lin, 2, 1, 8000, 24000, up_state)
            buf += up
            while len(buf) >= 3840:  # an 80 ms float32 frame for the model
                x = np.frombuffer(bytes(buf[:3840]), np.int16).astype(np.float32) / 32768.0
                del buf[:3840]
                for y in _sync(echo.process(x)).frames:
                    pcm = (np.clip(y, -1.0, 32767 / 32768) * 32768.0).astype(np.int16).tobytes()
                    down, down_state = ao.ratecv(pcm, 2, 1, 24000, 8000, down_state)
                    ulaw = ao.lin2ulaw(down, 2)
                    for i in range(0, len(ulaw), 160):
                        payload = base64.b64encode(ulaw[i : i + 160]).decode("ascii")
                        text = json.dumps(
                            {"event": "media", "streamSid": STREAM_SID, "media": {"payload": payload}}
                        )
                        ws.send_text(text.encode())
                        wire.extend(ws.data_to_send())
        await asyncio.sleep(0)  # the peer's `async for message in websocket`: one loop turn per message
    return time.process_time() - t0, wire


def audioop_full(frames: list[bytes]) -> tuple[float, list[bytes]]:
    return asyncio.run(_audioop_full(frames))


def interleaved_best(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Each fn returns the CPU seconds of its measured part; best of `repeats`, the paths taking turns.

    Taking turns (ours, baseline, ours, ...) rather than all repeats of one path then the other keeps a
    burst of slowness on the shared machine (a busy hypervisor, another tenant) from landing on one side
    of the ratio only.
    """
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], fn())
    return best


def cpu_of(fn: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        t0 = time.process_time()
        fn()
        return time.process_time() - t0

    return run


# ---- part 3: quality ------------------------------------------------------------------------------------


def speech_band_noise(seconds: float, seed: int = 0) -> np.ndarray:
    """-20 dBFS-ish noise limited to 300-3400 Hz, as int16 at 8 kHz (a stand-in for a voice's spectrum)."""
    n = round(8000 * seconds)
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / 8000)
    spec[(f < 300) | (f > 3400)] = 0
    x = np.fft.irfft(spec, n)
    return np.rint(x / np.sqrt(np.mean(x**2)) * 0.1 * 32767).astype(np.int16)


def sent_audio(wire: list[bytes]) -> np.ndarray:
    """The int16 audio of every media message the server wrote, in order."""
    client = Protocol(Side.CLIENT)
    for data in wire:
        client.receive_data(data)
    codes = b"".join(
        msg.payload
        for f in client.events_received()
        if isinstance(msg := parse_outbound(f.data.decode()), OutboundMedia)
    )
    return ulaw_decode(codes).astype(np.float64)


def echo_snr_db(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(SNR dB, delay ms) of y against x: the best integer lag by cross-correlation, gain by least squares."""
    n = min(len(x), len(y))
    lag_max = min(n // 2, 8000)
    xs = x[: n - lag_max]
    c = [float(np.dot(y[lag : lag + len(xs)], xs)) for lag in range(0, lag_max, 1)]
    lag = int(np.argmax(c))
    seg_y = y[lag : lag + len(xs)][len(xs) // 4 :]  # skip the start: the echo's silent delay line
    seg_x = xs[len(xs) // 4 :]
    g = float(np.dot(seg_y, seg_x) / np.dot(seg_x, seg_x))
    err = seg_y - g * seg_x
    return 10 * np.log10(np.sum((g * seg_x) ** 2) / max(np.sum(err**2), 1e-12)), 1000 * lag / 8000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (CI)")
    args = ap.parse_args()
    header("Transport cost: CPU per call-second of the media path, ours vs the audioop way", args.quick)
    seconds, repeats = (1.0, 3) if args.quick else (10.0, 7)
    messages = inbound_messages(seconds)
    paths = {
        "floor: JSON + base64 only": floor(messages),
        "ours: + G.711 tables + FIR pipelines": ours(messages),
    }
    if AUDIOOP:
        paths["audioop: + ulaw2lin + ratecv x2 + lin2ulaw"] = audioop_way(messages)
    else:
        print("audioop not importable (Python 3.13+ without audioop-lts): no baseline ratio")
    best = interleaved_best({name: cpu_of(fn) for name, fn in paths.items()}, repeats)
    cost = {name: 1e3 * cpu / seconds for name, cpu in best.items()}
    base = cost.get("audioop: + ulaw2lin + ratecv x2 + lin2ulaw")
    print(f"1. Codec path (echo, {seconds:g} s of 20 ms messages, CPU time, best of {repeats} taking turns):")
    for name, ms in cost.items():
        ratio = f"{ms / base:5.2f} x audioop" if base else ""
        print(f"  {name:45} {1e3 * ms / 50:6.1f} us per 20 ms  {ms:6.3f} ms CPU per call-second  {ratio}")

    # Full path: speech-band noise, so the same runs also give the quality of what came back.
    x = speech_band_noise(seconds + ECHO_DELAY_MS / 1000 + 0.5)
    codes = ulaw_encode(x)
    frames = ws_frames(inbound_messages(0, [codes[i : i + 160] for i in range(0, len(codes) - 159, 160)]))
    call_s = len(frames) / 50
    wires: dict[str, list[bytes]] = {}

    def keep(name: str, fn: Callable[[list[bytes]], tuple[float, list[bytes]]]) -> Callable[[], float]:
        def run() -> float:
            cpu, wires[name] = fn(frames)
            return cpu

        return run

    runs = {"ours: WebSocket + MediaStream + MediaSession + echo": keep("ours", ours_full)}
    if AUDIOOP:
        runs["audioop way: WebSocket + json + audioop + echo"] = keep("audioop way", audioop_full)
    full = {
        name: (cpu, wires["ours" if name.startswith("ours") else "audioop way"])
        for name, cpu in interleaved_best(runs, repeats).items()
    }
    fbase = full.get("audioop way: WebSocket + json + audioop + echo", (0.0, []))[0] * 1e3 / call_s
    print(
        f"\n2. Full server-side path (echo backend, {call_s:g} s call, CPU time, best of {repeats} taking turns):"
    )
    for name, (cpu, _) in full.items():
        ms = 1e3 * cpu / call_s
        ratio = f"{ms / fbase:5.2f} x audioop way" if fbase else ""
        print(f"  {name:52} {1e3 * ms / 50:6.1f} us per 20 ms  {ms:6.3f} ms CPU per call-second  {ratio}")

    print("\n3. Audio quality of both paths")
    ref = ulaw_decode(codes).astype(np.float64)
    for name, (_, wire) in full.items():
        snr, lag_ms = echo_snr_db(ref, sent_audio(wire))
        print(
            f"  {name.split(':')[0]:12} echo round trip: SNR {snr:5.1f} dB at {lag_ms:6.2f} ms "
            f"(echo {ECHO_DELAY_MS:g} ms + resampling)"
        )
    grid = list(range(4600, 11901, 1100 if args.quick else 100))
    kinds = [("ours", "ours (61-tap FIR)")] + ([("ratecv", "audioop.ratecv")] if AUDIOOP else [])
    for kind, label in kinds:
        images = max(image_db(kind, f) for f in (1000, 3000, 3400))
        alias = max(alias_db(kind, grid))
        print(
            f"  {label:18} model hears images at {images:6.1f} dB re total (worst of 1/3/3.4 kHz); "
            f"4.6-11.9 kHz from the model folds into the call at {alias:6.1f} dB re 1 kHz (worst)"
        )


if __name__ == "__main__":
    main()
