"""The server's whole per-frame media path minus the socket: JSON + base64 around the audio path.

Per 20 ms Twilio message of an echo call: ``json.loads`` -> base64 decode -> inbound audio -> (the model's
frame, echoed) -> outbound audio -> base64 encode -> ``json.dumps`` of the outbound media message.
Compared, in the same run, with the same transport around the audioop way (ulaw2lin + ratecv both
ways + lin2ulaw) and with the transport alone (the floor: payload echoed untouched).

Usage: python benchmarks/transport_cost.py [--quick]   (run from the repository root)
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resampler import AUDIOOP, best_of, call_audio

from bridge.framing import InboundPipeline, OutboundPipeline

STREAM_SID = "MZ" + "0" * 32


def inbound_messages(seconds: float) -> list[str]:
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
        for i, p in enumerate(call_audio(seconds))
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (CI)")
    args = ap.parse_args()
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
    cost = {name: 1e3 * best_of(fn, repeats) / seconds for name, fn in paths.items()}
    base = cost.get("audioop: + ulaw2lin + ratecv x2 + lin2ulaw")
    print(f"Per-frame media path (echo, {seconds:g} s of 20 ms messages, best of {repeats}):")
    for name, ms in cost.items():
        ratio = f"{ms / base:5.2f} x audioop" if base else ""
        print(f"  {name:45} {1e3 * ms / 50:6.1f} us per 20 ms  {ms:6.3f} ms CPU per call-second  {ratio}")


if __name__ == "__main__":
    main()
