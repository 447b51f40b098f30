"""Registers the commands that live in their own modules onto the main CLI group."""

from __future__ import annotations

import importlib

import click

# module path -> attribute holding a click command or group
_COMMANDS = [
    ("orchestrator.serve_cli", "serve"),
    ("orchestrator.call_cli", "call"),
    ("orchestrator.call_cli", "hangup"),
    ("orchestrator.report_cli", "report"),
    ("orchestrator.demo", "demo"),
    ("orchestrator.emulator.cli", "emulator"),
    ("orchestrator.doctor", "doctor"),
    ("orchestrator.models_cli", "models"),
]


def register(group: click.Group) -> None:
    for module_name, attr in _COMMANDS:
        if attr in group.commands:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("orchestrator"):
                continue  # not built yet
            raise
        group.add_command(getattr(module, attr), attr)
