"""A server home: its directory layout and ``config.toml`` (see ``docs/operations.md``)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from proto import MAX_FRAME_SIZE

from .errors import ConfigError
from .quota import Quotas

CONFIG_NAME = "config.toml"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port). Raises ConfigError."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"listen address {text!r} is not HOST:PORT (e.g. 127.0.0.1:8765)")
    return host, int(port)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class ServerConfig:
    """Settings read from ``config.toml``; every field has a documented default."""

    home: Path
    listen: str = "127.0.0.1:8765"
    names: list[str] = field(default_factory=list)
    public_urls: list[str] = field(default_factory=list)
    db: str = ""
    handshake_timeout: float = 10.0
    token_ttl_hours: float = 24.0
    bus: str = ""
    node_id: str = ""
    node_url: str = ""
    presence_lease_s: float = 30.0
    # recordings an agent may send (server/recordings.py, docs/operations.md)
    recording_bytes_per_hour: int = 64 * 1024 * 1024
    recordings_per_minute: int = 20
    recordings_per_tunnel: int = 64
    # per-agent quotas (server/quota.py, docs/operations.md#quotas)
    agent_open_cases: int = Quotas.open_cases
    agent_cases_per_minute: int = Quotas.cases_per_minute
    result_max_bytes: int = Quotas.result_bytes
    agent_receipts_per_minute: int = Quotas.receipts_per_minute
    quota_audit_interval_s: float = Quotas.audit_interval_s
    #: ``call`` sessions one agent may hold open at once on this node (server/agent_gateway.py)
    max_calls_per_agent: int = 4
    #: seconds a ``call`` session may wait for the agent's next message before it is closed
    call_idle_timeout_s: float = 60.0

    @property
    def quotas(self) -> Quotas:
        return Quotas(open_cases=self.agent_open_cases,
                      cases_per_minute=self.agent_cases_per_minute,
                      result_bytes=self.result_max_bytes,
                      receipts_per_minute=self.agent_receipts_per_minute,
                      audit_interval_s=float(self.quota_audit_interval_s))
    #: seconds a client has for its TLS handshake (from accept)
    tls_handshake_timeout: float = 5.0
    #: connections one address (an IPv6 /64) may hold open, authenticated or not
    max_connections_per_address: int = 65536
    #: connections one address may hold that have not finished their handshake yet
    max_unauthenticated_per_address: int = 256
    #: how often the node polls the store for technician revocations (seconds)
    revocation_poll_s: float = 0.25

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite+aiosqlite:///{(self.home / 'store.db').resolve()}"

    @property
    def urls(self) -> list[str]:
        if self.public_urls:
            return self.public_urls
        host, port = parse_listen(self.listen)
        return [f"wss://{_url_host(host)}:{port}"]

    @property
    def own_url(self) -> str:
        """The URL agents reach this node at (tunnels are dialled to the technician's node):
        ``node_url``, else the public URL on the listen port, else wss://<listen>."""
        if self.node_url:
            return self.node_url
        host, port = parse_listen(self.listen)
        for u in self.public_urls:
            if u.rstrip("/").endswith(f":{port}") and (host in u or host in ("0.0.0.0", "::")):
                return u
        return f"wss://{_url_host(host)}:{port}"

    def check_nodes(self) -> None:
        """A multi-node configuration (a bus) needs a shared database server."""
        if not self.bus:
            return
        if not self.bus.startswith(("nats://", "tls://")):
            raise ConfigError(f"bus URL {self.bus!r} is not a NATS URL (nats://host:4222)")
        if not self.db or self.db_url.startswith("sqlite"):
            raise ConfigError("several nodes (--bus) need one shared PostgreSQL store; SQLite "
                              "is for a single node: add --db postgresql+asyncpg://... (the "
                              "same for every node) or drop --bus")
        if not self.node_id or not all(c.isalnum() or c in "-_." for c in self.node_id) \
                or len(self.node_id) > 64:
            raise ConfigError("several nodes need a --node-id, unique per node (letters, "
                              "digits, - _ .; at most 64)")

    def path(self, name: str) -> Path:
        return self.home / name

    @classmethod
    def load(cls, home: Path) -> ServerConfig:
        """Read ``home/config.toml``. Raises ConfigError saying how to fix the home."""
        path = home / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"{home} is not a server home (no {CONFIG_NAME}); run "
                              f"`hw-server init --home {home}` first")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML ({exc}); fix or re-create it") from None
        known = {"listen", "names", "public_urls", "db", "handshake_timeout",
                 "token_ttl_hours", "bus", "node_id", "node_url", "presence_lease_s",
                 "recording_bytes_per_hour", "recordings_per_minute", "recordings_per_tunnel",
                 *QUOTA_SETTINGS,
                 "tls_handshake_timeout", "max_connections_per_address",
                 "max_unauthenticated_per_address", "revocation_poll_s"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        try:
            cfg = cls(home=home, **data)
            parse_listen(cfg.listen)
            for u in cfg.urls:
                if not u.startswith("wss://"):
                    raise ConfigError(f"{path}: public URL {u!r} must start with wss://")
            if not (0 < float(cfg.handshake_timeout) <= 300):
                raise ConfigError(f"{path}: handshake_timeout must be in (0, 300] seconds")
            if not (1 <= float(cfg.presence_lease_s) <= 600):
                raise ConfigError(f"{path}: presence_lease_s must be in [1, 600] seconds")
            for name in ("recording_bytes_per_hour", "recordings_per_minute",
                         "recordings_per_tunnel"):
                value = getattr(cfg, name)
                if not isinstance(value, int) or isinstance(value, bool) or \
                        not 1 <= value <= 2**40:
                    raise ConfigError(f"{path}: {name} must be a whole number >= 1")
            check_quotas(cfg, path)
            if not (0 < float(cfg.tls_handshake_timeout) <= 60):
                raise ConfigError(f"{path}: tls_handshake_timeout must be in (0, 60] seconds")
            if not (0.05 <= float(cfg.revocation_poll_s) <= 60):
                raise ConfigError(f"{path}: revocation_poll_s must be in [0.05, 60] seconds")
            per_address, unauthenticated = (cfg.max_connections_per_address,
                                            cfg.max_unauthenticated_per_address)
            if (not isinstance(per_address, int) or not isinstance(unauthenticated, int)
                    or not 1 <= unauthenticated <= per_address <= 1_000_000):
                raise ConfigError(f"{path}: max_unauthenticated_per_address and "
                                  "max_connections_per_address must be whole numbers with "
                                  "1 <= max_unauthenticated_per_address <= "
                                  "max_connections_per_address <= 1000000")
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{path}: a setting has the wrong type ({exc}); see "
                              "docs/operations.md") from None
        for name in ("ca.crt", "server.crt", "server.key", "org.pub"):
            if not (home / name).is_file():
                raise ConfigError(f"{home} lacks {name}; re-run `hw-server init --home {home}`")
        return cfg

    def write(self) -> None:
        """Write ``config.toml`` (only on init)."""
        lines = [
            "# hw-server configuration; see docs/operations.md",
            f"listen = {_q(self.listen)}",
            f"names = [{', '.join(_q(n) for n in self.names)}]",
            "# URLs agents dial (put in enrollment tokens); default: wss://<listen>",
            f"public_urls = [{', '.join(_q(u) for u in self.public_urls)}]",
            "# SQLAlchemy URL of the store; empty = SQLite file store.db in this home",
            f"db = {_q(self.db)}",
            f"handshake_timeout = {self.handshake_timeout}",
            f"token_ttl_hours = {self.token_ttl_hours}",
            "# per-agent quotas (docs/operations.md#quotas)",
            f"agent_open_cases = {self.agent_open_cases}",
            f"agent_cases_per_minute = {self.agent_cases_per_minute}",
            f"result_max_bytes = {self.result_max_bytes}",
            f"agent_receipts_per_minute = {self.agent_receipts_per_minute}",
            f"quota_audit_interval_s = {self.quota_audit_interval_s}",
            "# session recordings one agent may have stored (server/recordings.py)",
            f"recording_bytes_per_hour = {self.recording_bytes_per_hour}",
            f"recordings_per_minute = {self.recordings_per_minute}",
            f"recordings_per_tunnel = {self.recordings_per_tunnel}",
            "# call sessions (hw-agent help, visits) one agent may hold open at once, and",
            "# seconds one may wait for the agent's next message (docs/operations.md#quotas)",
            f"max_calls_per_agent = {self.max_calls_per_agent}",
            f"call_idle_timeout_s = {self.call_idle_timeout_s}",
            "# before TLS: a client's TLS handshake time, and connections per address (an",
            "# IPv6 /64) in all and before their handshake finished (docs/operations.md)",
            f"tls_handshake_timeout = {self.tls_handshake_timeout}",
            f"max_connections_per_address = {self.max_connections_per_address}",
            f"max_unauthenticated_per_address = {self.max_unauthenticated_per_address}",
            "# how often this node looks for technician revocations (seconds)",
            f"revocation_poll_s = {self.revocation_poll_s}",
        ]
        (self.home / CONFIG_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")


#: The quota settings and their allowed ranges (docs/operations.md#quotas).
QUOTA_SETTINGS: dict[str, tuple[float, float]] = {
    "agent_open_cases": (1, 10_000),
    "agent_cases_per_minute": (1, 10_000),
    "result_max_bytes": (1024, MAX_FRAME_SIZE),
    "agent_receipts_per_minute": (1, 10_000),
    "quota_audit_interval_s": (1, 86_400),
    "max_calls_per_agent": (1, 1_000),
    "call_idle_timeout_s": (1, 3_600),
}


def check_quotas(cfg: ServerConfig, path: Path) -> None:
    """Raise ConfigError for a quota setting of the wrong type or out of its range."""
    for name, (low, high) in QUOTA_SETTINGS.items():
        value = getattr(cfg, name)
        whole = not name.endswith("_s")
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or (whole and not isinstance(value, int)) or not low <= value <= high):
            kind = "a whole number" if whole else "a number"
            raise ConfigError(f"{path}: {name} must be {kind} from {low:g} to {high:g}, got "
                              f"{value!r}; see docs/operations.md#quotas")


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
