"""Helpers the benchmark scripts share: percentiles, the machine and its load, a process's CPU and memory.

Benchmarks only: nothing here is imported by the product, and nothing here asserts a speed.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_TICKS = os.sysconf("SC_CLK_TCK")


def pct(values: Iterable[float], q: float, scale: float = 1e3) -> float:
    """The q-th percentile of values times scale (default: seconds -> ms); nan when there are none."""
    a = np.fromiter(values, dtype=np.float64)
    return float(np.percentile(a, q) * scale) if a.size else float("nan")


def machine() -> str:
    """One line: CPU model, core count, Python, and the load average right now (the box is shared)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, {load()}"


def load() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load n/a"
    return f"load avg {one:.2f} (1 min) {five:.2f} (5 min)"


def proc_cpu_split_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    return sum(proc_cpu_split_s(pid))


def steal_s() -> float:
    """CPU seconds the hypervisor gave to other guests, summed over every CPU, since boot (0 if unknown).

    On a shared virtual machine this is the noise in every latency figure: time our processes were
    runnable and a CPU was not ours to run them on.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / _TICKS if len(fields) > 8 else 0.0
    except (OSError, ValueError):
        return 0.0


def proc_rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def calibration_ms() -> float:
    """CPU ms for a fixed pure-Python loop (best of 5): this machine's speed right now, for comparing runs.

    Absolute figures from different days or machines are comparable only scaled by this: the shared
    dev boxes have varied by 4x (an idle EPYC vs a Xeon with a busy hypervisor).
    """
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        x = 0
        for i in range(200_000):
            x += i
        best = min(best, time.process_time() - started)
    return best * 1e3


def header(title: str, quick: bool) -> None:
    print(f"{title}{' (--quick)' if quick else ''}")
    print(f"  {time.strftime('%Y-%m-%d %H:%M')}; {machine()}")
    print(f"  calibration: a 200k-iteration Python loop takes {calibration_ms():.1f} ms CPU (best of 5)\n")
