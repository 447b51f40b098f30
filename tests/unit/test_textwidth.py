"""Terminal output fits 100 columns: long lines wrap under their own text, words stay whole."""

from __future__ import annotations

from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.textwidth import WIDTH, wrap


def test_a_long_line_wraps_under_its_first_word_and_keeps_words_whole() -> None:
    text = "inbound clipping 0.00 % <= 1.00 %, " * 8 + "/a/very/long/path/" + "x" * 120
    lines = wrap(text, "  pass audio_quality_ok  ")
    assert lines[0].startswith("  pass audio_quality_ok  inbound")
    assert all(line.startswith(" " * 25) for line in lines[1:])
    assert all(len(line) <= WIDTH for line in lines if "/a/very" not in line)
    assert " ".join(w for line in lines for w in line.split()) == " ".join(
        ("  pass audio_quality_ok  " + text).split()
    )
    assert wrap("", "FIX  x  ") == ["FIX  x"]


def test_doctor_fits_100_columns(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER", "PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["doctor", "--db", str(tmp_path / "none.db")])
    lines = result.output.splitlines()
    assert any(line.startswith("FIX") for line in lines)
    too_long = [line for line in lines if len(line) > WIDTH and " " in line.strip()[30:]]
    assert too_long == []
