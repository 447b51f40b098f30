"""Startup: `orchestrator serve` spawned -> `/healthz` answers 200, against baselines in the same run.

Timed from the moment the process is spawned (fork + exec + imports + migrations on a fresh database +
bind) to the first 200 from GET /healthz on 127.0.0.1, polled every 5 ms. Baselines, each spawned the
same way: the bare interpreter (`python -c pass`) and a bare aiohttp app answering /healthz. Without
`--quick`, the same with the Moshi backend and the tiny generated model already in a Hugging Face cache
(its weights are written once, untimed). Target: under 1 s without a model.

Usage: python benchmarks/startup.py [--quick] [--repeats 5] [--no-model]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, header

BARE_APP = """
import sys
from aiohttp import web
async def healthz(request):
    return web.json_response({"ok": True})
app = web.Application()
app.router.add_get("/healthz", healthz)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def time_to_healthy(cmd: list[str], port: int, env: dict[str, str], limit_s: float = 60.0) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < limit_s:
            if healthy(port):
                return time.perf_counter() - t0
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[:4]} exited with {proc.returncode} before /healthz answered")
            time.sleep(0.005)
        raise RuntimeError(f"{cmd[:4]} not healthy within {limit_s} s")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def time_exit(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    return time.perf_counter() - t0


def serve_cmd(port: int, db: Path, backend: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "orchestrator",
        "serve",
        "--port",
        str(port),
        "--db",
        str(db),
        "--backend",
        backend,
    ]


def summary(name: str, xs: list[float], base: float | None) -> None:
    med = statistics.median(xs)
    ratio = f"  {med / base:5.2f} x bare aiohttp" if base else ""
    print(
        f"  {name:52} median {1e3 * med:7.0f} ms  min {1e3 * min(xs):7.0f} ms  max {1e3 * max(xs):7.0f} ms{ratio}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (CI): 1 repeat, no model")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-model", action="store_true", help="skip the tiny-model case")
    a = ap.parse_args()
    repeats = 1 if a.quick else a.repeats
    header("Startup: spawn -> /healthz answers 200", a.quick)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TWILIO_AUTH_TOKEN": "bench-token", "HF_HUB_OFFLINE": "1"}
    env.pop("PUBLIC_URL", None)  # no tunnel probe
    results: dict[str, list[float]] = {
        "python -c pass (interpreter only)": [],
        "bare aiohttp app": [],
        "orchestrator serve, echo backend, fresh database": [],
        "serve entry point alone (no other commands imported)": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        for i in range(repeats):
            results["python -c pass (interpreter only)"].append(
                time_exit([sys.executable, "-c", "pass"], env)
            )
            port = free_port()
            results["bare aiohttp app"].append(
                time_to_healthy([sys.executable, "-c", BARE_APP, str(port)], port, env)
            )
            port = free_port()
            results["orchestrator serve, echo backend, fresh database"].append(
                time_to_healthy(
                    serve_cmd(port, work / f"fresh-{i}.db", "echo"),
                    port,
                    {**env, "ORCHESTRATOR_RECORDINGS_DIR": str(work / "rec")},
                )
            )
            # The same command through its own module only: what `orchestrator serve` would cost if the
            # CLI did not import every other command (the emulator's pulls in scipy) first.
            port = free_port()
            cmd = [
                sys.executable,
                "-c",
                "from orchestrator.cli.serve import serve; serve()",
                *serve_cmd(port, work / f"direct-{i}.db", "echo")[4:],
            ]
            results["serve entry point alone (no other commands imported)"].append(
                time_to_healthy(cmd, port, env)
            )
        if not a.quick and not a.no_model:
            try:
                sys.path.insert(0, str(ROOT))
                from tests.moshi.conftest import TINY_REPO, write_tiny_repo

                t0 = time.perf_counter()
                repo = write_tiny_repo(work / "hf")
                print(
                    f"(tiny model written to a Hugging Face cache in {time.perf_counter() - t0:.1f} s, untimed)"
                )
                menv = {
                    **env,
                    "HF_HUB_CACHE": str(repo.cache_dir),
                    "MOSHI_HF_REPO": TINY_REPO,
                    "MOSHI_QUANTIZE": "none",
                }
                key = "orchestrator serve, moshi backend, tiny model cached"
                results[key] = []
                for i in range(repeats):
                    port = free_port()
                    results[key].append(
                        time_to_healthy(serve_cmd(port, work / f"m-{i}.db", "moshi"), port, menv, limit_s=180)
                    )
            except Exception as exc:
                print(f"(tiny-model case skipped: {type(exc).__name__}: {exc})")
    print(f"{repeats} run(s) each:")
    base = statistics.median(results["bare aiohttp app"])
    for name, xs in results.items():
        if xs:
            summary(name, xs, base if "serve" in name else None)


if __name__ == "__main__":
    main()
