"""Echo detection accuracy: injected echo path (delay, loss) vs what `bridge.analysis` measures.

Each cell is a synthetic call (tests/speech.py: espeak-ng speech, 80 ms send bursts, a playout clock,
μ-law, inbound jitter) run through the whole per-call analysis. Conditions: `clean` (the model talks,
the caller is silent), `double-talk` (the caller talks over the model about half of the time), `noise`
(−50 dBFS line noise). Prints truth vs measured per cell and whether echo was flagged, where detection
stops beyond the grid, the false-positive rate on calls without echo, and the analysis time of a
5-minute call (as a ratio of real time).

Usage: PYTHONPATH=. python benchmarks/echo_detection.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.analysis import analyse
from tests.speech import conversation, synth_call

CONDITIONS = {"clean": {}, "double-talk": {"double_talk": True}, "noise": {"noise_dbfs": -50.0}}


def run_call(
    condition: str, echo: tuple[float, float] | None, *, seed: int = 0, duration_s: float = 24.0
) -> dict[str, float]:
    opts = dict(CONDITIONS[condition])
    model, caller = conversation(duration_s, double_talk=bool(opts.pop("double_talk", False)), seed=seed)
    ev, _ = synth_call(
        duration_s=duration_s, model=model, caller=caller, echo=echo, jitter_ms=20.0, seed=seed, **opts
    )
    return analyse(ev).metrics


def grid(delays: list[int], losses: list[int], conditions: list[str]) -> tuple[int, int]:
    print(
        f"{'condition':<12} {'delay':>5} {'loss':>5} | {'flag':>4} {'delay_ms':>9} {'erl_db':>7} "
        f"{'d_err':>6} {'l_err':>6} {'peak':>5} {'segs':>6}  ok"
    )
    ok_cells = total = 0
    for cond in conditions:
        for d in delays:
            for loss in losses:
                m = run_call(cond, (d, loss))
                flag = m["echo_detected"] == 1.0
                md, ml = m.get("echo_delay_ms"), m.get("echo_return_loss_db")
                good = flag and md is not None and ml is not None and abs(md - d) <= 5 and abs(ml - loss) <= 2
                ok_cells += good
                total += 1
                fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
                print(
                    f"{cond:<12} {d:>5} {loss:>5} | {'yes' if flag else 'no':>4} {fmt(md, '9.2f'):>9} "
                    f"{fmt(ml, '7.2f'):>7} {fmt(None if md is None else md - d, '+6.2f'):>6} "
                    f"{fmt(None if ml is None else ml - loss, '+6.2f'):>6} {m['echo_peak']:5.2f} "
                    f"{int(m['echo_segments_flagged']):>2}/{int(m['echo_segments_used']):<3}  {'ok' if good else '--'}"
                )
    return ok_cells, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny grid (CI)")
    args = ap.parse_args()
    if args.quick:
        delays, losses, conds, limits, fp_seeds = [40, 400], [6, 40], ["clean", "double-talk"], [], 2
    else:
        delays, losses, conds = [40, 100, 200, 400], [6, 12, 20, 30, 40], list(CONDITIONS)
        limits, fp_seeds = [45, 50, 55, 60, 65, 70], 10

    print("== echo grid: truth vs measured (tolerance ±5 ms, ±2 dB) ==")
    ok, total = grid(delays, losses, conds)
    print(f"cells within tolerance and flagged: {ok}/{total}")

    if limits:
        print("\n== where detection stops (delay 200 ms, losses beyond the grid) ==")
        grid([200], limits, conds)

    print("\n== false positives on calls without echo ==")
    for cond in conds:
        flagged = sum(run_call(cond, None, seed=s)["echo_detected"] == 1.0 for s in range(fp_seeds))
        print(f"{cond:<12} flagged {flagged}/{fp_seeds}  (rate {flagged / fp_seeds:.2f})")

    dur = 60.0 if args.quick else 300.0
    model, caller = conversation(dur, double_talk=True)
    ev, _ = synth_call(
        duration_s=dur, model=model, caller=caller, echo=(200, 20), noise_dbfs=-50.0, jitter_ms=20.0
    )
    t0 = time.perf_counter()
    analyse(ev)
    took = time.perf_counter() - t0
    print(f"\nanalyse() of a {dur:.0f} s call: {took:.3f} s ({dur / took:.0f}x faster than real time)")


if __name__ == "__main__":
    main()
