"""The lifecycle drawn from its table: a Mermaid state diagram for ``docs/lifecycle.md``.

Generated, never edited by hand: ``python -m orchestrator.lifecycle_diagram > docs/lifecycle.md``.
A test fails when the checked-in page and `orchestrator.lifecycle.LIFECYCLE` disagree.
"""

from __future__ import annotations

from orchestrator.lifecycle import LIFECYCLE, CallState, EventType, Noted, To


def _id(state: CallState) -> str:
    return state.value.replace("-", "_")


def mermaid() -> str:
    """The state diagram: one arrow per move (labelled with the events that make it), and for each live
    state a note naming the events it accepts without moving."""
    lines = ["stateDiagram-v2", "    direction LR"]
    lines += [f'    state "{s.value}" as {_id(s)}' for s in CallState if s.value != _id(s)]
    for state, row in LIFECYCLE.items():
        moves: dict[CallState, list[EventType]] = {}
        for event, rule in row.items():
            if isinstance(rule, To):
                moves.setdefault(rule.state, []).append(event)
        for dest, events in moves.items():
            lines.append(f"    {_id(state)} --> {_id(dest)}: {', '.join(e.value for e in events)}")
    for state, row in LIFECYCLE.items():
        stays = [e.value for e, rule in row.items() if isinstance(rule, Noted)]
        if stays:
            lines += [
                f"    note right of {_id(state)}",
                f"        stays on {', '.join(stays)}",
                "    end note",
            ]
    lines += [f"    {_id(s)} --> [*]" for s in CallState if s.terminal]
    return "\n".join(lines)


def page() -> str:
    return "\n".join(
        [
            "# Call lifecycle",
            "",
            "Generated from `orchestrator.lifecycle.LIFECYCLE` by `python -m orchestrator.lifecycle_diagram`;",
            "do not edit by hand. Every pair not drawn is recorded and not accepted: late (`stale: ... after ...`),",
            "impossible from there (`stale: ... cannot follow ...`) or after the end (`terminal: ...`). The call",
            "only moves forward: a stopped stream is noted in the timeline and the call stays `streaming`.",
            "",
            "```mermaid",
            mermaid(),
            "```",
            "",
        ]
    )


if __name__ == "__main__":
    print(page(), end="")
