"""Exit codes of every `orchestrator` command, and the one-line error a user sees.

CI scripts branch on these, so they mean the same thing in every command:

    0    done, and what it found or caused is a success
    1    done, but the outcome is not a success (a call that ended busy, a FIX from doctor, a failed
         criterion in the demo, an unmet expectation of a scenario): the output says which
    2    nothing done: fix the command line, a setting, a file or the database (the message says which)
    3    nothing done: something outside did not cooperate (the carrier, a port, the network)
    130  interrupted (Ctrl-C)

`UserError` is how a failure leaves a command: click prints it as `error: <one line>` on stderr and
exits with its code. `translate()` turns the package's own errors (orchestrator.errors) into one.
"""

from __future__ import annotations

import errno
import socket
import sqlite3

import click

from orchestrator.errors import OrchestratorError, Unavailable

OK = 0
OUTCOME = 1
USAGE = 2
UNAVAILABLE = 3
INTERRUPTED = 130


class UserError(click.ClickException):
    """One line on stderr, `error: ...`, and an exit code from the table above."""

    def __init__(self, message: str, exit_code: int = USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class; ours vary

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def translate(exc: BaseException) -> UserError | None:
    """The UserError for an error a user can act on; None for anything else (a bug keeps its traceback)."""
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, Unavailable):
        return UserError(str(exc), UNAVAILABLE)
    if isinstance(exc, OrchestratorError):
        return UserError(str(exc), USAGE)
    if isinstance(exc, sqlite3.Error):
        return UserError(f"database problem: {exc}", USAGE)
    if type(exc).__module__.split(".")[0] == "psycopg":  # the PostgreSQL store, once open (no import here)
        if getattr(exc, "sqlstate", None) is None:  # no answer from the server: its connection was lost
            return UserError(f"PostgreSQL stopped answering: {str(exc).splitlines()[0][:200]}", UNAVAILABLE)
        return UserError(f"database problem: {str(exc).splitlines()[0][:200]}", USAGE)
    from bridge.backends.base import BackendError  # a missing model file, the moshi extra not installed

    if isinstance(exc, BackendError):
        return UserError(str(exc), USAGE)
    return None


def listen_error(exc: OSError, host: str, port: int, what: str, port_option: str = "--port") -> Unavailable:
    """Binding `host:port` failed: say why in words and what to change."""
    if isinstance(exc, socket.gaierror):
        return Unavailable(
            f"cannot start {what}: host {host!r} does not resolve; use an address of this machine "
            "(127.0.0.1, 0.0.0.0) or a name that resolves to one"
        )
    if exc.errno == errno.EADDRINUSE:
        return Unavailable(
            f"cannot start {what}: port {port} on {host} is already in use (another server?); "
            f"stop it or choose another {port_option} (0 = any free port)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return Unavailable(
            f"cannot start {what}: {host} is not an address of this machine; use 127.0.0.1, "
            "0.0.0.0 or one of its own addresses"
        )
    if exc.errno == errno.EACCES:
        return Unavailable(
            f"cannot start {what}: not allowed to listen on port {port} (ports below 1024 need "
            f"privileges); choose another {port_option}"
        )
    return Unavailable(f"cannot start {what} on {host}:{port}: {exc.strerror or exc}")


def epilog(
    outcome: str | None = None, unavailable: str | None = "the carrier, a port or the network did not answer"
) -> str:
    """The 'Exit codes' paragraph of a command's --help; `outcome` says what exit 1 means there."""
    lines = ["Exit codes: 0 done"]
    if outcome:
        lines.append(f"  1 {outcome}")
    lines.append("  2 nothing done: fix the command line, a setting, a file or the database")
    if unavailable:  # None: the command asks nothing outside this machine
        lines.append(f"  3 nothing done: {unavailable}")
    lines.append("  130 interrupted")
    return "\b\n" + "\n".join(lines)
