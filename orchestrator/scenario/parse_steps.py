"""The caller's `steps:` of a scenario file, one for one onto the emulator's steps.

    steps:
      - say: Hello, can you hear me?          # or say: {wav: hello.wav}
      - wait_for_reply: {timeout_s: 6}        # or just - wait_for_reply
      - silence: 1.5                          # or silence: {seconds: 1.5}
      - barge_in: {after_s: 0.8, text: Sorry to interrupt}
      - dtmf: "123#"                          # or dtmf: {digits: "123#", gap_s: 0.3}
      - hangup

Reads nodes only (and whether a WAV exists); never renders audio.
"""

from __future__ import annotations

import yaml

from orchestrator.emulator.steps import DTMF_DIGITS, BargeIn, Dtmf, Hangup, Say, Silence, Step, WaitForReply
from orchestrator.scenario.nodes import NodeReader, did_you_mean, shown

STEP_KINDS = ("say", "silence", "wait_for_reply", "barge_in", "dtmf", "hangup")
_NEEDS = {
    "say": "text to speak or {wav: FILE}",
    "silence": "a number of seconds",
    "barge_in": "{after_s: SECONDS, text: ...} or {after_s: SECONDS, wav: FILE}",
    "dtmf": "digits, e.g. '123#'",
}


class StepReader(NodeReader):
    def steps(self, node: yaml.Node) -> tuple[Step, ...]:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            got = "an empty list" if isinstance(node, yaml.SequenceNode) else shown(self.value(node))
            raise self.fail(
                node, f"steps must be a list of caller steps ({', '.join(STEP_KINDS)}), got {got}"
            )
        return tuple(self.step(item, f"steps[{i}]") for i, item in enumerate(node.value))

    def step(self, node: yaml.Node, field: str) -> Step:
        body: yaml.Node | None
        if isinstance(node, yaml.ScalarNode):
            kind, body = self.value(node), None
        elif isinstance(node, yaml.MappingNode) and len(node.value) == 1:
            key_node, body = node.value[0]
            kind = self.value(key_node)
        else:
            raise self.fail(
                node, f"{field} must be one step, one of {', '.join(STEP_KINDS)} (e.g. `- say: Hello`)"
            )
        if kind not in STEP_KINDS:
            raise self.fail(node, f"{field}: no step {shown(kind)}{did_you_mean(str(kind), STEP_KINDS)}")
        at = f"{field}.{kind}"
        if body is not None and isinstance(body, yaml.ScalarNode) and self.value(body) is None:
            body = None  # `- wait_for_reply:` with nothing after the colon
        if kind == "hangup":
            if body is not None:
                raise self.fail(body, f"{at} takes nothing (write `- hangup`)")
            return Hangup()
        if kind == "wait_for_reply":
            if body is None:
                return WaitForReply()
            fields = self.mapping(body, at, ("timeout_s",))
            if "timeout_s" in fields:
                return WaitForReply(self.seconds(fields["timeout_s"], f"{at}.timeout_s", positive=True))
            return WaitForReply()
        if body is None:
            raise self.fail(node, f"{at} needs {_NEEDS[kind]}")
        if kind == "say":
            return self.say(body, at)
        if kind == "silence":
            return self.silence(body, at)
        if kind == "barge_in":
            return self.barge_in(body, at)
        return self.dtmf(body, at)

    def say(self, body: yaml.Node, at: str) -> Say:
        if isinstance(body, yaml.ScalarNode):
            return Say(text=self.string(body, at))
        text, wav = self.audio(self.mapping(body, at, ("text", "wav")), body, at)
        return Say(text=text, wav=wav)

    def silence(self, body: yaml.Node, at: str) -> Silence:
        if isinstance(body, yaml.ScalarNode):
            return Silence(self.seconds(body, at))
        fields = self.mapping(body, at, ("seconds",))
        if "seconds" not in fields:
            raise self.fail(body, f"{at}.seconds is missing")
        return Silence(self.seconds(fields["seconds"], f"{at}.seconds"))

    def barge_in(self, body: yaml.Node, at: str) -> BargeIn:
        fields = self.mapping(body, at, ("after_s", "text", "wav", "timeout_s"))
        if "after_s" not in fields:
            raise self.fail(body, f"{at}.after_s is missing (seconds after the model starts speaking)")
        after = self.seconds(fields["after_s"], f"{at}.after_s")
        text, wav = self.audio(fields, body, at)
        timeout = (
            self.seconds(fields["timeout_s"], f"{at}.timeout_s", positive=True)
            if "timeout_s" in fields
            else 8.0
        )
        return BargeIn(after, text, wav, timeout)

    def dtmf(self, body: yaml.Node, at: str) -> Dtmf:
        if isinstance(body, yaml.ScalarNode):
            return Dtmf(self.digits(body, at))
        fields = self.mapping(body, at, ("digits", "gap_s"))
        if "digits" not in fields:
            raise self.fail(body, f"{at}.digits is missing")
        gap = self.seconds(fields["gap_s"], f"{at}.gap_s") if "gap_s" in fields else 0.25
        return Dtmf(self.digits(fields["digits"], f"{at}.digits"), gap)

    def audio(self, fields: dict[str, yaml.Node], node: yaml.Node, at: str) -> tuple[str | None, str | None]:
        if ("text" in fields) == ("wav" in fields):
            raise self.fail(node, f"{at} needs exactly one of text (spoken by espeak-ng) or wav (a file)")
        if "text" in fields:
            return self.string(fields["text"], f"{at}.text"), None
        return None, str(self.wav(fields["wav"], f"{at}.wav"))

    def digits(self, node: yaml.Node, field: str) -> str:
        v = self.value(node)
        if not isinstance(v, str):
            raise self.fail(
                node,
                f"{field} must be a quoted string of keys 0-9 * # A-D (YAML reads 0123 as a number), "
                f"got {shown(v)}",
            )
        if not v or set(v) - DTMF_DIGITS:
            raise self.fail(node, f"{field} must be keys 0-9 * # A-D, got {shown(v)}")
        return v
