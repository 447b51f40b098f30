"""The HTML reports render in a real browser.

Headless Chromium loads the sample run report (its DOM holds the checklist matrix, the per-call SVG
timelines and every call; the screenshot shows the colours), and, from calls placed through the rig
(server + carrier emulator + echo backend: one clean call, one with echo 10 dB down, 5 % loss and
20 ms jitter), the run report `orchestrator report --format html --out` writes and the call pages it
writes beside it, at 1400 and 800 px wide. Read back from the rendered DOM: every plot has data and
labels, labels are at least 11 px, the lost audio the page marks is the audio the emulator dropped.
Screenshots go to a temp dir, and to $REPORT_SHOTS_DIR when it is set (for a note).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from orchestrator.report import build_report, render_html
from orchestrator.report.call_svg import FONT, MIN_WIDTH_PX
from orchestrator.report.samples import sample_docs

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and Path("/usr/bin/chromium").exists():
    CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTH, HEIGHT = 1400, 2000
WIDTHS = (1400, 800)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium): cannot render the HTML report")
    tmp = tmp_path_factory.mktemp("report")
    html = tmp / "report.html"
    html.write_text(render_html(build_report(sample_docs(), "sample")), encoding="utf-8")
    url = html.resolve().as_uri()
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}"]
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    )
    png = tmp / "report.png"
    subprocess.run(
        [*common, f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return {"dom": dom.stdout, "png": png}


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def find(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        return [
            a for t, a in self.elements if t == tag and (cls is None or cls in a.get("class", "").split())
        ]


def test_dom_has_matrix_timelines_and_every_call(page: dict[str, object]) -> None:
    dom = _Dom()
    dom.feed(str(page["dom"]))
    matrices = dom.find("table", "matrix")
    assert [m["id"] for m in matrices] == ["matrix-sample"]
    rows = [a["data-call"] for a in dom.find("tr") if "data-call" in a]
    assert rows == ["c1", "c2", "c3", "c4"]
    cells = dom.find("td")
    assert sum(1 for c in cells if "data-criterion" in c) == 4 * 11
    assert [s["id"] for s in dom.find("svg", "timeline")] == [f"timeline-c{i}" for i in range(1, 5)]
    assert [s["id"] for s in dom.find("svg", "levels")] == ["levels-c1", "levels-c2"]
    assert [s["id"] for s in dom.find("svg", "latency-bars")] == ["latency-c1", "latency-c2"]
    assert len(dom.find("svg", "distribution")) == 2
    assert [s["id"] for s in dom.find("section", "call")] == [f"call-c{i}" for i in range(1, 5)]
    assert len(dom.find("rect", "echo-band")) == 4  # only the echo call, one per model segment


def _png_rows(path: Path, max_rows: int) -> npt.NDArray[np.uint8]:
    """The first rows of an 8-bit RGB(A) PNG as (rows, width, channels): enough to check colours."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", (0, 0, 0, 0)
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            header = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    width, height, depth, colour = header
    assert depth == 8 and colour in (2, 6), header
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, width * bpp + 1)
    out = np.zeros((min(max_rows, height), width * bpp), np.int32)
    prev: npt.NDArray[np.int32] = np.zeros(width * bpp, np.int32)
    for y in range(out.shape[0]):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        cur: npt.NDArray[np.int32]
        if kind == 0:
            cur = line
        elif kind == 1:
            cur = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1) & 255
        elif kind == 2:
            cur = (line + prev) & 255
        else:  # Average or Paeth depend on the pixel to the left: one pass along the row
            cur = line.copy()
            for x in range(width * bpp):
                a = cur[x - bpp] if x >= bpp else 0
                b, c = prev[x], prev[x - bpp] if x >= bpp else 0
                if kind == 3:
                    cur[x] = (cur[x] + (a + b) // 2) & 255
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    cur[x] = (cur[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out[y], prev = cur, cur
    return out.reshape(out.shape[0], width, bpp)[:, :, :3].astype(np.uint8)


def test_screenshot_shows_the_page_in_colour(page: dict[str, object]) -> None:
    png = Path(str(page["png"]))
    (width, height) = struct.unpack(">II", png.read_bytes()[16:24])
    assert (width, height) == (WIDTH, HEIGHT)
    pixels = _png_rows(png, 700)  # header, legend and checklist matrix
    colours = {tuple(int(v) for v in p) for p in pixels.reshape(-1, 3)[::3]}
    expected = {
        "header": (0x24, 0x29, 0x2F),
        "pass cell": (0xDA, 0xFB, 0xE1),
        "fail cell": (0xFF, 0xEB, 0xE9),
        "unknown cell": (0xEA, 0xEE, 0xF2),
        "manual outline": (0x82, 0x50, 0xDF),
    }
    missing = [name for name, rgb in expected.items() if rgb not in colours]
    assert not missing, f"not rendered: {missing}"


# --- the run report and call pages of calls placed through the rig ---------------------------------

RING_S = 1.0  # the emulator's ring time for these calls: the page's ring time must read it back
FAULTY = {"jitter_ms": 20.0, "loss_rate": 0.05, "echo": (120.0, 10.0)}


async def _place_calls(workdir: Path) -> dict[str, tuple[str, Any]]:
    from orchestrator.emulator import CallOptions, EchoSpec, Faults, Turn
    from orchestrator.rig import LocalRig, rig_settings

    settings = rig_settings(
        workdir,
        backend="echo",
        echo_mode="turns",
        echo_greeting="Hello, this is the echo backend.",
        greeting="Hello.",
    )
    turns = (Turn(text="Hello, can you hear me?", answer_timeout_s=5.0, pause_s=0.5),)

    def options(faults: Faults) -> CallOptions:
        return CallOptions(turns=turns, caller_start_s=1.0, ring_s=RING_S, faults=faults)

    delay_ms, loss_db = FAULTY["echo"]  # type: ignore[misc]
    plans = {
        "clean": options(Faults(hangup_after_stream_s=7.0)),
        "faulty": options(
            Faults(
                jitter_ms=float(FAULTY["jitter_ms"]),  # type: ignore[arg-type]
                loss_rate=float(FAULTY["loss_rate"]),  # type: ignore[arg-type]
                echo=EchoSpec(delay_ms=delay_ms, loss_db=loss_db),
                hangup_after_stream_s=7.0,
                seed=7,
            )
        ),
    }
    async with LocalRig(settings, workdir / "truth") as rig:
        rows = {name: await rig.place(opts, run="browser") for name, opts in plans.items()}
        truths = await asyncio.gather(
            *[rig.emulator.wait_call(r["call_sid"], timeout=60) for r in rows.values()]
        )
        for r in rows.values():
            await rig.settled(r["id"], timeout_s=120)
    return {name: (rows[name]["id"], truth) for name, truth in zip(rows, truths, strict=True)}


def _chromium(common: list[str], url: str, png: Path, width: int, height: int) -> str:
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    )
    subprocess.run(
        [*common, f"--screenshot={png}", f"--window-size={width},{height}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return dom.stdout


@pytest.fixture(scope="module")
def rig_pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium): cannot render the HTML report")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (CI installs it: the emulated caller speaks with it)")
    tmp = tmp_path_factory.mktemp("rig-report")
    calls = asyncio.run(_place_calls(tmp))
    out = tmp / "run.html"
    env = {**os.environ, "ORCHESTRATOR_DB": str(tmp / "calls.db")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "report",
            "--run",
            "browser",
            "--format",
            "html",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
        env=env,
    )
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}"]
    shots = Path(os.environ["REPORT_SHOTS_DIR"]) if os.environ.get("REPORT_SHOTS_DIR") else None
    pages: dict[str, Any] = {"calls": calls, "out": out, "dom": {}, "png": {}}
    targets = {
        "run": out,
        **{name: out.with_name("run.calls") / f"{cid}.html" for name, (cid, _) in calls.items()},
    }
    for name, path in targets.items():
        assert path.exists(), f"{path} not written"
        for width in WIDTHS:
            png = tmp / f"{name}-{width}.png"
            pages["dom"][name] = _chromium(common, path.resolve().as_uri(), png, width, 2600)
            pages["png"][(name, width)] = png
            if shots is not None:
                shots.mkdir(parents=True, exist_ok=True)
                shutil.copy(png, shots / png.name)
    return pages


class _Panels(HTMLParser):
    """The rendered DOM's SVG panels: per panel, its data count, its shapes and its text labels."""

    def __init__(self) -> None:
        super().__init__()
        self.panels: dict[str, dict[str, Any]] = {}
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.texts: list[tuple[str, dict[str, str], str]] = []  # (panel, attrs, text)
        self._stack: list[str | None] = []
        self._text: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        panel = a.get("data-panel") if tag == "g" else None
        if panel:
            self.panels[panel] = {"points": int(a["data-points"]), "shapes": 0, "labels": 0}
        current = panel or next((p for p in reversed(self._stack) if p), None)
        if tag == "g":
            self._stack.append(panel)
        if current and tag in ("rect", "polyline", "polygon", "line", "circle"):
            self.panels[current]["shapes"] += 1
        if tag == "text":
            self._text = {**a, "_panel": current or ""}

    def handle_endtag(self, tag: str) -> None:
        if tag == "g" and self._stack:
            self._stack.pop()
        if tag == "text":
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None and data.strip():
            panel = self._text["_panel"]
            self.texts.append((panel, self._text, data))
            if panel:
                self.panels[panel]["labels"] += 1

    def cls(self, name: str) -> list[dict[str, str]]:
        return [a for _, a in self.elements if name in a.get("class", "").split()]


def _parse(dom: str) -> _Panels:
    p = _Panels()
    p.feed(dom)
    return p


def test_run_report_links_every_call_page_and_plots_its_distributions(rig_pages: dict[str, Any]) -> None:
    dom = _parse(rig_pages["dom"]["run"])
    ids = [cid for cid, _ in rig_pages["calls"].values()]
    rows = [a["data-call"] for t, a in dom.elements if t == "tr" and "data-call" in a]
    assert sorted(rows) == sorted(ids)
    links = {a["href"] for a in dom.cls("call-page")}
    assert links == {f"run.calls/{cid}.html" for cid in ids}
    dists = [a for t, a in dom.elements if t == "svg" and "distribution" in a.get("class", "")]
    assert dists and len(dom.cls("dot")) >= len(dists)
    for width in WIDTHS:
        png = rig_pages["png"][("run", width)]
        assert struct.unpack(">II", png.read_bytes()[16:24]) == (width, 2600)


@pytest.mark.parametrize("name", ["clean", "faulty"])
def test_call_page_plots_have_data_and_readable_labels(rig_pages: dict[str, Any], name: str) -> None:
    dom = _parse(rig_pages["dom"][name])
    panels = dom.panels
    assert set(panels) >= {"events", "levels", "wave-caller", "wave-model", "jitter"}, set(panels)
    for panel, seen in panels.items():
        assert seen["points"] > 0 and seen["shapes"] > 0 and seen["labels"] > 0, (panel, seen)
    axis_texts = [a for _, a, _ in dom.texts if "font-size" in a]
    assert axis_texts and min(float(a["font-size"]) for a in axis_texts) * MIN_WIDTH_PX / 1000 >= 11
    assert FONT * MIN_WIDTH_PX / 1000 >= 11
    lanes = {text for panel, _, text in dom.texts if panel == "events"}
    assert {"call state", "webhooks", "stream events", "caller speech", "model speech"} <= lanes
    audio = [a for t, a in dom.elements if t == "audio"]
    assert len(audio) == 2 and all(
        (rig_pages["out"].with_name("run.calls") / a["src"]).exists() for a in audio
    )
    html = rig_pages["dom"][name]
    assert "PCMU (G.711 μ-law), 8 kHz" in html and "judged checks pass" in html
    ring = re.search(r"(\d+) ms \(ringing → answered\)", html)
    assert ring is not None and abs(int(ring.group(1)) - RING_S * 1000) < 300  # callbacks take their time
    for width in WIDTHS:
        png = rig_pages["png"][(name, width)]
        assert struct.unpack(">II", png.read_bytes()[16:24]) == (width, 2600)
        assert png.stat().st_size > 50_000  # a page of plots, not a blank one


def test_faulty_call_page_marks_the_audio_the_emulator_dropped(rig_pages: dict[str, Any]) -> None:
    _, truth = rig_pages["calls"]["faulty"]
    lost_truth = sorted(float(f["timestamp_ms"]) for f in truth.stream["frames_lost"])
    assert lost_truth, "5 % loss lost nothing: the scenario did not run as planned"
    dom = _parse(rig_pages["dom"]["faulty"])
    marked: list[float] = []
    for gap in dom.cls("gap"):
        dur_ms = round(float(gap["data-dur"]) * 1000)
        title = re.search(
            r"media (\d+)–(\d+) ms",
            rig_pages["dom"]["faulty"][
                rig_pages["dom"]["faulty"].index(f'data-t="{gap["data-t"]}" data-dur="{gap["data-dur"]}"') :
            ][:400],
        )
        assert title is not None
        start, end = float(title.group(1)), float(title.group(2))
        assert end - start == dur_ms
        marked += [start + 20 * k for k in range(dur_ms // 20)]
    # every frame the emulator dropped between frames it sent is on the axis, and nothing else is; a
    # loss in the last 200 ms may go unseen (no later frame reached the server before the hang-up)
    lost = {int(f["frame"]) for f in truth.stream["frames_lost"]}
    last_sent_ms = max((k - 1) * 20.0 for k in range(1, int(truth.stream["frames"]) + 1) if k not in lost)
    must = [t for t in lost_truth if t < last_sent_ms - 200]
    assert set(must) <= set(marked) <= set(lost_truth), (must, marked)
    assert len(marked) == len(set(marked))
    assert dom.cls("echo-band"), "echo 10 dB down was not marked"
    assert not _parse(rig_pages["dom"]["clean"]).cls("echo-band")
    mos = {
        n: float(re.search(r'<span class="mos">([0-9.]+)</span>', rig_pages["dom"][n]).group(1))  # type: ignore[union-attr]
        for n in ("clean", "faulty")
    }
    assert mos["faulty"] < mos["clean"] - 0.3, mos  # 5 % loss costs G.711 about a point of MOS
