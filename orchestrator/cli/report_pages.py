"""The call pages beside an HTML run report: `r.html` gets `r.calls/<call>.html`, one per call, each with
its recording's two sides as mono WAV files next to it (`<call>.caller.wav`, `<call>.model.wav`).

Why the audio sits beside the page and is not embedded: base64 makes 8 kHz 16-bit audio 21 kB per
second per side, so a 20-second call would add about 0.9 MB to its page, and a 20-call run report
linking such pages stays small only when the pages are. Beside the page, `preload="none"` loads a side
only when it is played; the page still opens and reads without them (the waveform is drawn inline).
With `--redact` no audio is written: the caller's voice is personal data.

This is the one place the report's pages touch files; everything it renders is `orchestrator.report`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator import exits
from orchestrator.report.audio import CallAudio, envelope, mono_wav, split_stereo
from orchestrator.report.call_model import build_call_page
from orchestrator.report.call_page import render_call_page
from orchestrator.report.model import CallReport, Report
from orchestrator.report.svg import dom_id

MAX_RECORDING_BYTES = 200 * 1024 * 1024  # a recording larger than this is not read into memory


def pages_dir(out: Path) -> Path:
    return out.with_name(out.stem + ".calls")


def _audio(doc: Mapping[str, Any], folder: Path, name: str, *, with_audio: bool) -> CallAudio | None:
    path = (doc.get("call") or {}).get("recording_path")
    if not path:
        return None
    if not with_audio:
        return CallAudio({}, {}, 0.0, "recording left out of a redacted report (the caller's voice)")
    rec = Path(str(path))
    try:
        if rec.stat().st_size > MAX_RECORDING_BYTES:
            return CallAudio(
                {}, {}, 0.0, f"recording {rec.name} is over {MAX_RECORDING_BYTES >> 20} MB: not shown"
            )
        caller, model, rate = split_stereo(rec.read_bytes())
    except OSError as exc:
        return CallAudio({}, {}, 0.0, f"recording not readable: {exc.strerror or exc}")
    except ValueError as exc:
        return CallAudio({}, {}, 0.0, f"recording {rec.name}: {exc}")
    hrefs = {}
    for side, pcm in (("caller", caller), ("model", model)):
        target = folder / f"{name}.{side}.wav"
        target.write_bytes(mono_wav(pcm, rate))
        hrefs[side] = target.name
    return CallAudio(
        {"caller": envelope(caller, rate), "model": envelope(model, rate)},
        hrefs,
        len(caller) / rate if rate else 0.0,
    )


def write_call_pages(
    docs: Sequence[Mapping[str, Any]], report: Report, out: Path, *, with_audio: bool = True
) -> dict[str, str]:
    """Write every call's page beside `out`; returns call id -> its href relative to `out`.

    Raises exits.UserError (one line) when the folder or a file in it cannot be written.
    """
    try:
        return _write(docs, report, out, with_audio)
    except OSError as exc:
        raise exits.UserError(
            f"--out {out}: cannot write the call pages in {pages_dir(out)} ({exc.strerror or exc})"
        ) from exc


def rebuilt_twiml(doc: Mapping[str, Any]) -> str | None:
    """The TwiML the call was given, rebuilt from its stored fields (it is not stored as such): the busy
    answer for a call refused busy, else the greeting and the stream with its parameters, the per-call
    token masked. None when the call never got as far (no public URL known)."""
    from orchestrator.twiml import BUSY_MESSAGE, busy_twiml, stream_twiml

    call = doc.get("call") or {}
    if any(e.get("type") == "refused_busy" for e in doc.get("events") or ()):
        return _pretty(busy_twiml(BUSY_MESSAGE))
    public_url = (doc.get("facts") or {}).get("public_url")
    if not public_url or not call.get("id"):
        return None
    xml = stream_twiml(str(public_url), call_id=str(call["id"]), token="(masked)", say=call.get("say_text"))
    return _pretty(xml)


def _pretty(xml: str) -> str:
    from xml.dom import minidom  # our own TwiML, never a peer's

    lines = minidom.parseString(xml).toprettyxml(indent="  ").splitlines()
    return "\n".join(line for line in lines[1:] if line.strip())  # without the XML declaration


def _write(docs: Sequence[Mapping[str, Any]], report: Report, out: Path, with_audio: bool) -> dict[str, str]:
    folder = pages_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    calls: dict[str, CallReport] = {c.id: c for run in report.runs for c in run.calls}
    links: dict[str, str] = {}
    for doc in docs:
        page = build_call_page(doc)
        call = calls.get(page.call_id)
        if call is None:  # not in this report (another run)
            continue
        name = dom_id(page.call_id)
        html = render_call_page(
            page,
            call,
            audio=_audio(doc, folder, name, with_audio=with_audio),
            run_href=f"../{out.name}",
            offline=bool((doc.get("facts") or {}).get("offline")),
            say_text=(doc.get("call") or {}).get("say_text"),
            twiml=rebuilt_twiml(doc),
        )
        (folder / f"{name}.html").write_text(html, encoding="utf-8")
        links[page.call_id] = f"{folder.name}/{name}.html"
    return links
