"""Built-in probe ``network``: interfaces, default route, DNS, reach of the support server.

Readings::

    {"interfaces": [{name, isup, loopback, mtu, speed_mbps, packets_sent, packets_recv,
                     errin, errout, dropin, dropout}, ...],       # up ones first, at most
     "interfaces_skipped": n,                                      # MAX_INTERFACES
     "default_routes": [{family, interface, gateway}, ...],        # Linux only
     "dns": {name, ok, addresses, error, timeout_s},
     "server": {host, port, reachable, error, timeout_s} | {skipped: reason}}

Counters are totals since boot (``None`` when the OS gives none for an interface).
``default_routes`` is read from ``/proc/net/route`` and ``/proc/net/ipv6_route``; it is
absent on other platforms, and absent when those files cannot be read. The name resolved
is ``args["dns_name"]``, else ``args["server_host"]``, else ``localhost``; the server is
reached over TCP at ``args["server_host"]``/``args["server_port"]``. Each of the two
network checks is bounded by :data:`DNS_TIMEOUT_S` / :data:`TCP_TIMEOUT_S`.

Findings (``docs/findings.md#network``): ``network.all_interfaces_down``,
``network.no_default_route``, ``network.dns_failed``, ``network.server_unreachable``,
``network.interface_errors``.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import psutil

from plugins import hookimpl
from plugins.api import NotAvailable, Probe, ProbeContext, finding, number
from proto.messages import Category, Finding, Severity

NAME = "network"
VERSION = "1"

#: Seconds a DNS resolution may take before it counts as failed.
DNS_TIMEOUT_S = 2.0
#: Seconds a TCP connection to the support server may take before it counts as failed.
TCP_TIMEOUT_S = 2.0
#: Name resolved when the request names neither ``dns_name`` nor ``server_host``.
DEFAULT_DNS_NAME = "localhost"
#: Errors plus drops above this fraction of the packets of an interface is a warning.
INTERFACE_ERROR_RATIO = 0.01
#: An interface with fewer packets than this since boot is not judged (too few to tell).
INTERFACE_MIN_PACKETS = 1000
#: At most this many interfaces are read (the rest are counted in ``interfaces_skipped``).
MAX_INTERFACES = 64
#: At most this many resolved addresses are kept.
MAX_ADDRESSES = 8

ALL_INTERFACES_DOWN = "network.all_interfaces_down"
NO_DEFAULT_ROUTE = "network.no_default_route"
DNS_FAILED = "network.dns_failed"
SERVER_UNREACHABLE = "network.server_unreachable"
INTERFACE_ERRORS = "network.interface_errors"
FINDING_CODES: tuple[str, ...] = (
    ALL_INTERFACES_DOWN,
    NO_DEFAULT_ROUTE,
    DNS_FAILED,
    SERVER_UNREACHABLE,
    INTERFACE_ERRORS,
)

_PROC_ROUTE = Path("/proc/net/route")
_PROC_ROUTE6 = Path("/proc/net/ipv6_route")
_RTF_UP = 0x0001
_RTF_REJECT = 0x0200
_MAX_NAME = 253
_MAX_ERROR = 200
_COUNTERS = ("packets_sent", "packets_recv", "errin", "errout", "dropin", "dropout")

_T = TypeVar("_T")


# -- reading ------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:_MAX_ERROR]


def _bounded(call: Callable[[], _T], timeout: float) -> _T:
    """``call()`` on a daemon thread; :class:`TimeoutError` if it takes over ``timeout`` s.

    A resolver stuck past the timeout is abandoned (the thread ends when the OS gives up),
    so the probe itself never waits longer than ``timeout``.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    worker = threading.Thread(target=target, name=f"hw-{NAME}-check", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    value: _T = box["value"]
    return value


def _is_loopback(name: str, flags: str) -> bool:
    lowered = name.lower()
    return (
        "loopback" in flags.split(",")
        or lowered in ("lo", "lo0")
        or lowered.startswith("loopback")  # Windows: "Loopback Pseudo-Interface 1"
    )


def _interfaces() -> tuple[list[dict[str, Any]], int]:
    try:
        stats = psutil.net_if_stats()
        counters = psutil.net_io_counters(pernic=True)
    except (OSError, NotImplementedError, RuntimeError) as exc:
        raise NotAvailable(f"network interfaces are not readable here ({_describe(exc)})") from exc
    entries: list[dict[str, Any]] = []
    for name in set(stats) | set(counters):
        stat = stats.get(name)
        io = counters.get(name)
        entry: dict[str, Any] = {
            "name": name,
            "isup": bool(stat.isup) if stat is not None else None,
            "loopback": _is_loopback(name, getattr(stat, "flags", "") or ""),
            "mtu": stat.mtu if stat is not None and stat.mtu > 0 else None,
            "speed_mbps": stat.speed if stat is not None and stat.speed > 0 else None,
        }
        for key in _COUNTERS:
            entry[key] = int(getattr(io, key)) if io is not None else None
        entries.append(entry)
    entries.sort(key=lambda e: (e["isup"] is not True, e["name"]))
    return entries[:MAX_INTERFACES], max(0, len(entries) - MAX_INTERFACES)


def _default_routes() -> list[dict[str, Any]] | None:
    """Default routes from ``/proc/net/route`` and ``ipv6_route``; ``None`` if unreadable."""
    routes: list[dict[str, Any]] = []
    try:
        lines = _PROC_ROUTE.read_text(encoding="ascii", errors="replace").splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, destination, gateway, flags, mask = (
            fields[0], fields[1], fields[2], fields[3], fields[7]
        )
        try:
            if int(destination, 16) or int(mask, 16) or not int(flags, 16) & _RTF_UP:
                continue
            gateway_ip = socket.inet_ntoa(struct.pack("<I", int(gateway, 16)))
        except (ValueError, struct.error, OSError):
            continue
        routes.append({"family": "ipv4", "interface": iface, "gateway": gateway_ip})
    try:
        lines6 = _PROC_ROUTE6.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        lines6 = []  # IPv6 disabled: IPv4 routes alone decide
    for line in lines6:
        fields = line.split()
        if len(fields) < 10:
            continue
        destination, prefix, next_hop, flags, iface = (
            fields[0], fields[1], fields[4], fields[8], fields[9]
        )
        try:
            flag_bits = int(flags, 16)
            if int(destination, 16) or int(prefix, 16):
                continue
            if not flag_bits & _RTF_UP or flag_bits & _RTF_REJECT or iface == "lo":
                continue
            gateway_ip = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(next_hop))
        except (ValueError, OSError):
            continue
        routes.append({"family": "ipv6", "interface": iface, "gateway": gateway_ip})
    return routes


def _text_arg(args: Mapping[str, Any], key: str) -> str | None:
    value = args.get(key)
    if isinstance(value, str) and 0 < len(value) <= _MAX_NAME and value.isprintable():
        return value
    return None


def _port_arg(args: Mapping[str, Any]) -> int | None:
    value = args.get("server_port")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
        return value
    return None


def _resolve(name: str) -> dict[str, Any]:
    result: dict[str, Any] = {"name": name, "timeout_s": DNS_TIMEOUT_S}
    try:
        infos = _bounded(
            lambda: socket.getaddrinfo(name, None, type=socket.SOCK_STREAM), DNS_TIMEOUT_S
        )
    except (OSError, UnicodeError) as exc:  # gaierror and TimeoutError are OSErrors
        result.update(ok=False, addresses=[], error=_describe(exc))
        return result
    addresses = sorted({str(info[4][0]) for info in infos})
    result.update(ok=bool(addresses), addresses=addresses[:MAX_ADDRESSES], error="")
    if not addresses:
        result["error"] = "no address returned"
    return result


def _connect(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=TCP_TIMEOUT_S):
        pass


def _reach(host: str | None, port: int | None) -> dict[str, Any]:
    if host is None or port is None:
        return {"skipped": "the request names no server_host and server_port to reach"}
    result: dict[str, Any] = {"host": host, "port": port, "timeout_s": TCP_TIMEOUT_S}
    try:
        _bounded(lambda: _connect(host, port), TCP_TIMEOUT_S)
    except (OSError, UnicodeError) as exc:
        result.update(reachable=False, error=_describe(exc))
    else:
        result.update(reachable=True, error="")
    return result


def read(ctx: ProbeContext) -> dict[str, Any]:
    """Read the interfaces and routes, resolve a name, and try the support server.

    Raises:
        NotAvailable: the OS does not let the agent list its network interfaces.
    """
    interfaces, skipped = _interfaces()
    readings: dict[str, Any] = {"interfaces": interfaces, "interfaces_skipped": skipped}
    if sys.platform.startswith("linux"):
        routes = _default_routes()
        if routes is not None:
            readings["default_routes"] = routes
    host = _text_arg(ctx.args, "server_host")
    readings["dns"] = _resolve(_text_arg(ctx.args, "dns_name") or host or DEFAULT_DNS_NAME)
    readings["server"] = _reach(host, _port_arg(ctx.args))
    return readings


# -- evaluating ---------------------------------------------------------------------------


def _all_down(interfaces: list[Any]) -> Finding | None:
    physical = [
        i for i in interfaces if isinstance(i, Mapping) and i.get("loopback") is False
    ]
    if not physical or any(i.get("isup") is not False for i in physical):
        return None  # an unknown state (None) is not "down"
    names = [str(i.get("name")) for i in physical]
    shown = ", ".join(names[:8])
    return finding(
        ALL_INTERFACES_DOWN,
        Severity.CRITICAL,
        Category.NETWORK,
        f"Every network interface is down ({shown}): check the cable, Wi-Fi switch or "
        "flight mode.",
        f"所有网络接口均已断开（{shown}）：请检查网线、无线网络开关或飞行模式。",
        {"interfaces": [
            {"name": i.get("name"), "isup": i.get("isup")} for i in physical[:MAX_INTERFACES]
        ], "threshold": "every non-loopback interface down"},
    )


def _interface_errors(entry: Mapping[str, Any]) -> Finding | None:
    if entry.get("loopback") is True:
        return None
    sent = number(entry, "packets_sent")
    recv = number(entry, "packets_recv")
    if sent is None or recv is None or sent + recv < INTERFACE_MIN_PACKETS:
        return None
    values = [number(entry, key) for key in ("errin", "errout", "dropin", "dropout")]
    bad = sum(v for v in values if v is not None)
    ratio = bad / (sent + recv)
    if ratio <= INTERFACE_ERROR_RATIO:
        return None
    name = str(entry.get("name"))
    return finding(
        INTERFACE_ERRORS,
        Severity.WARNING,
        Category.NETWORK,
        f"Network interface {name} lost {ratio:.1%} of its packets to errors and drops: "
        "check the cable, the Wi-Fi signal or the network adapter's driver.",
        f"网络接口 {name} 有 {ratio:.1%} 的数据包出错或被丢弃：请检查网线、无线信号或网卡驱动。",
        {
            **{key: entry.get(key) for key in ("name", *_COUNTERS)},
            "ratio": round(ratio, 6),
            "threshold_ratio": INTERFACE_ERROR_RATIO,
            "threshold_min_packets": INTERFACE_MIN_PACKETS,
        },
    )


def _no_default_route(readings: Mapping[str, Any]) -> Finding | None:
    routes = readings.get("default_routes")
    if not isinstance(routes, list) or routes:
        return None  # absent: this platform was not asked
    return finding(
        NO_DEFAULT_ROUTE,
        Severity.WARNING,
        Category.NETWORK,
        "The computer has no default route (no gateway): it cannot reach the Internet. "
        "Check the network connection or its settings (DHCP).",
        "电脑没有默认路由（没有网关）：无法访问互联网。请检查网络连接或其设置（DHCP）。",
        {"default_routes": [], "threshold": "at least one default route (IPv4 or IPv6)"},
    )


def _dns_failed(dns: Any) -> Finding | None:
    if not isinstance(dns, Mapping) or dns.get("ok") is not False:
        return None
    name = str(dns.get("name"))
    return finding(
        DNS_FAILED,
        Severity.WARNING,
        Category.NETWORK,
        f"The name {name} could not be resolved ({dns.get('error') or 'no answer'}): "
        "check the DNS settings or the network connection.",
        f"无法解析域名 {name}：请检查 DNS 设置或网络连接。",
        {
            "name": dns.get("name"),
            "error": dns.get("error"),
            "addresses": dns.get("addresses"),
            "threshold_timeout_s": dns.get("timeout_s", DNS_TIMEOUT_S),
        },
    )


def _server_unreachable(server: Any) -> Finding | None:
    if not isinstance(server, Mapping) or server.get("reachable") is not False:
        return None
    where = f"{server.get('host')}:{server.get('port')}"
    return finding(
        SERVER_UNREACHABLE,
        Severity.WARNING,
        Category.NETWORK,
        f"The support server {where} cannot be reached over TCP "
        f"({server.get('error') or 'no answer'}): a firewall, proxy or the connection "
        "blocks it.",
        f"无法通过 TCP 连接支持服务器 {where}：可能被防火墙、代理或网络连接阻止。",
        {
            "host": server.get("host"),
            "port": server.get("port"),
            "error": server.get("error"),
            "threshold_timeout_s": server.get("timeout_s", TCP_TIMEOUT_S),
        },
    )


def evaluate(readings: Mapping[str, Any]) -> list[Finding]:
    """Findings from ``network`` readings (pure); at most one ``interface_errors`` each."""
    interfaces = readings.get("interfaces")
    if not isinstance(interfaces, list):
        interfaces = []
    found: list[Finding | None] = [
        _all_down(interfaces),
        _no_default_route(readings),
        _dns_failed(readings.get("dns")),
        _server_unreachable(readings.get("server")),
    ]
    found += [_interface_errors(i) for i in interfaces if isinstance(i, Mapping)]
    return [f for f in found if f is not None]


@hookimpl
def hw_probes() -> list[Probe]:
    return [
        Probe(
            NAME,
            VERSION,
            read,
            "Network interfaces, default route, DNS and reach of the support server",
        )
    ]


@hookimpl
def hw_evaluate(probe: str, readings: Mapping[str, Any]) -> list[Finding]:
    return evaluate(readings) if probe == NAME else []
