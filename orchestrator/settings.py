"""Settings: environment variables (and a `.env` file), validated once, with errors that say how to fix.

Every setting is documented in `.env.example`. The auth token is a secret: it never appears in
`repr()`, logs or JSON output (see `Settings.redacted`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import platformdirs

from orchestrator.errors import SettingsError

if TYPE_CHECKING:
    from bridge.backends.moshi_pool import ServerSpec

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
BACKENDS = ("echo", "playback", "moshi", "moshi-server")


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("moshi-call-orchestrator")) / "orchestrator.db"


def default_recordings_dir() -> Path:
    return Path(platformdirs.user_data_dir("moshi-call-orchestrator")) / "recordings"


@dataclass(frozen=True)
class Settings:
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_from_number: str | None = None
    twilio_api_base_url: str | None = None  # unset = Twilio; set = the carrier emulator
    public_url: str | None = None
    db: Path = field(default_factory=default_db_path)
    # how long the server's writer keeps a write waiting for a PostgreSQL server that went away (a
    # restart) before answering 503; below Twilio's 15 s webhook timeout (orchestrator.writer)
    db_retry_s: float = 10.0
    host: str = "127.0.0.1"
    port: int = 8080
    backend: str = "echo"
    moshi_hf_repo: str = "kyutai/moshiko-mlx-q4"
    moshi_quantize: str = "4"
    # moshi-server backend: ws:// or wss:// URLs of Kyutai Moshi servers, each optionally *N sessions
    moshi_server_urls: str | None = None
    recordings_dir: Path | None = field(default_factory=default_recordings_dir)  # None = off
    # retention (orchestrator.retention): older recordings go, then the oldest over the total; 0 = no limit
    recordings_max_age_days: float = 30.0
    recordings_max_total_mb: float = 2048.0
    greeting: str = "Connecting you to Moshi."
    max_call_seconds: float = 300.0
    echo_delay_ms: float = 400.0
    echo_mode: str = "delay"  # delay | turns
    echo_greeting: str | None = None
    echo_yield_ms: float = 0.0  # turns mode: stop its own speech after this much talk-over (0: never)
    max_lead_ms: float = 100.0
    jitter_buffer_ms: float | None = None  # None: 20 ms (echo, playback) or 60 ms (moshi)
    # cancel our own echo before the model hears the caller (bridge.cancel): off | on
    aec: str = "off"
    media_trace: str = "off"  # on: keep each call's media stream frame by frame (bridge.trace) for replay
    # unfinished calls are asked of the carrier at start, then every this many seconds (0: off)
    reconcile_interval_s: float = 60.0
    # what one peer can hold (orchestrator.web.limits): time to send headers, a body, a media `start`;
    # idle keep-alive; open connections (None: the open-file limit less a reserve)
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    keepalive_timeout_s: float = 10.0
    media_start_timeout_s: float = 10.0
    max_connections: int | None = None
    # several workers over one database (orchestrator.workers): this server's name (None: not a worker),
    # its sessions (None: the backend's own limit, else DEFAULT_WORKER_CAPACITY), how often it says it
    # is alive, and after how long without a word the others take its unfinished calls over
    worker: str | None = None
    worker_capacity: int | None = None
    worker_heartbeat_s: float = 2.0
    worker_stale_s: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
        if environ is None:
            if dotenv:
                _load_dotenv()
            environ = os.environ
        env = {k: v for k, v in environ.items() if v != ""}
        kw: dict[str, object] = {}
        simple = {
            "TWILIO_ACCOUNT_SID": "twilio_account_sid",
            "TWILIO_AUTH_TOKEN": "twilio_auth_token",
            "TWILIO_FROM_NUMBER": "twilio_from_number",
            "TWILIO_API_BASE_URL": "twilio_api_base_url",
            "PUBLIC_URL": "public_url",
            "ORCHESTRATOR_HOST": "host",
            "BACKEND": "backend",
            "MOSHI_HF_REPO": "moshi_hf_repo",
            "MOSHI_QUANTIZE": "moshi_quantize",
            "MOSHI_SERVER_URLS": "moshi_server_urls",
            "GREETING": "greeting",
            "ECHO_MODE": "echo_mode",
            "ECHO_GREETING": "echo_greeting",
            "AEC": "aec",
            "MEDIA_TRACE": "media_trace",
            "WORKER_NAME": "worker",
        }
        for name, attr in simple.items():
            if name in env:
                kw[attr] = env[name].strip()
        if "ORCHESTRATOR_DB" in env:
            kw["db"] = Path(env["ORCHESTRATOR_DB"]).expanduser()
        if "RECORDINGS_DIR" in env:
            value = env["RECORDINGS_DIR"].strip()
            kw["recordings_dir"] = None if value.lower() in ("off", "none", "0") else Path(value).expanduser()
        for name, attr, conv in (
            ("ORCHESTRATOR_PORT", "port", int),
            ("MAX_CALL_SECONDS", "max_call_seconds", float),
            ("ECHO_DELAY_MS", "echo_delay_ms", float),
            ("ECHO_YIELD_MS", "echo_yield_ms", float),
            ("MAX_LEAD_MS", "max_lead_ms", float),
            ("JITTER_BUFFER_MS", "jitter_buffer_ms", float),
            ("RECONCILE_INTERVAL_S", "reconcile_interval_s", float),
            ("DB_RETRY_S", "db_retry_s", float),
            ("RECORDINGS_MAX_AGE_DAYS", "recordings_max_age_days", float),
            ("RECORDINGS_MAX_TOTAL_MB", "recordings_max_total_mb", float),
            ("HEADER_TIMEOUT_S", "header_timeout_s", float),
            ("BODY_TIMEOUT_S", "body_timeout_s", float),
            ("KEEPALIVE_TIMEOUT_S", "keepalive_timeout_s", float),
            ("MEDIA_START_TIMEOUT_S", "media_start_timeout_s", float),
            ("MAX_CONNECTIONS", "max_connections", int),
            ("WORKER_CAPACITY", "worker_capacity", int),
            ("WORKER_HEARTBEAT_S", "worker_heartbeat_s", float),
            ("WORKER_STALE_S", "worker_stale_s", float),
        ):
            if name in env:
                try:
                    kw[attr] = conv(env[name])
                except ValueError:
                    raise SettingsError(
                        f"{name}={env[name]!r} is not a number; fix it in .env or the environment"
                    ) from None
        return cls(**kw).validated()  # type: ignore[arg-type]

    def with_overrides(self, **kw: object) -> Settings:
        """CLI flags win over the environment; None means 'not given'."""
        changes: dict[str, Any] = {k: v for k, v in kw.items() if v is not None}
        return replace(self, **changes).validated()

    def validated(self) -> Settings:
        if self.backend not in BACKENDS:
            raise SettingsError(f"BACKEND={self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.echo_mode not in ("delay", "turns"):
            raise SettingsError(f"ECHO_MODE={self.echo_mode!r}: choose delay or turns")
        if not self.echo_yield_ms >= 0:
            raise SettingsError(f"ECHO_YIELD_MS={self.echo_yield_ms}: must be >= 0 ms (0: never yields)")
        if self.aec not in ("off", "on"):
            raise SettingsError(f"AEC={self.aec!r}: choose off or on")
        if self.media_trace not in ("off", "on"):
            raise SettingsError(f"MEDIA_TRACE={self.media_trace!r}: choose off or on")
        if self.moshi_quantize not in ("4", "8", "none"):
            raise SettingsError(f"MOSHI_QUANTIZE={self.moshi_quantize!r}: choose 4, 8 or none")
        if self.backend == "moshi-server":
            self.moshi_servers()
        for name in ("header_timeout_s", "body_timeout_s", "keepalive_timeout_s", "media_start_timeout_s"):
            if not getattr(self, name) > 0:
                raise SettingsError(
                    f"{name.upper()}={getattr(self, name)}: must be a positive number of seconds"
                )
        if self.max_connections is not None and self.max_connections < 0:
            raise SettingsError(
                f"MAX_CONNECTIONS={self.max_connections}: must be 0 (from the open-file limit) or more"
            )
        for name in ("recordings_max_age_days", "recordings_max_total_mb"):
            if not getattr(self, name) >= 0:
                raise SettingsError(f"{name.upper()}={getattr(self, name)}: must be 0 (no limit) or more")
        if not self.db_retry_s >= 0:
            raise SettingsError(
                f"DB_RETRY_S={self.db_retry_s}: must be 0 (answer 503 at once) or more seconds"
            )
        if not self.reconcile_interval_s >= 0:
            raise SettingsError(f"RECONCILE_INTERVAL_S={self.reconcile_interval_s}: must be 0 (off) or more")
        self._check_worker()
        if not 0 <= self.port < 65536:
            raise SettingsError(f"ORCHESTRATOR_PORT={self.port}: must be 0-65535 (0 = any free port)")
        if self.public_url:
            parts = urlsplit(self.public_url)
            if not parts.scheme or not parts.netloc:
                raise SettingsError(
                    f"PUBLIC_URL={self.public_url!r} is not a URL; expected https://your-tunnel.example"
                )
        return self

    def _check_worker(self) -> None:
        if self.worker is not None and (problem := worker_name_problem(self.worker)):
            raise SettingsError(f"WORKER_NAME / --worker {self.worker!r}: {problem}")
        if self.worker_capacity is not None and self.worker_capacity < 1:
            raise SettingsError(f"WORKER_CAPACITY={self.worker_capacity}: must be 1 or more calls at once")
        if not self.worker_heartbeat_s > 0:
            raise SettingsError(f"WORKER_HEARTBEAT_S={self.worker_heartbeat_s}: must be a positive number")
        if not self.worker_stale_s >= 2 * self.worker_heartbeat_s:
            raise SettingsError(
                f"WORKER_STALE_S={self.worker_stale_s}: must be at least twice WORKER_HEARTBEAT_S "
                f"({self.worker_heartbeat_s} s), or a worker one late heartbeat behind counts as dead"
            )

    # -- what each command needs -------------------------------------------------------------------

    def moshi_servers(self) -> tuple[ServerSpec, ...]:
        """The moshi-server backend's pool, parsed from MOSHI_SERVER_URLS."""
        from bridge.backends.moshi_pool import parse_server_urls

        if not self.moshi_server_urls:
            raise SettingsError(
                "BACKEND=moshi-server needs MOSHI_SERVER_URLS: one or more ws://host:port URLs of Moshi "
                "servers (e.g. ws://127.0.0.1:8998 for `python -m moshi_mlx.local_web`)"
            )
        try:
            return parse_server_urls(self.moshi_server_urls)
        except ValueError as err:
            raise SettingsError(str(err)) from None

    def require_public_url(self) -> str:
        if not self.public_url:
            raise SettingsError(
                "PUBLIC_URL is not set: Twilio must reach this server through a tunnel; set PUBLIC_URL to the "
                "tunnel's https URL or run `orchestrator serve --tunnel cloudflared`"
            )
        if urlsplit(self.public_url).scheme != "https":
            raise SettingsError(
                f"PUBLIC_URL={self.public_url!r} must be https (Twilio only streams to wss:// and signs https URLs)"
            )
        return self.public_url.rstrip("/")

    def require_twilio(self) -> tuple[str, str]:
        if not self.twilio_account_sid:
            raise SettingsError("TWILIO_ACCOUNT_SID is not set: copy it from the Twilio console into .env")
        if not re.fullmatch(r"AC[0-9a-fA-F]{32}", self.twilio_account_sid):
            raise SettingsError("TWILIO_ACCOUNT_SID must look like AC followed by 32 hex digits")
        if not self.twilio_auth_token:
            raise SettingsError("TWILIO_AUTH_TOKEN is not set: copy the primary auth token into .env")
        return self.twilio_account_sid, self.twilio_auth_token

    def require_auth_token(self) -> str:
        if not self.twilio_auth_token:
            raise SettingsError(
                "TWILIO_AUTH_TOKEN is not set: the server needs it to check X-Twilio-Signature; put it in .env"
            )
        return self.twilio_auth_token

    def redacted(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "twilio_auth_token":
                value = "(set)" if value else None
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def check_e164(number: str, setting: str) -> str:
    if not E164.match(number or ""):
        raise SettingsError(f"{setting}={number!r} is not an E.164 phone number (like +14155550123)")
    return number


def mask_number(number: object, empty: str = "-") -> str:
    """Phone numbers are personal: in logs, tables and reports keep only the last four digits."""
    text = str(number or "")
    if not text:
        return empty
    return "…" + text[-4:] if len(text) > 4 else text


#: Twilio's identifiers: two letters naming the kind, then 32 hex digits. Checked before a peer's value
#: reaches a log line, the store or a terminal (a 5,000-character CallSid once broke the calls table).
SID_PATTERNS = {
    "CA": re.compile(r"CA[0-9a-fA-F]{32}"),  # call
    "MZ": re.compile(r"MZ[0-9a-fA-F]{32}"),  # media stream
    "AC": re.compile(r"AC[0-9a-fA-F]{32}"),  # account
}
CALL_ID = re.compile(r"c_[0-9a-f]{16}")  # our own call ids (Store.create_call)


def valid_sid(kind: str, value: object) -> bool:
    return isinstance(value, str) and SID_PATTERNS[kind].fullmatch(value) is not None


def valid_call_id(value: object) -> bool:
    return isinstance(value, str) and CALL_ID.fullmatch(value) is not None


def log_safe(value: object, limit: int = 80) -> str:
    """A peer's text made safe for one log line or a terminal: whatever is not printable (controls,
    format characters such as bidi overrides and zero-width ones, line and paragraph separators,
    spaces other than ' ', unassigned code points) escaped as \\uXXXX, a backslash doubled, length
    bounded. No line forging, no text that reorders or hides what follows it."""
    text = str(value)
    cut = len(text) > limit
    out = []
    for ch in text[:limit] if cut else text:
        if ch == "\\":
            out.append("\\\\")
        elif not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    if cut:
        out.append(f"…({len(text)} chars)")
    return "".join(out)


def load_env_file() -> None:
    """Put a `.env` in the current folder into the environment (what is already set wins), so that
    options read from environment variables (the emulator's credentials) see it too."""
    _load_dotenv()


def _load_dotenv() -> None:
    try:
        from dotenv import load_dotenv
    except ImportError:  # pragma: no cover - dependency declared
        return
    load_dotenv(dotenv_path=Path.cwd() / ".env", override=False)


_WORKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


def worker_name_problem(name: str) -> str | None:
    """Why `name` cannot name a worker (None: it can): 1-40 letters, digits, `.`, `_`, `-`."""
    if _WORKER_NAME.fullmatch(name):
        return None
    return "a worker name is 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit"
