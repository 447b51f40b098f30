"""Child processes that die with the server, however it dies.

`kill -9` of the server runs none of its cleanup, and a `ProcessPoolExecutor` worker blocked on its
call queue never sees end-of-file (it holds that pipe's write end itself), so it lived on, and with it
multiprocessing's resource tracker, which exits only once every holder of its pipe is gone: 13 crashes
once left 26 orphans (~130 MB). A child therefore ends itself in two independent ways:

- on Linux, `PR_SET_PDEATHSIG`: the kernel sends SIGKILL when the thread that started it exits. The
  server starts its worker from the event-loop thread, which lives as long as the process; a child
  started from a short-lived thread would be killed early, which is why the second way exists too;
- everywhere, a daemon thread that watches the parent: when `os.getppid()` is no longer the pid that
  started it (the child was re-parented), it exits at once with `os._exit`.

Then the resource tracker sees its pipe close and exits on its own. A program we start (the tunnel)
gets the death signal through a small exec wrapper (`dying_with_us`): the setting survives `execve`.
Nothing here touches the server's state; `child_init` runs only inside the child.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_INTERVAL_S = 0.25


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(parent_pid: int, interval_s: float = WATCH_INTERVAL_S) -> threading.Thread:
    """Exit this process (status 0, no cleanup: the parent that would want it is gone) once it is no
    longer `parent_pid`'s child."""

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(interval_s):
            if os.getppid() != parent_pid:
                os._exit(0)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


# self-contained (no import of this package: the program may run where it is not importable)
_EXEC_WRAPPER = (
    "import ctypes, os, sys; ctypes.CDLL(None).prctl(1, 9, 0, 0, 0); "
    "os.getppid() == int(sys.argv[1]) or os._exit(0); os.execvp(sys.argv[2], sys.argv[2:])"
)


def dying_with_us(argv: list[str]) -> list[str]:
    """`argv` to start a program that is killed when this process dies (Linux; elsewhere unchanged)."""
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-c", _EXEC_WRAPPER, str(os.getpid()), *argv]


def child_init(parent_pid: int, nice: int = 0) -> None:
    """Initializer for a worker process: die with `parent_pid`, and optionally run at lower priority.

    Ctrl-C in a terminal reaches the whole process group: the worker ignores it (no KeyboardInterrupt
    traceback from the middle of an analysis) and ends when its parent shuts the pool down or dies."""
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(0)
    watch_parent(parent_pid)
    if nice:
        with contextlib.suppress(OSError, AttributeError):
            os.nice(nice)
