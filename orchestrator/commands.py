"""The commands that live in their own modules, loaded only when used.

`orchestrator serve` must not pay for importing the emulator, the report renderer or scipy: each
command's module is imported when that command is run (or when `--help` lists them all).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# command name -> module holding a click command or group of that name
LAZY_COMMANDS = {
    "serve": "orchestrator.serve_cli",
    "call": "orchestrator.call_cli",
    "hangup": "orchestrator.call_cli",
    "report": "orchestrator.report_cli",
    "demo": "orchestrator.demo",
    "emulator": "orchestrator.emulator.cli",
    "doctor": "orchestrator.doctor",
    "models": "orchestrator.models_cli",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands in LAZY_COMMANDS are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            command = load(cmd_name)
            self.add_command(command, cmd_name)
        return command


def load(name: str) -> Any:
    module = importlib.import_module(LAZY_COMMANDS[name])
    return getattr(module, name)


def register(group: click.Group) -> None:
    """Import every command now (tests that inspect all commands use this)."""
    for name in LAZY_COMMANDS:
        if name not in group.commands:
            group.add_command(load(name), name)
