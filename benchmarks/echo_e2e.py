"""Echo detection through the whole product: the carrier emulator injects an acoustic echo path at the
phone, the real server measures it from what it sent and what came back. The truth printed is the
emulator's own: the echo's first arrival and its loss over what the phone played, from its signals.

Prints truth vs measured per cell and the false-flag count on clean calls. Calls run concurrently
in real time (about 12 s for the grid). Usage: python benchmarks/echo_e2e.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.emulator import CallOptions, EchoSpec, Faults, Turn
from orchestrator.rig import LocalRig, rig_settings

LINES = tuple(
    Turn(text=t, answer_timeout_s=4.0, pause_s=0.4)
    for t in ("Hello, can you hear me?", "Tell me about the weather.", "Thank you, goodbye.")
)


async def run(
    cells: list[tuple[float | None, float | None]], seconds: float
) -> list[dict[str, float | None]]:
    workdir = Path(tempfile.mkdtemp(prefix="echo-e2e-"))
    try:
        settings = rig_settings(
            workdir,
            backend="echo",
            echo_mode="turns",
            greeting="",
            echo_greeting="Hello, I repeat what you say.",
        )
        async with LocalRig(settings, workdir / "truth") as rig:
            rows = []
            for i, (delay, loss) in enumerate(cells):
                echo = (
                    EchoSpec(delay_ms=delay, loss_db=loss) if delay is not None and loss is not None else None
                )
                opts = CallOptions(
                    ring_s=0.2,
                    turns=LINES,
                    caller_start_s=2.5,
                    faults=Faults(echo=echo, noise_dbfs=-60.0, hangup_after_stream_s=seconds),
                )
                rows.append(await rig.place(opts, to=f"+1500555{2000 + i:04d}"))
            truths = await asyncio.gather(
                *[rig.emulator.wait_call(r["call_sid"], timeout=seconds + 60) for r in rows]
            )
            docs = [await rig.settled(r["id"], timeout_s=60) for r in rows]
        out = []
        for (delay, _loss), doc, truth in zip(cells, docs, truths, strict=True):
            m = doc["metrics"]
            # truth from the emulator's own signals: the first arrival and the loss over what the phone played
            echo = (truth.stream or {}).get("echo") if delay is not None else None
            out.append(
                {
                    "delay": echo["direct_delay_ms"] if echo else None,
                    "loss": echo["loss_db"] if echo else None,
                    "flag": m.get("echo_detected"),
                    "m_delay": m.get("echo_delay_ms"),
                    "m_loss": m.get("echo_return_loss_db"),
                    "z": m.get("echo_path_z"),
                }
            )
        return out
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the servers' databases and recordings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two cells and one clean call")
    args = ap.parse_args()
    if args.quick:
        cells: list[tuple[float | None, float | None]] = [(100, 12), (None, None)]
        seconds = 8.0
    else:
        cells = [(d, loss) for d in (40, 100, 200, 400) for loss in (6, 20, 40)] + [(None, None)] * 3
        seconds = 11.0
    started = time.monotonic()
    rows = asyncio.run(run(cells, seconds))
    print(f"echo through the product: {len(cells)} concurrent calls, {time.monotonic() - started:.0f} s wall")
    print(
        f"{'truth delay':>11} {'truth loss':>10} | {'flagged':>7} {'delay ms':>9} {'loss dB':>8} {'err ms':>7}"
        f" {'err dB':>7} {'z':>7}"
    )
    ok = bad = false_flags = 0
    for r in rows:
        flag = bool(r["flag"])
        if r["delay"] is None:
            false_flags += flag
            print(
                f"{'clean':>11} {'-':>10} | {flag!s:>7} {'-':>9} {'-':>8} {'-':>7} {'-':>7} {r['z'] or 0:7.1f}"
            )
            continue
        ed = (r["m_delay"] - r["delay"]) if flag and r["m_delay"] is not None else None
        el = (r["m_loss"] - r["loss"]) if flag and r["m_loss"] is not None else None
        good = flag and ed is not None and abs(ed) <= 1 and el is not None and abs(el) <= 1
        ok += good
        bad += not good
        print(
            f"{r['delay']:>11.0f} {r['loss']:>10.0f} | {flag!s:>7} {r['m_delay'] or 0:9.1f} {r['m_loss'] or 0:8.1f}"
            f" {ed if ed is not None else float('nan'):7.1f} {el if el is not None else float('nan'):7.1f}"
            f" {r['z'] or 0:7.1f}"
        )
    print(f"within tolerance (±1 ms, ±1 dB): {ok}/{ok + bad}; false flags on clean calls: {false_flags}")


if __name__ == "__main__":
    main()
