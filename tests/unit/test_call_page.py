"""The call page, from synthetic documents whose schedule we wrote (orchestrator.report.samples): the
summary band's delays against that schedule, the time axis against the stored stream events, checks
that cannot apply offline counted apart, the transcript without sentencepiece specials, the audio
beside the page against a closed-form recording."""

from __future__ import annotations

import copy
import re
import wave
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.cli.report_pages import pages_dir, write_call_pages
from orchestrator.report import build_report, render_html
from orchestrator.report.audio import CallAudio, envelope
from orchestrator.report.call_model import build_call_page
from orchestrator.report.call_page import render_call_page
from orchestrator.report.samples import LOST_MEDIA_MS, MEDIA_OFFSET_S, sample_docs

STREAM_AT = 3.0 + 2.45  # samples: answered at 3.0 s, stream `start` 2.45 s later (since creation)


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def cls(self, name: str) -> list[dict[str, str]]:
        return [a for _, a in self.tags if name in a.get("class", "").split()]


def _page(doc: dict[str, Any], audio: CallAudio | None = None) -> str:
    call = build_report([doc]).runs[0].calls[0]
    return render_call_page(build_call_page(doc), call, audio=audio, offline=True, say_text="Hi.")


@pytest.fixture
def docs() -> list[dict[str, Any]]:
    return sample_docs()


def test_summary_band_reads_the_schedule_of_the_call(docs: list[dict[str, Any]]) -> None:
    summary = dict(build_call_page(docs[0]).summary)
    assert summary["post-dial delay"] == "500 ms (initiated → ringing)"  # initiated 0.4 s, ringing 0.9 s
    assert summary["ring time"] == "2100 ms (ringing → answered)"  # answered at 3.0 s
    assert summary["SIP response"] == "200"
    assert summary["from → to"] == "…0006 → …0010"  # masked as the report masks them
    assert summary["hang-up"] == "the far end hung up (the carrier sent the stream `stop`)"
    assert summary["codec"].startswith("PCMU (G.711 μ-law), 8 kHz")
    assert summary["backend · model"] == "moshi · model not recorded"
    busy = dict(build_call_page(docs[2]).summary)
    assert (busy["hang-up"], busy["SIP response"]) == ("never answered: busy", "486")
    assert busy["post-dial delay"] == "790 ms (queued → ringing)"  # no initiated callback: from the create
    assert build_call_page(docs[2]).origin == "the call was created (it never streamed)"


def test_the_axis_counts_from_the_stream_start(docs: list[dict[str, Any]]) -> None:
    page = build_call_page(docs[0])
    assert page.origin == "the media stream's `start` was received"
    hooks = {(h.type, round(h.t_s, 3)) for h in page.webhooks}
    assert ("initiated", round(0.4 - STREAM_AT, 3)) in hooks and (
        "ringing",
        round(0.9 - STREAM_AT, 3),
    ) in hooks
    duplicate = [h for h in page.webhooks if h.answer == "204 duplicate (ignored)"]
    assert [(h.type, round(h.t_s, 3)) for h in duplicate] == [("in-progress", round(3.5 - STREAM_AT, 3))]
    speech = [(i.t_s, i.t_s + i.dur_s) for i in page.items if i.lane == "model"]
    assert speech == [tuple(s) for s in docs[0]["analysis"]["outbound_segments"]]  # stored on this clock


def test_gaps_underruns_and_clears_sit_where_the_stream_put_them(docs: list[dict[str, Any]]) -> None:
    dom = _Dom()
    dom.feed(_page(docs[1]))
    gaps = [(float(a["data-t"]), float(a["data-dur"])) for a in dom.cls("gap")]
    assert gaps == [(round(ms / 1000 + MEDIA_OFFSET_S, 3), 0.02) for ms in LOST_MEDIA_MS]
    assert len(dom.cls("underrun")) == 1 and len(dom.cls("clear")) == 1
    assert len(dom.cls("mark")) + len(dom.cls("mark-flushed")) == 2 * len(
        docs[1]["analysis"]["outbound_segments"]
    )
    panels = {a["data-panel"]: int(a["data-points"]) for a in dom.cls("panel")}
    assert panels["events"] > 0 and panels["jitter"] == len(docs[1]["analysis"]["stream"]["jitter"])
    assert panels["levels"] == sum(len(v) for v in docs[1]["analysis"]["levels"].values())
    assert len(dom.cls("echo-band")) == len(docs[1]["analysis"]["outbound_segments"])
    assert len(dom.cls("hangup-rule")) == 1


def test_checks_that_cannot_apply_offline_are_counted_apart(docs: list[dict[str, Any]]) -> None:
    html = _page(docs[0])
    dom = _Dom()
    dom.feed(html)
    statuses = {a["data-criterion"]: a["data-status"] for _, a in dom.tags if "data-status" in a}
    assert statuses["tunnel_exposed"] == "na"  # offline: no tunnel in the path
    assert "unknown" not in statuses.values()
    passed = sum(1 for s in statuses.values() if s == "pass")
    judged = sum(1 for s in statuses.values() if s in ("pass", "fail"))
    assert f"{passed}/{judged} judged checks pass · 1 n/a" in html


def test_transcript_is_on_the_axis_without_special_pieces(docs: list[dict[str, Any]]) -> None:
    page = build_call_page(docs[0])
    starts = [s for s, _ in docs[0]["analysis"]["outbound_segments"]]
    # each reply's pieces come 40 ms apart from its start; the first, `<s>`, is not text
    assert page.transcript == tuple((round(s + 0.04, 3), "Hello, how are you?") for s in starts)
    html = _page(docs[0])
    assert "&lt;s&gt;" not in html and "&lt;/s&gt;" not in html and "▁" not in html
    assert html.count('class="said"') == len(starts)


def test_mos_is_the_e_model_of_the_measured_loss_and_delay(docs: list[dict[str, Any]]) -> None:
    page = build_call_page(docs[1])
    frames = docs[1]["analysis"]["stream"]["inbound_frames"]
    assert page.mos is not None
    ppl = 100 * 2 / (frames + 2)  # two frames lost
    assert page.mos.inputs.loss_pct == pytest.approx(ppl)
    assert page.mos.inputs.one_way_delay_ms == pytest.approx(12 + 20 + 2 * 3.2)
    r = 93.2 - 95 * ppl / (ppl + 4.3)
    assert page.mos.mos == pytest.approx(1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6)
    assert f"{page.mos.mos:.2f}" in _page(docs[1])
    assert build_call_page(docs[2]).mos is None  # busy: nothing to rate, said so
    assert "n/a: no inbound audio measured" in _page(docs[2])


def test_page_is_self_contained_and_escapes_what_documents_say(docs: list[dict[str, Any]]) -> None:
    doc = copy.deepcopy(docs[1])
    doc["call"]["id"] = 'x"<b>'
    doc["transcript"].append({"at_ms": 9000.0, "text": "<script>alert(1)</script>"})
    html = _page(doc)
    assert "<script>" not in html and "&lt;script&gt;" in html and "<link" not in html
    assert re.findall(r"https?://[^\"' ]+", html) == ["http://www.w3.org/2000/svg"] * html.count("<svg ")
    assert 'id="axis-x__b_"' in html


GARBLED = {
    "call": {"id": "g"},
    "analysis": {
        "outbound_segments": [["a", 1], [0.5]],
        "levels": {"inbound": [["x", "y"], [0.1, -20.0]], "outbound": "nope"},
        "echo": {"detected": True, "delay_ms": "soon", "erl_db": None},
        "stream": {
            "gaps": [[1, 2]],
            "marks": [["s", None, 0], [0.1, None, 0]],
            "clears": ["x"],
            "jitter": [[0]],
        },
    },
    "transcript": [{"at_ms": "x", "text": "hi"}, {"text": None}],
}


@pytest.mark.parametrize(
    "doc", [{}, {"call": {"id": "bare", "state": "ringing"}}, {"events": [{"at": "x"}]}, GARBLED]
)
def test_partial_and_garbled_documents_render(doc: dict[str, Any]) -> None:
    assert _page(doc).endswith("</html>\n")


def _stereo(path: Path, left: np.ndarray, right: np.ndarray) -> None:
    inter = np.empty(2 * len(left), dtype="<i2")
    inter[0::2], inter[1::2] = left, right
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(inter.tobytes())


def test_pages_beside_the_report_carry_both_sides_of_the_recording(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    t = np.arange(8000 * 3) / 8000
    caller = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)  # 3 s of tone, then the model's
    model = np.where(t >= 1.5, 16000 * np.sin(2 * np.pi * 300 * t), 0).astype(np.int16)
    _stereo(tmp_path / "rec.wav", caller, model)
    docs[0]["call"]["recording_path"] = str(tmp_path / "rec.wav")
    docs[1]["call"]["recording_path"] = str(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wave file")
    docs[2]["call"]["recording_path"] = str(tmp_path / "junk.wav")
    out = tmp_path / "r.html"
    report = build_report(docs)
    links = write_call_pages(docs, report, out)
    assert links == {c: f"r.calls/{c}.html" for c in ("c1", "c2", "c3", "c4")}
    folder = pages_dir(out)
    with wave.open(str(folder / "c1.caller.wav")) as w:
        assert (w.getnchannels(), w.getframerate()) == (1, 8000)
        assert np.array_equal(np.frombuffer(w.readframes(w.getnframes()), "<i2"), caller)
    page = (folder / "c1.html").read_text(encoding="utf-8")
    assert 'src="c1.caller.wav"' in page and 'src="c1.model.wav"' in page and 'href="../r.html"' in page
    env = envelope(model)
    assert max(hi for ts, _, hi in env if ts < 1.49) == 0.0  # silent before 1.5 s
    assert max(hi for _, _, hi in env) == pytest.approx(16000 / 32768, abs=1e-3)
    assert "recording not readable" in (folder / "c2.html").read_text(encoding="utf-8")
    assert "recording junk.wav: not a WAV recording" in (folder / "c3.html").read_text(encoding="utf-8")
    run = render_html(report, call_links=links)
    assert run.count('href="r.calls/c1.html"') >= 2  # the matrix row and the call's section
    redacted = tmp_path / "red" / "r.html"
    redacted.parent.mkdir()
    write_call_pages(docs, report, redacted, with_audio=False)
    assert not list(pages_dir(redacted).glob("*.wav"))
    assert "left out of a redacted report" in (pages_dir(redacted) / "c1.html").read_text(encoding="utf-8")


def test_figures_keep_a_decimal_under_ten(docs: list[dict[str, Any]]) -> None:
    docs[0]["metrics"].update(inbound_jitter_ms=0.8, inbound_jitter_ms_max=12.34, outbound_underruns=3.0)
    rows = dict(build_call_page(docs[0]).quality[0].rows)
    assert rows["jitter avg / max"] == "0.8 ms / 12.3 ms"
    assert dict(build_call_page(docs[0]).quality[1].rows)["underruns"] == "3"


def test_the_twiml_shown_is_rebuilt_from_the_call_with_its_token_masked() -> None:
    from orchestrator.cli.report_pages import rebuilt_twiml
    from orchestrator.twiml import BUSY_MESSAGE

    call = {"id": "c_0123456789abcdef", "say_text": "Hello there", "token": "s3cr3t-token"}
    doc = {"call": call, "facts": {"public_url": "https://x.example"}, "events": []}
    twiml = rebuilt_twiml(doc)
    assert twiml is not None and "s3cr3t" not in twiml and 'value="(masked)"' in twiml
    assert "<Say>Hello there</Say>" in twiml and 'url="wss://x.example/media"' in twiml
    busy = rebuilt_twiml({**doc, "events": [{"type": "refused_busy"}]})
    assert busy is not None and BUSY_MESSAGE in busy and "<Stream" not in busy
    assert rebuilt_twiml({"call": call, "facts": {}, "events": []}) is None
