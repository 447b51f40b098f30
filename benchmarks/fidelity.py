"""Measurement fidelity through the whole product: server + carrier emulator over real sockets.

Every truth printed here comes from the emulator's own signals and schedule (`orchestrator/emulator`,
which never imports the product's meters): the echo's first arrival and its loss over what was played,
the phone's heard speech and the caller's clean voice located to the sample, the frames it dropped.
The emulator is physically possible: a caller frame leaves only once its last sample exists, the
phone plays nothing before it arrived, echo is mixed on the phone's own sample clock.

Grid: pure echoes (delay x loss), rooms (RT60 x loudspeaker-microphone distance after a bulk delay),
clean calls on noisy lines (-60/-50/-40 dBFS), lost frames, the echo backend in both modes, 10 s calls
and one 60 s call. Per cell: truth, measured, error; then max |error| and false / missed flags.

Usage: python benchmarks/fidelity.py [--quick] [--batch N]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import header, load
from orchestrator.emulator import CallOptions, EchoSpec, Faults, Turn
from orchestrator.rig import LocalRig, rig_settings

LINES = tuple(
    Turn(text=t, answer_timeout_s=4.0, pause_s=0.4)
    for t in (
        "Hello, can you hear me?",
        "Tell me about the weather.",
        "Thank you, goodbye.",
        "One more thing, please.",
    )
)


@dataclass(frozen=True)
class Cell:
    name: str
    faults: Faults
    seconds: float = 10.0
    mode: str = "turns"  # the echo backend's mode


def grid(quick: bool) -> list[Cell]:
    if quick:
        return [
            Cell("pure 300ms/25dB", Faults(echo=EchoSpec(300, 25), noise_dbfs=-60.0), 8.0),
            Cell(
                "room rt60 0.4 1.0m",
                Faults(echo=EchoSpec(60, 15, room=True, rt60_s=0.4, distance_m=1.0)),
                8.0,
            ),
            Cell("clean -40dBFS", Faults(noise_dbfs=-40.0), 8.0),
        ]
    cells = [
        Cell(f"pure {d}ms/{loss}dB", Faults(echo=EchoSpec(d, loss), noise_dbfs=-60.0, seed=i))
        for i, (d, loss) in enumerate(
            (d, loss) for d in (20, 60, 150, 300, 500) for loss in (0, 15, 25, 30, 35)
        )
    ]
    cells += [
        Cell(
            f"room rt60 {rt} {dist}m",
            Faults(
                echo=EchoSpec(
                    60 if dist < 1 else 200, 15 if dist < 1.2 else 20, room=True, rt60_s=rt, distance_m=dist
                ),
                noise_dbfs=-60.0,
                seed=i,
            ),
        )
        for i, (rt, dist) in enumerate((rt, dist) for rt in (0.2, 0.4, 0.6) for dist in (0.3, 1.0, 1.5))
    ]
    cells += [
        Cell(f"clean {nz}dBFS #{k}", Faults(noise_dbfs=float(nz), seed=100 + k))
        for nz in (-60, -50, -40)
        for k in range(7)
    ]
    cells += [
        Cell("lost 5% clean", Faults(loss_rate=0.05, noise_dbfs=-60.0, seed=7)),
        Cell(
            "lost 5% echo 150ms/20dB",
            Faults(loss_rate=0.05, echo=EchoSpec(150, 20), noise_dbfs=-60.0, seed=8),
        ),
        Cell("echo 300ms/25dB at -40dBFS", Faults(echo=EchoSpec(300, 25), noise_dbfs=-40.0, seed=9)),
        Cell(
            "delay mode 150ms/20dB", Faults(echo=EchoSpec(150, 20), noise_dbfs=-60.0, seed=10), mode="delay"
        ),
        Cell(
            "delay mode room 0.4",
            Faults(echo=EchoSpec(100, 15, room=True, rt60_s=0.4, distance_m=1.0), noise_dbfs=-60.0, seed=11),
            mode="delay",
        ),
        Cell("delay mode clean", Faults(noise_dbfs=-50.0, seed=12), mode="delay"),
        Cell("60 s pure 300ms/25dB", Faults(echo=EchoSpec(300, 25), noise_dbfs=-50.0, seed=13), 60.0),
    ]
    return cells


async def run_mode(cells: list[Cell], mode: str, batch: int) -> list[tuple[Cell, dict[str, Any], Any]]:
    workdir = Path(tempfile.mkdtemp(prefix=f"fidelity-{mode}-"))
    try:
        settings = rig_settings(
            workdir,
            backend="echo",
            echo_mode=mode,
            greeting="",
            echo_delay_ms=400.0,
            echo_greeting="Hello, I repeat what you say." if mode == "turns" else None,
        )
        out = []
        async with LocalRig(settings, workdir / "truth") as rig:
            for b in range(0, len(cells), batch):
                part = cells[b : b + batch]
                rows = []
                for i, cell in enumerate(part):
                    opts = CallOptions(
                        ring_s=0.2,
                        turns=LINES,
                        caller_start_s=2.5,
                        faults=_with_hangup(cell.faults, cell.seconds),
                    )
                    rows.append(await rig.place(opts, to=f"+1500555{3000 + b + i:04d}"))
                truths = await asyncio.gather(
                    *[
                        rig.emulator.wait_call(r["call_sid"], timeout=c.seconds + 90)
                        for r, c in zip(rows, part, strict=True)
                    ]
                )
                docs = [await rig.settled(r["id"], timeout_s=90) for r in rows]
                out += list(zip(part, docs, truths, strict=True))
        return out
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the servers' databases and recordings


def _with_hangup(f: Faults, seconds: float) -> Faults:
    from dataclasses import replace

    return replace(f, hangup_after_stream_s=seconds)


def judge(cell: Cell, doc: dict[str, Any], truth: Any) -> dict[str, Any]:
    m, stream = doc["metrics"], truth.stream or {}
    r: dict[str, Any] = {"cell": cell.name, "flag": bool(m.get("echo_detected")), "z": m.get("echo_path_z")}
    echo = stream.get("echo")
    if echo:
        r["t_delay"], r["t_loss"] = echo["direct_delay_ms"], echo["loss_db"]
        if r["flag"]:
            r["e_delay"] = m["echo_delay_ms"] - echo["direct_delay_ms"]
            if echo["loss_db"] is not None and m.get("echo_return_loss_db") is not None:
                r["e_loss"] = m["echo_return_loss_db"] - echo["loss_db"]
    r["room"] = bool(cell.faults.echo and cell.faults.echo.room)
    first = stream.get("first_heard_speech_onset")
    if first and m.get("first_audio_heard_ms") is not None:
        # the metric counts from the server's receipt of `start`; the truth from the phone's: the
        # server's own inbound offset is that transit (the frame's packetization taken out)
        r["e_first"] = m["first_audio_heard_ms"] - m["inbound_media_offset_ms"] - first["onset_ms"]
    if cell.mode == "turns":
        # A turn is the same turn when the caller's end agrees (to 50 ms, on the phone's clock) and so
        # does the model's next onset; then its latency error counts. Otherwise product and truth
        # segmented the speech differently: counted apart, with what each saw.
        to_phone = -m.get("inbound_media_offset_ms", 0.0)
        truth_turns = _truth_turns(stream)
        measured = [(t[0] * 1000.0 + to_phone, t[2]) for t in (doc.get("analysis") or {}).get("turns", [])]
        errs, unmatched = [], 0
        for end, lat in measured:
            same = [
                t_lat for t_end, t_lat in truth_turns if abs(t_end - end) <= 50 and abs(t_lat - lat) <= 50
            ]
            if same:
                errs.append(lat - same[0])
            else:
                unmatched += 1
        unmatched += max(0, len(truth_turns) - len(errs) - unmatched)
        r["e_turns"], r["turns_disagree"] = errs, unmatched
    r["e_gaps"] = m.get("lost_frames", 0) - len(stream.get("frames_lost") or [])
    return r


def _truth_turns(stream: dict[str, Any]) -> list[tuple[float, float]]:
    """(caller end, latency) per caller utterance the phone heard an answer to, from the emulator."""
    heard = [h["onset_ms"] for h in stream.get("heard_speech") or []]
    out = []
    for seg in stream.get("caller_speech") or []:
        later = [h for h in heard if h > seg["end_ms"]]
        if later:
            out.append((seg["end_ms"], later[0] - seg["end_ms"]))
    return out


def fmt(v: float | None, spec: str = "7.1f") -> str:
    return format(v, spec) if v is not None else format("-", ">" + spec.split(".")[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="three 8 s cells: a pure echo, a room, a -40 dBFS line"
    )
    ap.add_argument("--batch", type=int, default=12, help="concurrent calls per batch")
    args = ap.parse_args()
    header("measurement fidelity through the product", args.quick)
    cells = grid(args.quick)
    started = time.monotonic()
    results = []
    for mode in ("turns", "delay"):
        part = [c for c in cells if c.mode == mode]
        if part:
            results += [judge(c, d, t) for c, d, t in asyncio.run(run_mode(part, mode, args.batch))]
    print(f"{len(cells)} calls in {time.monotonic() - started:.0f} s wall; {load()}")
    print(
        f"{'cell':<28} {'flag':>5} {'t ms':>7} {'t dB':>6} {'err ms':>7} {'err dB':>7} {'z':>7} {'first':>7} turns(err ms)"
    )
    for r in results:
        turns = ",".join(f"{e:+.0f}" for e in r.get("e_turns", [])) or "-"
        if r.get("turns_disagree"):
            turns += f" ({r['turns_disagree']} segmented differently)"
        print(
            f"{r['cell']:<28} {r['flag']!s:>5} {fmt(r.get('t_delay'))} {fmt(r.get('t_loss'), '6.1f')}"
            f" {fmt(r.get('e_delay'))} {fmt(r.get('e_loss'))} {fmt(r.get('z'))} {fmt(r.get('e_first'))} {turns}"
            + (f" gaps {r['e_gaps']:+d}" if r["e_gaps"] else "")
        )
    echo_cells = [r for r in results if "t_delay" in r]
    found = [r for r in echo_cells if r["flag"]]
    eligible = [r for r in echo_cells if r["t_loss"] is not None and r["t_loss"] <= 30.5]

    def worst(key: str, rows: list[dict[str, Any]]) -> float:
        vals = [abs(r[key]) for r in rows if r.get(key) is not None]
        return max(vals) if vals else float("nan")

    pure = [r for r in found if not r["room"]]
    rooms = [r for r in found if r["room"]]
    clean = [r for r in results if "t_delay" not in r]
    turn_errs = [abs(e) for r in results for e in r.get("e_turns", [])]
    print(
        f"echo delay max |err|: pure {worst('e_delay', pure):.2f} ms, room {worst('e_delay', rooms):.2f} ms;"
        f" loss max |err|: pure {worst('e_loss', pure):.2f} dB, room {worst('e_loss', rooms):.2f} dB"
    )
    print(
        f"echo found: {sum(r['flag'] for r in eligible)}/{len(eligible)} cells with loss <= 30 dB "
        f"({len(found)}/{len(echo_cells)} all); false flags on clean calls: {sum(r['flag'] for r in clean)}"
        f"/{len(clean)}; path z: clean calls max {max((r['z'] or 0 for r in clean), default=0):.1f}, echoes found"
        f" min {min((r['z'] or 0 for r in found), default=0):.1f} (detection at 9)"
    )
    print(
        f"first audio heard max |err|: {worst('e_first', results):.1f} ms; response latency per turn max |err|:"
        f" {max(turn_errs) if turn_errs else float('nan'):.1f} ms over {len(turn_errs)} turns"
        f" ({sum(r.get('turns_disagree', 0) for r in results)} segmented differently);"
        f" gap count errors: {sum(1 for r in results if r['e_gaps'])}"
    )


if __name__ == "__main__":
    main()
