"""Configuration: small frozen msgspec Structs per section, validated once at load.

Precedence: defaults < TOML file < `SEMOOKII_BRIDGE_<SECTION>_<KEY>` environment variables < CLI flags.
The API token is never part of the file: it comes from `SEMOOKII_TOKEN` or `api.token_file`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from ..budget.quota import DailyQuota, default_reserve, zone
from .secret import Secret
from .sources import ENV_PREFIX as ENV_PREFIX
from .sources import ConfigError as ConfigError
from .sources import env_name, explain, fields_of, from_environment, read_secret, read_text, toml_error

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Positive = Annotated[float, msgspec.Meta(gt=0, le=1e9)]
NonNegative = Annotated[float, msgspec.Meta(ge=0, le=1e9)]
Count = Annotated[int, msgspec.Meta(ge=0, le=10**9)]
"""Numbers are bounded (no `inf`, no 2**63) so that every value the bridge derives from them stays a number the
status page, the metrics and the journal can write."""
Percent = Annotated[str, msgspec.Meta(pattern=r"^\d{1,2}(\.\d+)?%$", description='e.g. "2%"')]
Topic = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^#+\x00]+$")]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class MqttConfig(_Section, frozen=True):
    """Broker connection, session and subscription settings."""

    host: str = "localhost"
    port: Port = 1883
    protocol: Literal[5, 3] = 5
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "semookii-bridge"
    prefix: Topic = "vpp"
    username: str = ""
    password: str = ""
    password_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_insecure: bool = False
    keepalive: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    session_expiry: Annotated[int, msgspec.Meta(ge=0)] = 86400
    reconnect_min: Positive = 0.5
    reconnect_max: Positive = 30.0
    start_timeout: Positive = 30.0
    """Seconds `run` waits for the first connection before it exits naming the cause (refused credentials: at once)."""
    max_payload: Annotated[int, msgspec.Meta(ge=256, le=16 * 1024 * 1024)] = 65536
    max_inflight: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 100
    receive_maximum: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1000
    inbox_limit: Annotated[int, msgspec.Meta(ge=100)] = 10000

    def __repr__(self) -> str:
        return f"MqttConfig(host={self.host!r}, port={self.port}, protocol={self.protocol}, prefix={self.prefix!r})"

    def password_secret(self) -> Secret:
        """The broker password from `password` (env) or `password_file`."""
        if self.password_file:
            return read_secret("mqtt.password_file", self.password_file)
        return Secret(self.password)


API_BASE_URL = "https://www.solaxcloud.com:9443/proxy"
"""The vendor's Cloud API (the API document's host and path prefix)."""


class ApiConfig(_Section, frozen=True):
    """Where the Cloud API is and how long to wait for it."""

    base_url: str = API_BASE_URL
    token_file: str = ""
    check_token: bool = True
    """One cheap call (a group list of one row) at start, so a refused token is an error at once."""
    token_recheck: Annotated[float, msgspec.Meta(ge=1)] = 300.0
    """Seconds between checks of a refused token (one cheap call each), so a fixed token needs no restart."""
    timeout: Positive = 10.0
    connect_timeout: Positive = 5.0
    attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 4
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=256)] = 16


class RateLimitConfig(_Section, frozen=True):
    """One token bucket for every API call: control first, then management, then result polling."""

    rate: NonNegative = 0.16
    burst: Annotated[int, msgspec.Meta(ge=1, le=10**6)] = 5
    daily_quota: Count = 10_000
    quota_timezone: str = "UTC"
    quota_reserve: Count | Percent = "2%"
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=256)] = 5
    pause_on_429: Positive = 5.0
    poll_share: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    send_margin: Annotated[float, msgspec.Meta(ge=0, le=10)] = 0.25
    pace_quota: bool = False

    def __post_init__(self) -> None:
        zone(self.quota_timezone)  # an unknown zone is refused at load, with the key named
        if self.daily_quota and self.reserve() >= self.daily_quota:
            raise ValueError(f"rate_limit.quota_reserve {self.quota_reserve} leaves nothing of daily_quota")

    def reserve(self) -> int:
        """Calls of the daily quota kept for safety commands: a count, or a percentage (at least 1)."""
        if isinstance(self.quota_reserve, int):
            return self.quota_reserve
        return default_reserve(self.daily_quota, float(self.quota_reserve.rstrip("%")))

    def quota(self) -> DailyQuota:
        """The daily quota these settings describe."""
        return DailyQuota(self.daily_quota, reserve=self.reserve(), tz=zone(self.quota_timezone), pace=self.pace_quota)


class CommandsConfig(_Section, frozen=True):
    """Lifetime, tracking and safety rules for control commands."""

    default_ttl: Positive = 60.0
    track_results_for: Positive = 300.0
    poll_initial: Positive = 1.0
    poll_max: Positive = 30.0
    dedup_window: Positive = 3600.0
    dry_run: bool = False
    allow_groups: list[str] = msgspec.field(default_factory=list)
    allow_inverters: list[str] = msgspec.field(default_factory=list)
    max_abs_power: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 65535
    max_duration: Annotated[int, msgspec.Meta(ge=1)] = 86400
    max_timeout: Annotated[int, msgspec.Meta(ge=0)] = 3600
    track: Literal["results", "accepted"] = "results"
    merge: bool = True
    batch_max_sns: Annotated[int, msgspec.Meta(ge=2, le=500)] = 100
    inventory_refresh: Positive = 21600.0


class ManagementConfig(_Section, frozen=True):
    """Management requests (`<prefix>/bridge/request/<op>`)."""

    max_pending: Annotated[int, msgspec.Meta(ge=1)] = 1000
    read_only: bool = False


class PlansConfig(_Section, frozen=True):
    """Dispatch plans (docs/plans.md): how far ahead and how many intervals a plan may hold, and how late an
    interval's call may still leave after the interval's start (later, the interval is missed, never sent)."""

    max_horizon: Annotated[float, msgspec.Meta(gt=0, le=366 * 86400)] = 7 * 86400.0
    max_intervals: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 2000
    start_grace: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0


class JournalConfig(_Section, frozen=True):
    """The journal that makes accepted commands survive a crash: a local SQLite file at `path`, or, with `url`,
    PostgreSQL shared by several bridges (required by `[ha]`)."""

    path: str = "semookii-bridge.db"
    synchronous: Literal["normal", "full"] = "normal"
    url: Annotated[str, msgspec.Meta(pattern=r"^$|^postgres(ql)?://")] = ""
    """`postgresql://user[:password]@host:port/database`; empty: the SQLite file at `path`."""


class HaConfig(_Section, frozen=True):
    """Hot standby: any number of bridges share one PostgreSQL journal and configuration; one leads."""

    enabled: bool = False
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{0,64}$")] = ""
    """This instance's name in `vpp/bridge/instance/<name>/state`; empty: `<host>-<pid>`."""
    lease: Annotated[float, msgspec.Meta(ge=1.0, le=60.0)] = 3.0
    """Seconds a leader's lease lasts without renewal: a dead leader's commands wait about this long."""
    wire_bound: Annotated[float, msgspec.Meta(ge=0.5, le=60.0)] = 3.0
    """Seconds a control request may stay unacknowledged on the wire (TCP_USER_TIMEOUT); a new leader waits this
    long before calling for a target the old one had a call in flight for."""
    link_grace: Annotated[float, msgspec.Meta(ge=1.0, le=300.0)] = 2.0
    """Seconds a leader's broker or API link may be down before it hands over to a standby that has both."""

    def instance_name(self) -> str:
        return self.name or f"{socket.gethostname()}-{os.getpid()}"


class HttpConfig(_Section, frozen=True):
    """The operations server: status page `/`, `/livez`, `/readyz` (`/healthz`), `/metrics`."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9108
    api_stale_after: Positive = 120.0
    auth_token: str = ""
    """Required by the status page and /metrics (bearer, or basic with any user) when `host` is not loopback."""
    auth_token_file: str = ""
    metrics_public: bool = False
    """Serve /metrics without the token (for a Prometheus that cannot send one); probes are always open."""

    def __post_init__(self) -> None:
        if self.enabled and not loopback(self.host) and not (self.auth_token.strip() or self.auth_token_file):
            raise ValueError(
                f"http.host {self.host} serves the status page beyond this machine: set http.auth_token "
                "or http.auth_token_file (or bind http.host to 127.0.0.1)"
            )

    def token(self) -> Secret:
        """The status page's token, from `auth_token_file` or `auth_token`; empty: no token asked."""
        if self.auth_token_file:
            return read_secret("http.auth_token_file", self.auth_token_file)
        return Secret(self.auth_token)


def loopback(host: str) -> bool:
    """Whether a bind address or Host name is this machine's loopback (`localhost`, 127.0.0.0/8, ::1)."""
    try:
        return host.lower() == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LogConfig(_Section, frozen=True):
    """Log lines on stderr: `logfmt` (default) or `json`, one key per field; never the token."""

    level: Annotated[
        str, msgspec.Meta(pattern=r"(?i)^(debug|info|warning|error)$", description="debug, info, warning or error")
    ] = "info"
    format: Literal["logfmt", "json", "kv"] = "logfmt"
    """`kv` is the former name of `logfmt`."""


SparkplugId = Annotated[str, msgspec.Meta(pattern=r"^[^/#+]{1,64}$", description="no '/', '#' or '+'")]
DeviceId = Annotated[str, msgspec.Meta(pattern=r"^(group-[0-9]{1,25}|inverter-[A-Za-z0-9_.\-]{1,64})$")]


class SparkplugConfig(_Section, frozen=True):
    """The Sparkplug B 3.0 edge node beside the JSON topics (docs/sparkplug.md); off unless `enabled`.

    Devices come from the group and inverter lists (read through the bridge's management topics, so the
    calls count in the budget) unless `devices` names them.
    """

    enabled: bool = False
    group_id: SparkplugId = "vpp"
    edge_node_id: SparkplugId = "semookii-bridge"
    primary_host_id: Annotated[str, msgspec.Meta(pattern=r"^[^/#+]{0,64}$")] = ""
    devices: list[DeviceId] = msgspec.field(default_factory=list)
    state_file: str = ""
    """bdSeq and the devices' stored settings; empty: next to the journal (`<journal>.sparkplug.json`)."""
    username: str = ""
    """The edge node's own broker user (it writes commands like an operator); empty: mqtt.username's."""
    password: str = ""
    password_file: str = ""
    setpoint_duration: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 900
    setpoint_timeout: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 60
    discovery_timeout: Positive = 60.0
    refresh_interval: NonNegative = 60.0
    """Node Control/Refresh reads the lists (API calls) at most once per this many seconds; more are merged."""
    rebirth_interval: NonNegative = 5.0
    """Node Control/Rebirth publishes the births at most once per this many seconds; more are merged."""


class BridgeConfig(_Section, frozen=True):
    """The whole configuration."""

    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    rate_limit: RateLimitConfig = msgspec.field(default_factory=RateLimitConfig)
    commands: CommandsConfig = msgspec.field(default_factory=CommandsConfig)
    management: ManagementConfig = msgspec.field(default_factory=ManagementConfig)
    plans: PlansConfig = msgspec.field(default_factory=PlansConfig)
    journal: JournalConfig = msgspec.field(default_factory=JournalConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    sparkplug: SparkplugConfig = msgspec.field(default_factory=SparkplugConfig)
    ha: HaConfig = msgspec.field(default_factory=HaConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        if self.ha.enabled and not self.journal.url:
            raise ValueError("ha.enabled needs the PostgreSQL journal: set journal.url (SQLite is one host's file)")


def _merge(base: dict[str, Any], overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in overrides.items():
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"[{section}] must be a table")
        target.update(values)
    return merged


REMOVED = {
    "cluster": "[cluster] was removed in favour of a hot standby: one leader carries more than a token allows; run "
    "two or three bridges with [ha] on a shared PostgreSQL journal (docs/high-availability.md)",
    "mqtt.shared_group": "mqtt.shared_group was removed: bridges in one shared subscription group each took part of "
    "the commands, so a newer setpoint could overtake an older one; run one bridge, or two or three with [ha] on a "
    "shared PostgreSQL journal (docs/high-availability.md)",
}
"""Settings that no longer exist, with why and what to do instead (a plain `unknown field` would not say)."""


def _refuse_removed(doc: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """Raise ConfigError when the file or the environment sets a removed setting."""
    for key, message in REMOVED.items():
        section, _, name = key.partition(".")
        table = doc.get(section)
        in_file = name in table if name and isinstance(table, dict) else not name and section in doc
        if in_file or (name and env_name(section, name) in environ):
            raise ConfigError(message)


def load(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> BridgeConfig:
    """Build the effective configuration from file, environment and flag overrides."""
    doc: dict[str, Any] = {}
    text = ""
    if path is not None:
        text = read_text("the configuration file", path)
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise toml_error(path, str(exc)) from None
    environ = os.environ if environ is None else environ
    _refuse_removed(doc, environ)
    fields = fields_of(BridgeConfig)
    from_env, origin = from_environment(environ, fields)
    doc = _merge(_merge(doc, from_env), overrides or {})
    origin.update({f"{s}.{k}": "command line" for s, values in (overrides or {}).items() for k in values})
    try:
        return msgspec.convert(doc, BridgeConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError("invalid configuration: " + explain(str(exc), fields, origin, path, text)) from None


def load_token(api: ApiConfig, environ: Mapping[str, str] | None = None) -> Secret:
    """The API token from `api.token_file`, else `SEMOOKII_TOKEN`; raises ConfigError when neither is set."""
    env = os.environ if environ is None else environ
    if api.token_file:
        token = Secret(read_text("api.token_file", api.token_file))
    else:
        token = Secret(env.get("SEMOOKII_TOKEN", ""))
    if not token:
        raise ConfigError("no API token: set SEMOOKII_TOKEN or api.token_file")
    return token


def redacted(cfg: BridgeConfig) -> dict[str, Any]:
    """The effective configuration as builtins, with secrets replaced by stars."""
    doc: dict[str, Any] = msgspec.to_builtins(cfg)
    for section, key in (("mqtt", "password"), ("sparkplug", "password"), ("http", "auth_token")):
        if doc[section].get(key):
            doc[section][key] = "***"
    doc["journal"]["url"] = url_without_password(doc["journal"]["url"])
    return doc


_PASSWORD_PARAM = re.compile(r"((?:^|[?&\s])(?:ssl)?password\s*=\s*)('[^']*'|[^&\s]*)", re.IGNORECASE)


def url_without_password(url: str) -> str:
    """A database URL or keyword DSN fit for logs and `config show`: every password replaced by stars (in the
    user part, and `password` / `sslpassword` parameters)."""
    scheme, sep, rest = url.partition("://")
    query = rest.find("?") if "?" in rest else len(rest)
    at = rest.rfind("@", 0, query)
    if sep and ":" in rest[: max(at, 0)]:
        url = f"{scheme}://{rest[:at].split(':', 1)[0]}:***{rest[at:]}"
    return _PASSWORD_PARAM.sub(r"\1***", url)
