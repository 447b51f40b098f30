"""The call page: one self-contained HTML file per call, the page a telephony engineer opens first.

Summary band (like Voice Insights' call summary), the checklist with checks that cannot apply offline
shown as "n/a" and counted apart, quality per direction with an E-model MOS and its inputs, everything
on one time axis (`call_svg`), an `<audio>` player per side, the model's transcript, and the request
inspector (the webhooks we answered). Inline CSS and SVG; no script, nothing fetched. The audio is the
one thing beside the page (`CallAudio.hrefs`): see `orchestrator.cli.report_pages` for why.

Pure string building: never writes the file, never reads a clock.
"""

from __future__ import annotations

from html import escape

from orchestrator.report.audio import CallAudio
from orchestrator.report.call_model import CallPage
from orchestrator.report.call_svg import (
    CLEAR,
    ECHO,
    FLUSHED,
    GAP,
    HANGUP,
    JITTER,
    MARK,
    MIN_WIDTH_PX,
    UNDERRUN,
    call_axis_svg,
)
from orchestrator.report.model import CallReport, Cell
from orchestrator.report.svg import CALLER, MODEL, STATE_COLOURS
from orchestrator.report.text import LABELS

CSS = f"""
:root {{ --pass:#1a7f37; --pass-bg:#dafbe1; --fail:#cf222e; --fail-bg:#ffebe9; --unknown:#6e7781;
  --unknown-bg:#eaeef2; --na-bg:#f6f8fa; --ink:#24292f; --muted:#57606a; --line:#d0d7de; }}
* {{ box-sizing: border-box; }}
body {{ font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink);
  margin: 0; background: #f6f8fa; }}
header {{ background: #24292f; color: #fff; padding: 18px 28px; }}
header h1 {{ margin: 0 0 4px; font-size: 24px; }} header p {{ margin: 0; color: #d0d7de; }}
header a {{ color: #9ecbff; }}
main {{ padding: 8px 28px 40px; max-width: 1400px; }}
section {{ background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 20px; margin: 16px 0; }}
h2 {{ margin: 2px 0 10px; font-size: 18px; }}
.band {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 10px; }}
.band div {{ border-left: 4px solid #0969da; padding: 2px 10px; }}
.band b {{ display: block; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }}
.cols {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 16px 28px; }}
table.quality, #mos table {{ width: 100%; }} table.quality td:first-child {{ white-space: nowrap; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: left; font-size: 13px; vertical-align: top; }}
td.num {{ text-align: right; white-space: nowrap; }}
.badge {{ display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; }}
.badge.pass {{ background: var(--pass); }} .badge.fail {{ background: var(--fail); }}
.badge.unknown {{ background: var(--unknown); }} .badge.na {{ background: #afb8c1; color: #24292f; }}
.badge.manual {{ background: #8250df; }}
ul.verdicts {{ list-style: none; padding: 0; margin: 0; columns: 2 360px; column-gap: 28px; font-size: 13px; }}
ul.verdicts li {{ break-inside: avoid; margin: 0 0 5px; }}
.mos {{ font-size: 32px; font-weight: 700; }}
.legend {{ display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 13px; margin: 4px 0 10px; }}
.legend .sw {{ display: inline-block; width: 14px; height: 14px; border-radius: 3px; vertical-align: -2px; margin-right: 5px; }}
.scroll {{ overflow-x: auto; }}
svg.call-axis {{ width: 100%; min-width: {MIN_WIDTH_PX}px; height: auto; display: block; }}
svg .lane {{ font-weight: 600; fill: var(--muted); }} svg .on-colour {{ font-weight: 600; }}
svg .echo-label {{ font-weight: 700; }}
audio {{ width: 100%; max-width: 520px; }}
.none {{ color: var(--muted); font-style: italic; }}
details summary {{ cursor: pointer; color: #0969da; }}
code, pre {{ font-size: 12px; }}
"""


def _badge(cls: str, text: str) -> str:
    return f'<span class="badge {escape(cls)}">{escape(text)}</span>'


def is_na(cell: Cell, facts_offline: bool, backend: str | None) -> bool:
    """An unknown that cannot be otherwise here: no tunnel offline, no model to load for this backend."""
    if cell.status != "unknown":
        return False
    if cell.criterion == "tunnel_exposed" and facts_offline:
        return True
    return cell.criterion == "model_loads_quickly" and "no model" in cell.evidence


def _checklist(call: CallReport, offline: bool) -> str:
    items, counts = [], {"pass": 0, "fail": 0, "unknown": 0, "na": 0}
    for cell in call.cells:
        status = "na" if is_na(cell, offline, call.backend) else cell.status
        counts[status] = counts.get(status, 0) + 1
        shown = "n/a" if status == "na" else status
        manual = f" {_badge('manual', 'manual')}" if cell.decided_by == "manual" else ""
        items.append(
            f'<li data-criterion="{escape(cell.criterion)}" data-status="{escape(status)}">{_badge(status, shown)}'
            f"{manual} <b>{escape(LABELS.get(cell.criterion, cell.criterion))}</b>: {escape(cell.evidence)}</li>"
        )
    judged = counts["pass"] + counts["fail"]
    head = (
        f'<p class="counts">{counts["pass"]}/{judged} judged checks pass · {counts["na"]} n/a (cannot apply '
        f"offline or to this backend) · {counts['unknown']} unknown (evidence missing)</p>"
    )
    return (
        f'<section id="checks"><h2>Checklist</h2>{head}<ul class="verdicts">{"".join(items)}</ul></section>'
    )


def _summary(page: CallPage) -> str:
    cells = "".join(f"<div><b>{escape(k)}</b>{escape(v)}</div>" for k, v in page.summary)
    return f'<section id="summary"><h2>Summary</h2><div class="band">{cells}</div></section>'


def _quality(page: CallPage) -> str:
    tables = []
    for q in page.quality:
        rows = "".join(f'<tr><td>{escape(k)}</td><td class="num">{escape(v)}</td></tr>' for k, v in q.rows)
        tables.append(f'<div><h2>{escape(q.direction)}</h2><table class="quality">{rows}</table></div>')
    if page.mos is not None:
        r = page.mos
        inputs = (
            ("lost audio Ppl", f"{r.inputs.loss_pct:.2f} %"),
            (
                "one-way delay Ta (transit + 20 ms frame + 2 × mean jitter)",
                f"{r.inputs.one_way_delay_ms:.1f} ms",
            ),
            ("Ie (G.711)", f"{r.inputs.ie:g}"),
            ("Bpl (G.711, random loss, G.113 App. I)", f"{r.inputs.bpl:g}"),
            ("BurstR", f"{r.inputs.burst_r:g}"),
            ("Ie,eff", f"{r.ie_eff:.1f}"),
            ("Id (delay)", f"{r.id:.1f}"),
            ("R = 93.2 − Id − Ie,eff", f"{r.r:.1f}"),
        )
        rows = "".join(f'<tr><td>{escape(k)}</td><td class="num">{escape(v)}</td></tr>' for k, v in inputs)
        mos = (
            f'<div id="mos"><h2>MOS estimate, inbound leg (ITU-T G.107 E-model)</h2>'
            f'<p><span class="mos">{r.mos:.2f}</span> of 4.5 (R {r.r:.1f})</p><table>{rows}</table>'
            '<p class="none">Outbound leg: n/a (what reached the phone is not visible to the server).</p></div>'
        )
    else:
        mos = f'<div id="mos"><h2>MOS estimate</h2><p class="none">n/a: {escape(page.mos_na)}</p></div>'
    return f'<section id="quality"><div class="cols">{"".join(tables)}{mos}</div></section>'


def _legend() -> str:
    chips = [
        (CALLER, "caller (inbound)"),
        (MODEL, "model (outbound)"),
        (ECHO, "echo estimate"),
        (GAP, "lost audio (gap)"),
        (UNDERRUN, "underrun"),
        (MARK, "mark played"),
        (FLUSHED, "mark flushed"),
        (CLEAR, "clear"),
        (HANGUP, "hang-up / rejected request"),
        (JITTER, "jitter"),
    ]
    chips += [(c, s) for s, c in STATE_COLOURS.items()]
    return (
        '<div class="legend">'
        + "".join(
            f'<span><span class="sw" style="background:{c}"></span>{escape(t)}</span>' for c, t in chips
        )
        + "</div>"
    )


def _audio(audio: CallAudio | None, page: CallPage) -> str:
    if audio is None or not audio.hrefs:
        why = (
            audio.note
            if audio and audio.note
            else (
                "no recording stored with this call"
                if not page.recording_path
                else "recording not found beside the report"
            )
        )
        return f'<section id="audio"><h2>Listen</h2><p class="none">{escape(why)}</p></section>'
    players = "".join(
        f"<p><b>{escape(side)}</b> ({'left' if side == 'caller' else 'right'} channel of the recording)<br>"
        f'<audio controls preload="none" src="{escape(href)}"></audio></p>'
        for side, href in audio.hrefs.items()
    )
    note = (
        f"{audio.duration_s:.1f} s per side, 8 kHz 16-bit mono WAV files beside this page (loaded only "
        "when played; embedding them would make the page about 21 kB larger per second of call)."
    )
    return f'<section id="audio"><h2>Listen</h2>{players}<p class="none">{escape(note)}</p></section>'


def _transcript(page: CallPage) -> str:
    if not page.transcript:
        return '<section id="transcript"><h2>Model transcript</h2><p class="none">The backend produced no text.</p></section>'
    rows = "".join(
        f'<tr><td class="num">{t:.2f} s</td><td>{escape(text)}</td></tr>' for t, text in page.transcript
    )
    return (
        '<section id="transcript"><h2>Model transcript (when each phrase was produced, s since stream start)</h2>'
        f"<table>{rows}</table></section>"
    )


def _inspector(page: CallPage, say_text: str | None, twiml_text: str | None = None) -> str:
    if not page.webhooks:
        body = '<p class="none">No webhooks recorded for this call.</p>'
    else:
        keys = (
            "CallStatus",
            "StreamEvent",
            "SequenceNumber",
            "SipResponseCode",
            "CallDuration",
            "AnsweredBy",
            "StreamError",
        )
        rows = []
        for h in page.webhooks:
            p = dict(h.params)
            key = " · ".join(f"{k}={p[k]}" for k in keys if k in p)
            allp = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in h.params)
            rows.append(
                f'<tr class="hook"><td class="num">{h.t_s:+.3f} s</td><td>{escape(h.source)}</td><td>{escape(h.type)}</td>'
                f"<td>{escape(h.answer)}</td><td>{escape(key)}<details><summary>{len(h.params)} parameters</summary>"
                f"<table>{allp}</table></details></td></tr>"
            )
        body = (
            "<table><thead><tr><th>at</th><th>endpoint</th><th>event</th><th>we answered</th><th>request</th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>"
        )
    if twiml_text:
        twiml = (
            "<p>TwiML the call was given (rebuilt from the call's stored fields; the per-call token masked):</p>"
            f"<pre>{escape(twiml_text)}</pre>"
        )
    else:
        twiml = (
            f"<p>TwiML: not stored with the call; it said “{escape(say_text)}” then opened the stream.</p>"
            if say_text
            else "<p>TwiML: not stored with the call.</p>"
        )
    note = (
        '<p class="none">Answers follow the server\'s rules (204 for a callback applied or a duplicate, 403 for a bad '
        "signature, 400 for refused identifiers); the time taken to answer is not recorded.</p>"
    )
    return f'<section id="inspector"><h2>Request inspector: webhooks we answered</h2>{body}{twiml}{note}</section>'


def render_call_page(
    page: CallPage,
    call: CallReport,
    *,
    audio: CallAudio | None = None,
    run_href: str | None = None,
    offline: bool = False,
    say_text: str | None = None,
    twiml: str | None = None,
) -> str:
    """The call page as one HTML document."""
    back = f' · <a href="{escape(run_href)}">back to the run report</a>' if run_href else ""
    envelopes = audio.envelopes if audio else None
    axis = (
        '<section id="axis"><h2>Timeline: one axis, seconds since the stream started '
        f"(time 0 = {escape(page.origin)}; negative = before)</h2>{_legend()}"
        f'<div class="scroll">{call_axis_svg(page, envelopes)}</div></section>'
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(page.title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(page.title)}</h1><p>{escape(call.call_sid or 'no CallSid')}{back}</p></header><main>"
        + _summary(page)
        + _checklist(call, offline)
        + _quality(page)
        + axis
        + _audio(audio, page)
        + _transcript(page)
        + _inspector(page, say_text, twiml)
        + "</main></body></html>\n"
    )
