"""The HTML report renders in a real browser: headless Chromium loads the file, its DOM holds the
checklist matrix, the per-call SVG timelines and every call, and the screenshot shows the colours."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from orchestrator.report import build_report, render_html
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
