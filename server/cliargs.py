"""What ``hw-server``'s command modules share: the home directory, the event loop, and the
type and bounds of every argument (argparse ``type=`` functions)."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import re
from collections.abc import Coroutine
from datetime import date, datetime
from pathlib import Path
from typing import Any

from proto.argtypes import FloatRange, IntRange, name_arg
from proto.textsafe import check_name, safe_repr

from .config import parse_listen
from .errors import ServerError


def _home(args: argparse.Namespace) -> Path:
    home = args.home or os.environ.get("HW_HOME")
    if not home:
        raise ServerError("no home directory: pass --home DIR or set HW_HOME")
    return Path(home)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # Windows: the stock asyncio loop
        return asyncio.run(coro)
    return uvloop.run(coro)


# -- argument types: every option's bounds in one place (docs/security.md#hostile-input) --


class UsageError(ServerError):
    """Bad input that only the home can judge (a service its policy does not know): exit 2,
    like argparse's own usage errors."""


# The enrollment token carries the customer name in at most 128 characters
# (proto/token.py); the store's columns are wider.
CUSTOMER_MAX = 128
CITY_MAX = 100  # customers.city
TTL_HOURS = FloatRange(0, 720, "hours")
CERT_DAYS = IntRange(1, 365, "days")
FREE_VISITS = IntRange(0, 1000, "visits")
RATE_CNY = IntRange(0, 100_000, "CNY")
AUDIT_LIMIT = IntRange(1, 10_000, "entries")
DAILY_CAPACITY = IntRange(1, 20, "visits per day")
VISIT_HOURS = FloatRange(0, 24, "hours")
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2099, 12, 31)

customer_name = name_arg("customer name", CUSTOMER_MAX)
subject_text = name_arg("subject", 200)
field_tech_name = name_arg("field technician name", 128)
_city_text = name_arg("city", CITY_MAX)
_service_text = name_arg("service", 64)

TECH_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}\Z")
CONTRACT_ID = re.compile(r"^CT-[0-9]{4,9}\Z")
TICKET_ID = re.compile(r"^TK-[0-9]{8}-[0-9]{4,6}\Z")
_HOST = re.compile(r"^[A-Za-z0-9_.:-]{1,253}\Z")
_URL = re.compile(r"^wss://[^\s/]+(/[^\s]*)?\Z")


def tech_name(text: str) -> str:
    """argparse type: a technician name, the certificate principal."""
    if not TECH_NAME.match(text):
        raise argparse.ArgumentTypeError(
            f"technician name {safe_repr(text)} is not valid: use 1-64 lower-case letters, "
            "digits, '.', '_' or '-', starting with a letter")
    return text


def contract_id(text: str) -> str:
    """argparse type: a contract id like CT-0001."""
    if not CONTRACT_ID.match(text.strip()):
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a contract id (like "
                                         "CT-0001; see `hw-server contract show`)")
    return text.strip()


def ticket_id(text: str) -> str:
    """argparse type: an on-site ticket like TK-20261126-0001."""
    if not TICKET_ID.match(text.strip()):
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a ticket (like "
                                         "TK-20261126-0001)")
    return text.strip()


def city(text: str) -> str:
    """argparse type: a city the on-site coverage data knows (``server/onsite/cities.json``:
    a Chinese name, pinyin or an address naming one); the text as given, stripped. An
    unknown one is refused with the closest known names."""
    from .onsite.coverage import cities, resolve_city
    from .onsite.errors import UnknownCity

    value = _city_text(text)
    try:
        resolve_city(value)
    except UnknownCity as exc:
        known = {c.name: c.name for c in cities()}
        known.update({c.pinyin.casefold(): f"{c.name} ({c.pinyin})" for c in cities()})
        close = difflib.get_close_matches(value.casefold(), list(known), n=4, cutoff=0.6)
        hint = ("; did you mean " + ", ".join(dict.fromkeys(known[k] for k in close)) + "?"
                if close else "")
        raise argparse.ArgumentTypeError(f"{exc}{hint}") from None
    return value


def service_name(text: str) -> str:
    """argparse type: the shape of a service name; :func:`known_service` checks it against
    the home's on-site policy."""
    return _service_text(text)


def service_list(text: str) -> list[str]:
    """argparse type: service names separated by commas (``--skills``)."""
    names = [service_name(s) for s in text.split(",") if s.strip()]
    if not names or len(names) > 32:
        raise argparse.ArgumentTypeError("give 1-32 service names separated by commas "
                                         "(see `hw-server onsite policy`)")
    return list(dict.fromkeys(names))


def known_service(policy: Any, names: str | list[str], option: str) -> None:
    """Refuse (exit 2) a service the on-site policy does not list, naming the close ones."""
    known = [s.name for s in policy.services]
    for name in [names] if isinstance(names, str) else names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            raise UsageError(f"{option} {safe_repr(name)} is not a service of the on-site "
                             f"policy" + (f" (did you mean {', '.join(close)}?)" if close
                                           else "")
                             + f"; known: {', '.join(known)}")


def day(text: str) -> date:
    """argparse type: a date like 2026-01-31, from 2000 to 2099."""
    try:
        value = date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a date like "
                                         "2026-01-31") from None
    if not FIRST_DAY <= value <= LAST_DAY:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give a date from "
                                         f"{FIRST_DAY} to {LAST_DAY}")
    return value


def date_time(text: str) -> datetime:
    """argparse type: an ISO date-time from 2000 to 2099, with or without an offset (the
    command reads one without in the policy's time zone)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a date-time like "
                                         "2026-12-02T10:00") from None
    if not FIRST_DAY <= value.date() <= LAST_DAY:
        raise argparse.ArgumentTypeError(f"{text.strip()} is out of range; give a date-time "
                                         f"from {FIRST_DAY} to {LAST_DAY}")
    return value


def listen_address(text: str) -> str:
    """argparse type: ``HOST:PORT`` or ``[V6]:PORT`` to serve on."""
    try:
        host, _port = parse_listen(text)
    except ServerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    host_name(host)
    return text


def host_name(text: str) -> str:
    """argparse type: a DNS name or IP address for the server certificate."""
    if not _HOST.match(text):
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a host name or IP "
                                         "address (letters, digits, '.', '-', ':')")
    return text


def public_url(text: str) -> str:
    """argparse type: a URL agents dial, ``wss://HOST:PORT[/PATH]`` (what a token carries)."""
    if len(text) > 512 or not _URL.match(text):
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a wss:// URL like "
                                         "wss://support.example.cn:8765")
    return text


def node_id(text: str) -> str:
    """argparse type: a node's name: 1-64 letters, digits, '-', '_' or '.'."""
    if not 0 < len(text) <= 64 or not all(c.isascii() and (c.isalnum() or c in "-_.")
                                          for c in text):
        raise argparse.ArgumentTypeError(f"node id {safe_repr(text)} is not valid: use 1-64 "
                                         "letters, digits, '-', '_' or '.'")
    return text


def _url_text(text: str) -> str:
    """A URL that may carry a password: checked like a name, never echoed in the error."""
    try:
        return check_name(text, what="the URL", max_length=1024)
    except ValueError:
        raise argparse.ArgumentTypeError("the URL is empty, longer than 1024 characters or "
                                         "holds a control character; check it") from None


def store_url(text: str) -> str:
    """argparse type: a store URL (``--db``): sqlite+aiosqlite:///PATH or
    postgresql+asyncpg://USER@HOST/DB; it is written to config.toml, so no control
    characters."""
    from sqlalchemy.engine import make_url

    value = _url_text(text)
    try:
        backend = make_url(value).get_backend_name()
    except Exception:
        raise argparse.ArgumentTypeError("not a database URL; use e.g. "
                                         "postgresql+asyncpg://hw@db.example:5432/helloword"
                                         ) from None
    if backend not in ("sqlite", "postgresql"):
        raise argparse.ArgumentTypeError(f"names a {backend!r} database; the store supports "
                                         "sqlite+aiosqlite:///PATH and "
                                         "postgresql+asyncpg://USER@HOST/DB")
    return value


def bus_url(text: str) -> str:
    """argparse type: a NATS URL (``--bus``), e.g. nats://127.0.0.1:4222."""
    value = _url_text(text)
    if not re.match(r"^[a-z]+://\S+\Z", value):
        raise argparse.ArgumentTypeError("not a NATS URL like nats://127.0.0.1:4222")
    return value
