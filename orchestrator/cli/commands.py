"""The commands that live in their own modules, loaded only when used.

`orchestrator serve` must not pay for importing the emulator, the report renderer or scipy: each
command's module is imported when that command is run (or when `--help` lists them all).
"""

from __future__ import annotations

import difflib
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

# command name -> module holding a click command or group of that name
LAZY_COMMANDS = {
    "serve": "orchestrator.cli.serve",
    "call": "orchestrator.cli.call",
    "hangup": "orchestrator.cli.call",
    "report": "orchestrator.cli.report",
    "demo": "orchestrator.cli.demo",
    "emulator": "orchestrator.emulator.cli",
    "doctor": "orchestrator.cli.doctor",
    "models": "orchestrator.cli.models",
    "scenario": "orchestrator.cli.scenario",
    "replay": "orchestrator.cli.replay",
    "workers": "orchestrator.cli.workers",
}


#: what `orchestrator --help` lists for each lazy command without importing it (a test keeps these equal
#: to the commands' own first sentences): importing them all took ~2 s (the emulator, scipy)
LAZY_HELP = {
    "serve": "Run the server: Twilio callbacks, TwiML, the media WebSocket, /healthz and /metrics on one port.",
    "call": "Place a call to TO (E.164) and bridge it to the speech backend of the running server.",
    "hangup": "End a live call (status=completed), or cancel one still ringing.",
    "report": "Report test runs: the checklist as a pass/fail matrix, metric summaries, per-call timelines.",
    "demo": "Run whole calls against the built-in carrier emulator and print the report.",
    "emulator": "Run a local Twilio stand-in (REST API, status callbacks, Media Streams) until Ctrl-C.",
    "doctor": "Check settings, thresholds, carrier, database, tunnel, tools and the model cache; say how to fix "
    "what is wrong.",
    "models": "Fetch and inspect the Moshi model files (Hugging Face cache).",
    "scenario": "Run scripted caller scenarios against the carrier emulator and judge every call.",
    "replay": "Feed a recorded call's caller, frame by frame on its recorded timing, to a backend.",
    "workers": "List the workers sharing this database: up, stopped or dead, sessions claimed of their "
    "capacity.",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands in LAZY_COMMANDS are imported on first use."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            loaded = self.commands.get(name)
            if loaded is not None and loaded.hidden:
                continue
            text = (
                loaded.get_short_help_str(limit) if loaded is not None else _shortened(LAZY_HELP[name], limit)
            )
            rows.append((name, text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else "; `orchestrator --help` lists them"
            ctx.fail(f"no command {name!r}{hint}")
        return super().resolve_command(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """click's main, but every failure is one line `error: ...` and an exit code of orchestrator.exits
        (also a usage error, and Ctrl-C: no "Aborted!", no traceback). The same under click's test runner."""
        from orchestrator import exits

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        as_json = "--json" in (sys.argv[1:] if args is None else list(args))
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except (click.exceptions.Abort, KeyboardInterrupt):
            fail("interrupted", exits.INTERRUPTED, as_json, prefix="")
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            fail(exc.format_message() + where, exc.exit_code, as_json)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code, as_json)
        except Exception as exc:
            user_error = exits.translate(exc)  # raised outside a sub-command
            if user_error is None:
                raise
            fail(user_error.format_message(), user_error.exit_code, as_json)
        sys.exit(code if isinstance(code, int) else 0)  # ctx.exit(n) in a command returns n here

    def invoke(self, ctx: click.Context) -> Any:
        """Run the sub-command; an error a user can act on leaves as one line and its exit code."""
        from orchestrator.exits import translate

        try:
            return super().invoke(ctx)
        except Exception as exc:
            user_error = translate(exc)
            if user_error is None or user_error is exc:
                raise
            raise user_error from exc

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            command = load(cmd_name)
            self.add_command(command, cmd_name)
        return command


def _shortened(text: str, limit: int) -> str:
    """`text` cut at a word to fit `limit` characters, as click shortens a loaded command's help."""
    if len(text) <= limit:
        return text
    return text[: limit - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."


def fail(message: str, code: int, as_json: bool, prefix: str = "error: ") -> NoReturn:
    """Leave with one line on stderr; with --json also one JSON document on stdout, for scripts."""
    if as_json:
        click.echo(json.dumps({"error": message, "exit_code": code}))
    click.echo(prefix + message, err=True)
    sys.exit(code)


def load(name: str) -> Any:
    module = importlib.import_module(LAZY_COMMANDS[name])
    return getattr(module, name)


def register(group: click.Group) -> None:
    """Import every command now (tests that inspect all commands use this)."""
    for name in LAZY_COMMANDS:
        if name not in group.commands:
            group.add_command(load(name), name)
