"""`orchestrator doctor`: what is wrong with this setup, and how to fix it."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from orchestrator import exits
from orchestrator.errors import OrchestratorError, SettingsError, StoreUnreachable
from orchestrator.settings import Settings, check_e164, load_env_file
from orchestrator.textwidth import wrap


@dataclass
class Finding:
    check: str
    ok: bool | None  # None: could not be decided (not applicable)
    detail: str


_SETTING = re.compile(r"^([A-Z][A-Z0-9_]*)=")
_THRESHOLD = re.compile(r"(CHECK_[A-Z0-9_]+)")


def settings_findings(environ: Mapping[str, str], db: Path | None = None) -> tuple[Settings, list[Finding]]:
    """Every malformed setting (not only the first), and the settings with those left at their defaults."""
    env = dict(environ)
    found: list[Finding] = []
    for _ in range(len(env) + 1):
        try:
            return Settings.from_env(env, dotenv=False).with_overrides(db=db), found
        except SettingsError as exc:
            name = _SETTING.match(str(exc))
            found.append(Finding(f"setting {name.group(1) if name else '?'}", False, str(exc)))
            if name is None or name.group(1) not in env:
                break
            del env[name.group(1)]
    return Settings().with_overrides(db=db), found


def threshold_findings(environ: Mapping[str, str]) -> list[Finding]:
    """Each CHECK_* threshold that is unknown or malformed, one finding each."""
    from orchestrator.errors import ThresholdError
    from orchestrator.thresholds import Thresholds

    found = []
    for key in sorted(k for k in environ if k.startswith("CHECK_")):
        try:
            Thresholds.from_env({key: environ[key]})
        except ThresholdError as exc:
            found.append(Finding(f"threshold {key}", False, str(exc)))
    if not found:
        n = sum(1 for k in environ if k.startswith("CHECK_"))
        found.append(
            Finding("thresholds", True, f"{n} CHECK_* setting(s) valid" if n else "defaults (no CHECK_*)")
        )
    return found


def carrier_finding(settings: Settings, timeout_s: float = 3.0) -> Finding:
    """Ask the carrier for our account: does it answer, and does it take the credentials?"""
    base = (settings.twilio_api_base_url or "https://api.twilio.com").rstrip("/")
    name = f"emulator at {base}" if settings.twilio_api_base_url else "Twilio (api.twilio.com)"
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        return Finding("carrier", None, f"{name}: not asked (no credentials)")
    request = urllib.request.Request(f"{base}/2010-04-01/Accounts/{settings.twilio_account_sid}.json")
    token = base64.b64encode(f"{settings.twilio_account_sid}:{settings.twilio_auth_token}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return Finding("carrier", True, f"{name} answered and accepted the credentials")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return Finding(
                "carrier",
                False,
                f"{name} refused the credentials (HTTP {exc.code}): check "
                "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
            )
        return Finding("carrier", True, f"{name} answered (HTTP {exc.code})")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        hint = (
            "start `orchestrator emulator` there or fix TWILIO_API_BASE_URL"
            if settings.twilio_api_base_url
            else "check the network connection"
        )
        return Finding("carrier", False, f"{name} did not answer ({reason}): {hint}")


def tunnel_advice() -> str:
    for program in ("cloudflared", "ngrok"):
        if shutil.which(program):
            return f"or run `orchestrator serve --tunnel {program}` ({program} is installed)"
    return "or install cloudflared or ngrok and run `orchestrator serve --tunnel cloudflared` (neither is installed)"


def run_checks(settings: Settings, environ: Mapping[str, str] | None = None) -> list[Finding]:
    out: list[Finding] = []

    def attempt(name: str, fn: object) -> None:
        try:
            detail = fn()  # type: ignore[operator]
            out.append(Finding(name, True, str(detail)))
        except OrchestratorError as exc:
            out.append(Finding(name, False, str(exc)))

    attempt("twilio credentials", lambda: (settings.require_twilio(), "set")[1])
    attempt("from number", lambda: check_e164(settings.twilio_from_number or "", "TWILIO_FROM_NUMBER"))
    if settings.public_url:
        attempt("public url", settings.require_public_url)
    else:
        out.append(
            Finding(
                "public url",
                False,
                "PUBLIC_URL is not set: Twilio must reach this server through a "
                f"tunnel; set PUBLIC_URL to the tunnel's https URL {tunnel_advice()}",
            )
        )
    out.append(carrier_finding(settings))
    if environ is not None:
        out += threshold_findings(environ)

    def database() -> str:
        from orchestrator.store import utcnow
        from orchestrator.stores import as_target, is_pg_url, open_store, shown_target
        from orchestrator.workers import workers_summary

        target = as_target(settings.db)
        if not is_pg_url(target) and not Path(target).exists():  # doctor only looks: it never makes the file
            return f"{settings.db} (not created yet: `orchestrator serve`, `call` or `migrate` creates it)"
        store = open_store(target, migrate=False, create=False)
        pending = [m["name"] for m in store.migration_status() if not m["applied_at"]]
        workers = (
            ""
            if pending
            else workers_summary(store.list_workers(), now=utcnow(), stale_s=settings.worker_stale_s)
        )
        store.close()
        return (
            f"{shown_target(target)}"
            + (
                f" (pending migrations: {', '.join(pending)}; run `orchestrator migrate`)"
                if pending
                else " (schema up to date)"
            )
            + (f"; {workers}" if workers else "")
        )

    out.append(database_finding(settings, database))
    out.append(running_server_finding(settings))
    if settings.public_url:
        out.append(tunnel_finding(settings.public_url))
    out.append(
        Finding(
            "espeak-ng",
            shutil.which("espeak-ng") is not None,
            "found"
            if shutil.which("espeak-ng")
            else "not found: the emulator's spoken caller needs it (apt-get install espeak-ng / brew install "
            "espeak-ng)",
        )
    )
    out += model_findings(settings)
    out.append(file_limit_finding(settings))
    return out


def database_finding(settings: Settings, check: Callable[[], str]) -> Finding:
    """The database as doctor finds it; a PostgreSQL server that does not answer also says what a
    running server does meanwhile."""
    try:
        return Finding("database", True, check())
    except StoreUnreachable as exc:
        return Finding(
            "database",
            False,
            f"{exc}; meanwhile a running server holds each callback up to DB_RETRY_S "
            f"({settings.db_retry_s:g} s) for its write, then answers 503",
        )
    except OrchestratorError as exc:
        return Finding("database", False, str(exc))


def fetch_health(url: str, timeout_s: float = 2.0) -> tuple[int, dict[str, Any] | None] | None:
    """GET a /healthz: its status and JSON document (None: not ours, e.g. a tunnel's error page), a 503
    included; None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:  # /healthz answers 503 while its database does not
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    return status, (doc if isinstance(doc, dict) and "ok" in doc else None)


def running_server_finding(settings: Settings) -> Finding:
    """A server running here (ORCHESTRATOR_HOST/PORT): its database as its writer last found it."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{host}:{settings.port}/healthz"
    answer = fetch_health(url)
    if answer is None or answer[1] is None:
        return Finding("running server", None, f"no orchestrator server answers at {url}")
    db = answer[1].get("db") or {}
    if db.get("state", "ok") == "ok":
        return Finding("running server", True, f"{url}: running, its database answers")
    return Finding(
        "running server",
        False,
        f"{url}: running, but its database has not answered since {db.get('since')} ({db.get('retries')} "
        f"retries, {db.get('failed_jobs')} writes answered 503): {db.get('last_error')}",
    )


def tunnel_finding(public_url: str) -> Finding:
    """Does the public URL reach our server? It does when our /healthz answers, even 503 (its database)."""
    url = f"{public_url.rstrip('/')}/healthz"
    answer = fetch_health(url, timeout_s=3.0)
    if answer is not None and answer[1] is not None:
        ready = (
            "" if answer[0] == 200 else f" HTTP {answer[0]}: the server is not ready (see `running server`)"
        )
        return Finding("tunnel", True, f"{url} answered{ready}")
    hint = "is `orchestrator serve` running and the tunnel up?"
    if answer is None:  # nothing at all: as before, not decided (the server may just not run yet)
        return Finding("tunnel", None, f"{url} did not answer: {hint}")
    return Finding("tunnel", False, f"{url} answered HTTP {answer[0]}, not our server: {hint}")


def file_limit_finding(settings: Settings, minimum: int = 256) -> Finding:
    """The open-file limit bounds the connections the server holds (orchestrator.web.limits)."""
    from orchestrator.web.limits import connection_cap, file_limit

    soft, hard = file_limit()
    cap = connection_cap(settings.max_connections, soft)
    detail = (
        f"soft {soft}, hard {hard}: up to {cap} connections held "
        f"(MAX_CONNECTIONS {settings.max_connections or 'from the limit'}), {soft - cap} descriptors kept for "
        "the database, recordings, backends and new callers"
    )
    if soft < minimum:
        return Finding(
            "open files", False, detail + f"; raise it (ulimit -n {max(4096, minimum)}) before serving"
        )
    return Finding("open files", True, detail)


def model_findings(settings: Settings) -> list[Finding]:
    if settings.backend == "moshi-server":
        return server_findings(settings)
    if settings.backend != "moshi":
        return [Finding("model", None, f"backend {settings.backend} needs no model")]
    try:
        from orchestrator.cli.models import model_status
    except ImportError as exc:
        return [
            Finding("model", False, f"the moshi extra is not installed: pip install -e '.[moshi]' ({exc})")
        ]
    status = model_status(settings)
    out = [Finding("model", bool(status.get("ready")), str(status.get("detail", status)))]
    from bridge.backends.bench_record import last_bench_line
    from bridge.backends.moshi_loader import MoshiConfig

    line = last_bench_line(repo=MoshiConfig.from_settings(settings).hf_repo)
    out.append(
        Finding(
            "model bench",
            None,
            line or "no bench yet: `orchestrator models bench` says if this machine keeps up",
        )
    )
    return out


def server_findings(settings: Settings, timeout_s: float = 2.0) -> list[Finding]:
    """Each model server of MOSHI_SERVER_URLS: does its port answer? Doctor opens no session: moshi_mlx's
    local_web counts model steps over every client and carries one client's state into the next."""
    import socket
    from urllib.parse import urlsplit

    try:
        specs = settings.moshi_servers()
    except SettingsError as exc:
        return [Finding("model servers", False, str(exc))]
    out: list[Finding] = []
    for spec in specs:
        parts = urlsplit(spec.url)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        sessions = f"{spec.capacity} session{'s' if spec.capacity != 1 else ''}"
        try:
            with socket.create_connection((parts.hostname or "", port), timeout=timeout_s):
                pass
        except OSError as exc:
            out.append(
                Finding(
                    f"model server {spec.display}",
                    False,
                    f"does not answer ({exc.strerror or exc}): start it, e.g. `python -m moshi_mlx.local_web "
                    f"--no-browser --host {parts.hostname} --port {port}`, or fix MOSHI_SERVER_URLS",
                )
            )
            continue
        out.append(Finding(f"model server {spec.display}", True, f"port open, {sessions}"))
    out.append(
        Finding(
            "model server limits",
            None,
            "moshi_mlx local_web stops after --steps model steps (4000, 5.3 min, by default) counted over "
            "every call since it started, and never resets between calls: start it with a large --steps "
            "and restart it between test runs",
        )
    )
    return out


@click.command(epilog=exits.epilog(outcome="something needs fixing (the FIX lines say what)"))
@click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), default=None, help="SQLite database file."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def doctor(ctx: click.Context, db: Path | None, as_json: bool) -> None:
    """Check settings, thresholds, carrier, database, tunnel, tools and the model cache; say how to fix
    what is wrong. Every bad setting is listed, not only the first. Creates nothing.

    Example: orchestrator doctor
    """
    load_env_file()
    settings, bad = settings_findings(os.environ, db)
    findings = bad + run_checks(settings, os.environ)
    ok = all(f.ok is not False for f in findings)
    if as_json:
        click.echo(
            json.dumps(
                {"findings": [asdict(f) for f in findings], "settings": settings.redacted(), "ok": ok},
                indent=2,
            )
        )
    else:
        for f in findings:
            mark = {True: "ok  ", False: "FIX ", None: "-   "}[f.ok]
            for line in wrap(f.detail, f"{mark} {f.check:20s} "):
                click.echo(line)
    if not ok:
        ctx.exit(exits.OUTCOME)
