"""``hw-server``: operator commands. Parses arguments and calls into the package."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from proto.roles import LEGACY_ROLES, Role, format_roles
from proto.textsafe import printable, safe_json_dumps
from proto.timefmt import human_time
from proto.token import EnrollToken, encode_token

from . import pki, revocations
from .cases import CaseState
from .cliargs import (
    AUDIT_LIMIT,
    CERT_DAYS,
    FREE_VISITS,
    RATE_CNY,
    TTL_HOURS,
    VISIT_HOURS,
    UsageError,
    _home,
    _run,
    bus_url,
    city,
    contract_id,
    customer_name,
    date_time,
    day,
    host_name,
    known_service,
    listen_address,
    node_id,
    public_url,
    service_name,
    store_url,
    subject_text,
    tech_name,
)
from .config import ServerConfig, parse_listen
from .errors import ServerError
from .onsitecli import add_onsite_commands
from .recordings import add_recording_commands, init_recording_key
from .store import AuditCheck, AuditEntry, ContractRecord, Store, StoreError

KINDS = ("individual", "small-business", "enterprise")
CASE_STATES = tuple(state.value for state in CaseState)
#: How `tech list` shows a technician issued before roles (what their certificate means).
LEGACY = format_roles(LEGACY_ROLES)


class _LogFormatter(logging.Formatter):
    """The usual ``asctime`` in local time with its UTC offset (``2026-11-26 12:00:00,123
    +08:00``), formatted once a second instead of once a line: a reconnect storm logs
    thousands of connects a second, and strftime was most of each line's cost."""

    _second = -1
    _text = ""
    _offset = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            local = self.converter(record.created)
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", local)
            zone = time.strftime("%z", local)
            self._offset = f"{zone[:3]}:{zone[3:]}" if zone else "UTC"
        return f"{self._text},{int(record.msecs):03d} {self._offset}"


# -- commands -------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    home = _home(args)
    if (home / "config.toml").exists():
        raise ServerError(f"{home} is already a server home; use another directory "
                          "(re-initialising would invalidate every agent and technician)")
    host, _port = parse_listen(args.listen)
    org_pub = pki.read_org_pub(Path(args.org_pub)) if args.org_pub is not None else None
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    names = list(dict.fromkeys([*args.name, host] if args.name else [host, "localhost"]))
    now = pki.now_utc()
    cfg = ServerConfig(home=home, listen=args.listen, names=names,
                       public_urls=list(args.public_url or []), db=_db_arg(args.db))

    async def migrate() -> None:
        store = await Store.open(cfg.db_url)
        await store.close()

    if cfg.db:  # a database server: fail before writing anything if it cannot be used
        _run(migrate())
    offline = org_pub is not None
    if org_pub is not None:
        (home / "org.pub").write_bytes(org_pub)
    pki.make_ca(home, now=now)
    pki.make_server_cert(home, names=names, now=now)
    if not offline:
        pki.make_org_key(home)
        revocations.sign_in_home(home, pki.org_public_raw(home), revoked=[], now=now)
    recording_key = init_recording_key(home)
    cfg.write()
    ServerConfig.load(home)
    _run(migrate())
    fp = pki.ca_fingerprint((home / "ca.crt").read_bytes()).hex()
    print(f"initialised server home {home}")
    print(f"  listen        {args.listen}  (certificate names: {', '.join(names)})")
    print(f"  agents dial   {', '.join(cfg.urls)}")
    print(f"  store         {safe_url(cfg.db_url)}")
    print(f"  CA sha256     {fp}")
    if offline:
        print(f"  layout        offline organisation key: {home / 'org.pub'} only; this server "
              "cannot certify technicians or sign revocation lists, so it cannot make an "
              "agent trust anyone")
        print("  next          sign the first revocation list offline and load it (agents "
              "refuse commands until they have one):")
        print("                  hw-org revocations --dir ORGDIR --out revocations.signed")
        print(f"                  hw-server revocations load --home {home} revocations.signed")
        print("                then register technicians with certificates signed offline: "
              "hw-server tech add NAME --cert FILE --out DIR")
    else:
        print(f"  layout        simple: the organisation key {home / 'org.key'} is in this "
              "home, so this server can certify technicians and sign revocation lists itself "
              "(whoever holds this home can make every agent trust a technician of their "
              "choosing); for production keep it offline: `hw-server init --org-pub FILE` "
              "(docs/operations.md#organisation-key-offline)")
    print(*recording_key, sep="\n")
    print(f"next: hw-server run --home {home}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .app import run_server

    cfg = ServerConfig.load(_home(args))
    if args.listen:
        parse_listen(args.listen)
        cfg = dataclasses.replace(cfg, listen=args.listen)
    if args.db:
        cfg = dataclasses.replace(cfg, db=_db_arg(args.db))
    if args.bus:
        cfg = dataclasses.replace(cfg, bus=args.bus)
    if args.node_id:
        cfg = dataclasses.replace(cfg, node_id=args.node_id)
    cfg.check_nodes()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter("%(asctime)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # No caller, thread or process lookups for records whose format does not show them
    # (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.getLogger("hw.server.ws").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("hw.server").info("store %s", safe_url(cfg.db_url))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stopping() -> None:
            # Tearing down 10k connections made the cyclic collector walk the whole heap
            # again and again (py-spy: 5 of the 7 s a 10k-agent server took to stop), and
            # once more at exit. The process is ending: leave what exists to the exit.
            gc.freeze()
            gc.disable()
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stopping)
            except (NotImplementedError, RuntimeError):  # Windows
                pass
        await run_server(cfg, stop=stop)

    _run(main())
    logging.getLogger("hw.server").info("hw-server stopped")
    return 0


def safe_url(url: str) -> str:
    """A store URL fit for logs and errors: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable database URL>"


def _db_arg(url: str | None) -> str:
    """A ``--db`` value: empty (SQLite in the home) or a URL the store supports."""
    if not url:
        return ""
    try:
        backend = make_url(url).get_backend_name()
    except Exception:
        raise ServerError("--db is not a database URL; use e.g. "
                          "postgresql+asyncpg://hw@db.example:5432/helloword") from None
    if backend not in ("sqlite", "postgresql"):
        raise ServerError(f"--db names a {backend!r} database; the store supports "
                          "sqlite+aiosqlite:///PATH and postgresql+asyncpg://USER@HOST/DB")
    return url


def cmd_cert_renew(args: argparse.Namespace) -> int:
    """A new server certificate from the same CA: agents pin the CA, so nothing changes
    for them; restart the server (every node) to use it."""
    cfg = ServerConfig.load(_home(args))
    names = list(dict.fromkeys(args.name)) if args.name else list(cfg.names)
    if not names:
        raise ServerError("no certificate names: pass --name HOST (repeatable)")
    pki.make_server_cert(cfg.home, names=names, now=pki.now_utc())
    print(f"new server certificate for {', '.join(names)} in {cfg.path('server.crt')}; "
          "restart hw-server (every node, with this home's server.crt and server.key)")
    return 0


def cmd_enroll_token(args: argparse.Namespace) -> int:
    cfg = ServerConfig.load(_home(args))
    now = pki.now_utc()
    hours = args.ttl if args.ttl is not None else cfg.token_ttl_hours
    if not 0 < hours <= 24 * 30:  # the config's default (--ttl is bounded by its type)
        raise ServerError(f"token_ttl_hours in config.toml is {hours}; set it to more than "
                          "0 and at most 720")
    expires = (now + timedelta(hours=hours)).replace(microsecond=0)
    secret = secrets.token_bytes(32)

    async def add() -> None:
        from .agent_gateway import secret_hash

        store = await Store.open(cfg.db_url)
        try:
            if args.contract:
                contract = await store.get_contract(args.contract)
                if contract is None or contract.customer != args.customer.strip():
                    raise ServerError(f"contract {args.contract} is not a contract of "
                                      f"{args.customer.strip()!r}; check "
                                      "`hw-server contract show`")
            await store.add_enroll_token(secret_hash=secret_hash(secret),
                                         customer=args.customer.strip(), kind=args.kind,
                                         city=args.city.strip(), expires_at=expires, now=now)
        finally:
            await store.close()

    _run(add())
    token = EnrollToken(urls=cfg.urls, secret=secret, expires=expires,
                        ca_sha256=pki.ca_fingerprint(cfg.path("ca.crt").read_bytes()),
                        org_pub=pki.org_public_raw(cfg.home), customer=args.customer.strip())
    print(encode_token(token))
    print(f"single use, valid until {human_time(expires)}; give it to {args.customer.strip()} "
          "for `hw-agent enroll`", file=sys.stderr)
    return 0


def _register_tech(cfg: ServerConfig, issued: pki.IssuedTech, out: Path, *, now: datetime,
                   detail: dict[str, str]) -> None:
    """Write the technician's profile and ``ca.crt`` into ``out``, then register the key
    (fingerprint, validity, roles) and audit ``tech.added``."""
    shutil.copyfile(cfg.path("ca.crt"), out / "ca.crt")
    profile = {"name": issued.name, "urls": cfg.urls,
               "ca_sha256": pki.ca_fingerprint(cfg.path("ca.crt").read_bytes()).hex()}
    (out / "profile.json").write_text(json.dumps(profile, indent=2) + "\n", encoding="utf-8")
    roles = format_roles(issued.roles)

    async def add() -> None:
        store = await Store.open(cfg.db_url)
        try:
            await store.add_technician(name=issued.name, key_fingerprint=issued.key_fingerprint,
                                       valid_before=issued.valid_before, now=now, replace=True,
                                       roles=roles)
            await store.append_audit(event="tech.added", actor="operator", subject=issued.name,
                                     now=now, detail={"key": issued.key_fingerprint,
                                                      "roles": roles,
                                                      "valid_before":
                                                      issued.valid_before.isoformat(),
                                                      **detail})
        finally:
            await store.close()

    _run(add())


def cmd_tech_add(args: argparse.Namespace) -> int:
    cfg = ServerConfig.load(_home(args))
    if args.cert is not None:
        if args.role:
            raise UsageError("--role does not go with --cert: the roles are the ones the "
                             "certificate carries (sign them in: `hw-org sign --role ...`)")
        return _tech_register(args, cfg)
    if not revocations.has_org_key(cfg.home):
        raise ServerError(
            f"{cfg.home} holds no org.key (the organisation key is kept offline), so this "
            "server cannot certify technicians; sign the technician's key offline (`hw-org "
            f"sign --name {args.name} --role remote TECH.pub`, or `ssh-keygen -s org.key "
            f"...`) and register it: hw-server tech add {args.name} --cert TECH-cert.pub "
            "--out DIR")
    out = Path(args.out)
    if (out / "tech.key").exists() and not args.replace:
        raise ServerError(f"{out} already holds a technician key; pass --replace to issue anew")
    now = pki.now_utc()
    roles = frozenset(Role(r) for r in (args.role or [Role.REMOTE.value]))
    issued = pki.issue_tech(cfg.home, name=args.name, out=out, now=now, days=args.days,
                            roles=roles)
    _register_tech(cfg, issued, out, now=now, detail={})
    print(f"technician {args.name} ({format_roles(roles)}): key, certificate (valid until "
          f"{human_time(issued.valid_before)}) and profile written to {out}")
    print(f"next: hw-tech --home {out} agents")
    return 0


def _tech_register(args: argparse.Namespace, cfg: ServerConfig) -> int:
    """``tech add NAME --cert FILE``: a certificate signed elsewhere, checked and registered
    (its key fingerprint); ``--out`` gets the profile, ``ca.crt`` and the certificate."""
    path = Path(args.cert)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ServerError(f"cannot read the certificate {path} ({type(exc).__name__}); give "
                          "the -cert.pub file made by `hw-org sign` or `ssh-keygen -s`") from None
    now = pki.now_utc()
    issued = pki.check_tech_certificate(text, org_pub=pki.org_public_raw(cfg.home),
                                        name=args.name, now=now)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "tech.key-cert.pub"
    if not (target.exists() and target.samefile(path)):
        if target.exists() and not args.replace:
            raise ServerError(f"{out} already holds a technician certificate; pass --replace "
                              "to overwrite it")
        target.write_text(text, encoding="utf-8")
    _register_tech(cfg, issued, out, now=now, detail={"signed": "offline"})
    print(f"technician {args.name} ({format_roles(issued.roles)}): certificate "
          f"{issued.key_fingerprint} (valid until "
          f"{human_time(issued.valid_before)}) registered; profile and ca.crt written to {out}")
    if not (out / "tech.key").exists():
        print(f"put the technician's private key next to it as {out / 'tech.key'}")
    print(f"next: hw-tech --home {out} agents")
    return 0


def cmd_tech_list(args: argparse.Namespace) -> int:
    cfg = ServerConfig.load(_home(args))

    async def fetch() -> list[Any]:
        store = await Store.open(cfg.db_url)
        try:
            return await store.list_technicians()
        finally:
            await store.close()

    techs = _run(fetch())
    if args.json:
        print(json.dumps([{"name": t.name, "roles": (t.roles or LEGACY).split(","),
                           "key": t.key_fingerprint,
                           "valid_before": t.valid_before.isoformat(),
                           "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None}
                          for t in techs], indent=2, ensure_ascii=False))
        return 0
    if not techs:
        print("no technicians; add one with `hw-server tech add NAME --out DIR`")
    for t in techs:
        state = (f"revoked {human_time(t.revoked_at)}" if t.revoked_at else
                 f"valid until {human_time(t.valid_before)}")
        print(f"{t.name:<20} {t.roles or LEGACY + ' (issued before roles)':<30} {state}")
    return 0


def cmd_tech_revoke(args: argparse.Namespace) -> int:
    cfg = ServerConfig.load(_home(args))
    now = pki.now_utc()

    async def revoke() -> tuple[str | None, list[str]]:
        store = await Store.open(cfg.db_url)
        try:
            await store.revoke_technician(args.name, now=now)
            await store.append_audit(event="tech.revoked", actor="operator",
                                     subject=args.name, now=now)
            tech = await store.get_technician(args.name)
            return (tech.key_fingerprint if tech else None,
                    await store.revoked_technician_fingerprints())
        finally:
            await store.close()

    fingerprint, revoked = _run(revoke())
    print(f"technician {args.name} revoked; their certificate is refused by this server from "
          "now on")
    if revocations.has_org_key(cfg.home):
        try:
            body = revocations.sign_in_home(cfg.home, pki.org_public_raw(cfg.home),
                                            revoked=revoked, now=now)
        except (OSError, ServerError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(printable(
                f"hw-server: error: technician {args.name} is revoked (that stands: this "
                "server refuses their certificate), but the signed revocation list "
                f"{cfg.home / revocations.SIGNED_FILE} could not be written ({why}), so "
                "agents do not have it yet. A running server signs it again by itself and "
                "logs if it cannot; fix the cause (disk space, permissions, something in "
                f"its place) and run `hw-server tech revoke --home {cfg.home} {args.name}` "
                "again, which signs the list anew"), file=sys.stderr)
            return 1
        print(f"signed revocation list number {body.sequence} ({len(body.fingerprints)} keys); "
              "the running server sends it to every agent")
    else:
        print("agents learn it from this server's plain list at once, but they trust only a "
              "list signed by the organisation key, which is offline: on the signing machine "
              f"run `hw-org revoke --name {args.name}` (or --fingerprint "
              f"{fingerprint or 'SHA256:...'}) and `hw-org revocations --out FILE`, then here "
              "`hw-server revocations load FILE`")
    return 0


def cmd_revocations_load(args: argparse.Namespace) -> int:
    cfg = ServerConfig.load(_home(args))
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise ServerError(f"cannot read {args.file} ({exc.strerror}); give the file written "
                          "by `hw-org revocations --out FILE`") from None

    async def revoked() -> list[str]:
        store = await Store.open(cfg.db_url)
        try:
            return await store.revoked_technician_fingerprints()
        finally:
            await store.close()

    loaded = revocations.load_into_home(cfg.home, pki.org_public_raw(cfg.home), data,
                                        revoked=_run(revoked()))
    body = loaded.body
    print(f"revocation list number {body.sequence} ({len(body.fingerprints)} keys, issued "
          f"{human_time(body.issued)}, next update due {human_time(body.next_update)}) "
          "loaded; the running server sends it to every agent within seconds")
    if loaded.missing:
        print(f"note: {len(loaded.missing)} key(s) revoked on this server are not in it "
              f"({', '.join(loaded.missing[:5])}); revoke them with `hw-org revoke "
              "--fingerprint FP` and sign a new list")
    return 0


def cmd_revocations_show(args: argparse.Namespace) -> int:
    cfg = ServerConfig.load(_home(args))
    layout = "simple (org.key here)" if revocations.has_org_key(cfg.home) else "offline"
    held = revocations.read_signed(cfg.home, pki.org_public_raw(cfg.home))
    if held is None:
        print(f"layout {layout}; no signed revocation list")
        return 0
    body = held[1]
    if args.json:
        print(json.dumps({"layout": layout.split()[0], "sequence": body.sequence,
                          "issued": body.issued.isoformat(),
                          "next_update": body.next_update.isoformat(),
                          "fingerprints": body.fingerprints}, indent=2))
        return 0
    print(f"layout {layout}; list number {body.sequence}, issued {human_time(body.issued)}, "
          f"next update due {human_time(body.next_update)}, {len(body.fingerprints)} keys")
    for fp in body.fingerprints:
        print(f"  {fp}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    cfg = ServerConfig.load(_home(args))

    async def verify() -> AuditCheck:
        store = await Store.open(cfg.db_url)
        try:
            return await store.verify_audit()
        finally:
            await store.close()

    check: AuditCheck = _run(verify())
    if not check.ok:
        raise ServerError(f"audit log broken at {check.reason}")
    print(f"audit log OK: {check.entries} entries, head {check.head.hex()[:16]}")
    return 0


def _audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {"id": entry.id, "at": entry.at.isoformat(), "actor": entry.actor,
            "event": entry.event, "subject": entry.subject, "detail": entry.detail,
            "hash": entry.hash.hex()}


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _contract_json(c: ContractRecord) -> dict[str, Any]:
    return {"contract_id": c.contract_id, "customer": c.customer,
            "valid_from": c.valid_from.isoformat(), "valid_to": c.valid_to.isoformat(),
            "rate": c.rate, "free_visits": {"quota": c.free_visits, "used": c.visits_used,
                                            "remaining": c.remaining}}


def cmd_contract_add(args: argparse.Namespace) -> int:
    cfg = ServerConfig.load(_home(args))
    now = pki.now_utc()

    async def add() -> ContractRecord:
        store = await Store.open(cfg.db_url)
        try:
            c = await store.add_contract(customer=args.customer, free_visits=args.free_visits,
                                         valid_from=args.valid_from, valid_to=args.valid_to,
                                         rate=args.rate, now=now)
            await store.append_audit(event="contract.added", actor="operator",
                                     subject=c.contract_id, now=now, detail=_contract_json(c))
            return c
        finally:
            await store.close()

    c = _run(add())
    if args.json:
        print(safe_json_dumps(_contract_json(c)))
    else:
        print(printable(f"contract {c.contract_id} for {c.customer}: {c.free_visits} free "
                        f"on-site visits from {c.valid_from} to {c.valid_to}, then "
                        + (f"{c.rate} CNY per visit" if c.rate is not None
                           else "the standard price")))
    return 0


def cmd_contract_show(args: argparse.Namespace) -> int:
    cfg = ServerConfig.load(_home(args))

    async def show() -> list[ContractRecord]:
        store = await Store.open(cfg.db_url)
        try:
            if args.contract:
                one = await store.get_contract(args.contract)
                if one is None:
                    raise ServerError(f"no contract {args.contract}; list them with "
                                      "`hw-server contract show`")
                return [one]
            return await store.list_contracts(customer=args.customer)
        finally:
            await store.close()

    found = _run(show())
    if args.json:
        print(safe_json_dumps([_contract_json(c) for c in found]))
        return 0
    if not found:
        print("no contracts")
    for c in found:
        rate = f"{c.rate} CNY" if c.rate is not None else "standard price"
        print(printable(f"{c.contract_id}  {c.customer}  {c.valid_from}..{c.valid_to}  free "
                        f"visits {c.visits_used}/{c.free_visits} used, {c.remaining} left; "
                        f"then {rate}"))
    return 0


ONSITE_POLICY = "onsite-policy.toml"


def _onsite_policy(home: Path) -> Any:
    from .onsite.policy import load_policy

    path = home / ONSITE_POLICY
    return load_policy(path if path.is_file() else None)


def cmd_onsite_policy(args: argparse.Namespace) -> int:
    from .onsite.policy import policy_as_json

    data = policy_as_json(_onsite_policy(_home(args)))
    print(safe_json_dumps(data, default=str))
    return 0


def _local_time(value: datetime, tz: Any) -> datetime:
    """A ``--when``/``--now`` date-time; without an offset it is in the policy's time zone."""
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


def cmd_onsite_quote(args: argparse.Namespace) -> int:
    from .onsite.calendar import WorkCalendar
    from .onsite.coverage import nearest_base, resolve_city
    from .onsite.eligibility import ContractState
    from .onsite.errors import UnknownCity
    from .onsite.quote import quote

    home = _home(args)
    cfg = ServerConfig.load(home)
    policy = _onsite_policy(home)
    known_service(policy, args.service, "--service")
    tz = policy.hours.tz
    now = _local_time(args.now, tz) if args.now else datetime.now(tz)
    when = _local_time(args.when, tz)
    try:
        city = resolve_city(args.city)
        base, km = nearest_base(city, policy.bases)
    except UnknownCity as exc:
        raise ServerError(str(exc)) from None
    contract = None
    customer = args.customer
    if args.contract:
        async def fetch() -> ContractRecord | None:
            store = await Store.open(cfg.db_url)
            try:
                return await store.get_contract(args.contract)
            finally:
                await store.close()

        record = _run(fetch())
        if record is None:
            raise ServerError(f"no contract {args.contract}; list them with "
                              "`hw-server contract show`")
        contract = ContractState(free_visits=record.free_visits, used=record.visits_used,
                                 rate=record.rate, valid_from=record.valid_from,
                                 valid_to=record.valid_to)
        customer = customer or record.customer
    promotion = policy.active_promotion(customer, now.astimezone(tz).date()) is not None
    q = quote(policy=policy, calendar=WorkCalendar(policy), customer_kind=args.customer_kind,
              contract=contract, city=city, distance_km=km, service=args.service, when=when,
              urgent=args.urgent, now=now, case_state=args.case_state, promotion=promotion,
              hours=args.hours)
    data = q.as_json()
    data["base"] = base.name
    if args.json:
        print(safe_json_dumps(data, default=str))
        return 0
    verdict = "eligible" if data["eligible"] else "NOT eligible"
    print(f"{args.service} in {city.name} (tier {city.tier}, {km:.0f} km from {base.name}): "
          f"{verdict}")
    for reason in data["reasons"]:
        print(f"  - {reason}")
    print(f"earliest standard date: {data['earliest_standard']}"
          + ("  (calendar provisional)" if data["provisional"] else ""))
    if data["price"]:
        for item in data["price"]["items"]:
            print(f"  {item['name']:<40} {item['amount']:>6} {data['currency']}")
        print(f"  {'total':<40} {data['price']['total']:>6} {data['currency']}")
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    cfg = ServerConfig.load(_home(args))

    async def show() -> list[AuditEntry]:
        store = await Store.open(cfg.db_url)
        try:
            return await store.list_audit(limit=args.limit, subject=args.subject)
        finally:
            await store.close()

    entries: list[AuditEntry] = _run(show())
    if args.json:
        print(safe_json_dumps([_audit_json(e) for e in entries]))
        return 0
    if not entries:
        print("the audit log is empty" if args.subject is None
              else f"no audit entries about {printable(args.subject)}")
        return 0
    rows = [(str(e.id), human_time(e.at, seconds=True), printable(e.actor, keep_newlines=False),
             printable(e.event, keep_newlines=False), printable(e.subject, keep_newlines=False),
             _clip(safe_json_dumps(e.detail, indent=None, sort_keys=True), 80))
            for e in entries]
    header = ("ID", "AT", "ACTOR", "EVENT", "SUBJECT", "DETAIL")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print(printable("  ".join([*cells, row[-1]]).rstrip()))
    return 0


# -- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(add_help=False)
    top.add_argument("--home", metavar="DIR", help="server home directory (default: $HW_HOME)")
    common = argparse.ArgumentParser(add_help=False)  # same flag after the command
    common.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                        help="server home directory (default: $HW_HOME)")
    p = argparse.ArgumentParser(
        prog="hw-server", parents=[top],
        description="HelloWord support server: keys, enrollment, technicians, and the "
                    "TLS websocket service agents and technicians connect to.",
        epilog="Exit codes: 0 ok, 1 refused or failed (reason on stderr), 2 usage error.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("init", parents=[common], help="create a server home: CA, server "
                       "certificate, org key, config, database")
    s.add_argument("--listen", default="127.0.0.1:8765", metavar="HOST:PORT",
                   type=listen_address, help="address to serve on (default 127.0.0.1:8765)")
    s.add_argument("--name", action="append", default=[], metavar="HOST", type=host_name,
                   help="extra DNS name or IP for the server certificate (repeatable)")
    s.add_argument("--public-url", action="append", metavar="wss://HOST:PORT", type=public_url,
                   help="URL agents dial, if not the listen address (repeatable)")
    s.add_argument("--db", metavar="URL", type=store_url, help="store URL written to "
                   "config.toml, e.g. "
                   "postgresql+asyncpg://hw@127.0.0.1:5432/helloword (default: SQLite "
                   "store.db in the home); the database must exist, init migrates it")
    s.add_argument("--org-pub", metavar="FILE", help="the organisation's public key (org.pub "
                   "from hw-org init): the home gets no org.key, technicians and revocation "
                   "lists are signed offline (default: make org.key in the home)")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("run", parents=[common], help="serve in the foreground; one log line "
                       "per connection")
    s.add_argument("--listen", metavar="HOST:PORT", type=listen_address,
                   help="override the configured address")
    s.add_argument("--db", metavar="URL", type=store_url, help="store URL overriding `db` "
                   "in config.toml, "
                   "e.g. postgresql+asyncpg://hw@127.0.0.1:5432/helloword (other hw-server "
                   "commands read config.toml: put it there)")
    s.add_argument("--bus", metavar="URL", type=bus_url, help="NATS URL joining several "
                   "nodes, e.g. "
                   "nats://127.0.0.1:4222 (needs a PostgreSQL --db shared by all nodes)")
    s.add_argument("--node-id", metavar="ID", type=node_id, help="this node's name, unique "
                   "among the nodes (with --bus): 1-64 letters, digits, '-', '_' or '.'")
    s.set_defaults(func=cmd_run)

    c = sub.add_parser("cert", parents=[common], help="the server's TLS certificate")
    csub = c.add_subparsers(dest="cert_command", required=True, metavar="ACTION")
    s = csub.add_parser("renew", parents=[common], help="issue a new server certificate from "
                        "the same CA (agents keep working: they pin the CA)")
    s.add_argument("--name", action="append", metavar="HOST", type=host_name,
                   help="DNS name or IP it is valid for (repeatable; default: the names "
                        "given at init)")
    s.set_defaults(func=cmd_cert_renew)

    s = sub.add_parser("enroll-token", parents=[common],
                       help="print a single-use enrollment token for one customer machine")
    s.add_argument("--customer", required=True, type=customer_name, metavar="NAME",
                   help="customer name, 1-128 characters (the token carries it)")
    s.add_argument("--kind", required=True, choices=KINDS, help="customer kind")
    s.add_argument("--city", required=True, type=city, help="customer city, one the on-site "
                   "coverage knows (e.g. 上海 or Shanghai; `hw-server onsite policy`)")
    s.add_argument("--ttl", type=TTL_HOURS, metavar="HOURS",
                   help="validity in hours, more than 0 up to 720 (default from config: 24)")
    s.add_argument("--contract", metavar="ID", type=contract_id, help="the customer's "
                   "service contract (hw-server contract show); checked to be this customer's")
    s.set_defaults(func=cmd_enroll_token)

    c = sub.add_parser("contract", parents=[common], help="enterprise service contracts "
                       "(free on-site visits per period)")
    csub = c.add_subparsers(dest="contract_command", required=True, metavar="ACTION")
    s = csub.add_parser("add", parents=[common], help="record a service contract")
    s.add_argument("--customer", required=True, type=customer_name, metavar="NAME",
                   help="customer name, 1-128 characters")
    s.add_argument("--free-visits", type=FREE_VISITS, required=True, metavar="N",
                   help="free on-site visits in the period, 0-1000")
    s.add_argument("--from", dest="valid_from", type=day, required=True, metavar="DATE",
                   help="first day, e.g. 2026-01-01 (years 2000-2099)")
    s.add_argument("--to", dest="valid_to", type=day, required=True, metavar="DATE",
                   help="last day (years 2000-2099)")
    s.add_argument("--rate", type=RATE_CNY, metavar="CNY",
                   help="price per visit once the free visits are used, 0-100000 "
                        "(default: standard)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_contract_add)
    s = csub.add_parser("show", parents=[common], help="contracts and their free-visit ledger")
    s.add_argument("contract", nargs="?", metavar="ID", type=contract_id,
                   help="one contract (default: all)")
    s.add_argument("--customer", type=customer_name, metavar="NAME",
                   help="only this customer's contracts")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_contract_show)

    o = sub.add_parser("onsite", parents=[common], help="on-site service policy and quotes")
    osub = o.add_subparsers(dest="onsite_command", required=True, metavar="ACTION")
    s = osub.add_parser("policy", parents=[common], help="print the on-site policy in force "
                        f"(defaults merged with {ONSITE_POLICY} in the home)")
    s.add_argument("--json", action="store_true", help="(the output is always JSON)")
    s.set_defaults(func=cmd_onsite_policy)
    s = osub.add_parser("quote", parents=[common], help="what-if quote for an on-site visit: "
                        "eligibility, coverage, earliest standard date, price items")
    s.add_argument("--customer-kind", required=True,
                   choices=("individual", "small-business", "enterprise"))
    s.add_argument("--contract", metavar="ID", type=contract_id,
                   help="service contract (hw-server contract)")
    s.add_argument("--customer", metavar="NAME", type=customer_name,
                   help="customer name (promotions)")
    s.add_argument("--city", required=True, type=city,
                   help="city or address, e.g. 成都 or Chengdu")
    s.add_argument("--service", required=True, type=service_name,
                   help="service type (see `onsite policy`)")
    s.add_argument("--when", required=True, metavar="DATETIME", type=date_time,
                   help="slot start, e.g. 2026-12-02T10:00 (policy time zone if no offset)")
    s.add_argument("--urgent", action="store_true", help="customer asks for urgent service")
    s.add_argument("--now", metavar="DATETIME", type=date_time,
                   help="answer as of this time (reproducible)")
    s.add_argument("--case-state", metavar="STATE", choices=CASE_STATES,
                   help="the case's state, e.g. needs-onsite (a failed remote attempt)")
    s.add_argument("--hours", type=VISIT_HOURS, metavar="H", help="expected duration if not "
                   "the service's estimate: more than 0, up to 24")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_onsite_quote)

    t = sub.add_parser("tech", parents=[common], help="manage technicians")
    tsub = t.add_subparsers(dest="tech_command", required=True, metavar="ACTION")
    s = tsub.add_parser("add", parents=[common], help="issue a technician key, an OpenSSH "
                        "certificate signed by the org key, and a profile")
    s.add_argument("name", type=tech_name, help="technician name (certificate principal): "
                   "1-64 lower-case letters, digits, '.', '_' or '-'")
    s.add_argument("--out", required=True, metavar="DIR", help="technician home to write")
    s.add_argument("--days", type=CERT_DAYS, default=90, metavar="N",
                   help="certificate validity in days, 1-365 (default 90)")
    s.add_argument("--replace", action="store_true", help="overwrite an existing key in --out")
    s.add_argument("--cert", metavar="FILE", help="register this certificate signed "
                   "elsewhere (hw-org sign, ssh-keygen -s) instead of issuing a key: checked "
                   "against org.pub, principal NAME, validity (the only way without org.key)")
    s.add_argument("--role", action="append", choices=[r.value for r in Role], metavar="ROLE",
                   help="a role the certificate carries, repeatable: "
                        + ", ".join(r.value for r in Role) + " (default: remote; "
                        "docs/security.md#roles)")
    s.set_defaults(func=cmd_tech_add)
    s = tsub.add_parser("list", parents=[common], help="the technicians, their roles and "
                        "certificates' validity (the certificate is the authority on roles)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_tech_list)
    s = tsub.add_parser("revoke", parents=[common], help="revoke a technician: refused by the "
                        "server at once; with org.key here the signed revocation list is "
                        "re-signed, else it says what to sign offline")
    s.add_argument("name", type=tech_name)
    s.set_defaults(func=cmd_tech_revoke)

    r = sub.add_parser("revocations", parents=[common], help="the organisation-signed "
                       "revocation list this server distributes to agents")
    rsub = r.add_subparsers(dest="revocations_command", required=True, metavar="ACTION")
    s = rsub.add_parser("load", parents=[common], help="load a list signed offline (hw-org "
                        "revocations); checks the signature and that it is newer")
    s.add_argument("file", metavar="FILE")
    s.set_defaults(func=cmd_revocations_load)
    s = rsub.add_parser("show", parents=[common], help="the list held: number, issue time, "
                        "next update, revoked keys")
    s.add_argument("--json", action="store_true", help="JSON with keys layout, sequence, "
                   "issued, next_update, fingerprints")
    s.set_defaults(func=cmd_revocations_show)

    a = sub.add_parser("audit", parents=[common], help="check or show the hash-chained "
                       "audit log")
    asub = a.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    s = asub.add_parser("verify", parents=[common], help="re-hash the audit log; exit 1 "
                        "naming the first broken link; prints the head hash to record")
    s.set_defaults(func=cmd_audit_verify)
    s = asub.add_parser("show", parents=[common], help="list the newest audit entries, "
                        "oldest of them first")
    s.add_argument("--limit", type=AUDIT_LIMIT, default=50, metavar="N",
                   help="how many of the newest entries, 1-10000 (default 50)")
    s.add_argument("--subject", metavar="S", type=subject_text,
                   help="only entries about S (a case, an agent)")
    s.add_argument("--json", action="store_true", help="JSON array with keys id, at, actor, "
                   "event, subject, detail, hash (hex)")
    s.set_defaults(func=cmd_audit_show)
    add_onsite_commands(sub, common)
    add_recording_commands(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # asyncssh (imported later, lazily) trips cryptography's deprecations: ours only, please.
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning,
                            module=r"asyncssh(\.|$)")
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as exc:  # bad input only the home can judge: a usage error too
        print(printable(f"hw-server: error: {exc}"), file=sys.stderr)
        return 2
    except (ServerError, StoreError, OSError, ValueError) as exc:
        print(printable(f"hw-server: error: {exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
