"""plugins.network: interface, route, DNS and reach rules on recorded readings; read() here."""

from __future__ import annotations

import copy
import json
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from plugins import NotAvailable, ProbeContext, network
from proto.messages import Category, ProbeReport, ProbeStatus, Severity

CASES: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "network_cases.json").read_text(encoding="utf-8")
)


def case(name: str) -> dict[str, Any]:
    return copy.deepcopy(CASES[name])


def codes(readings: dict[str, Any]) -> list[str]:
    return [f.code for f in network.evaluate(readings)]


def wire_ready(readings: dict[str, Any]) -> ProbeReport:
    report = ProbeReport(
        probe=network.NAME, version=network.VERSION, status=ProbeStatus.OK,
        readings=readings, findings=network.evaluate(readings),
    )
    assert msgspec.json.decode(msgspec.json.encode(report), type=ProbeReport) == report
    return report


# -- evaluate on recorded readings ----------------------------------------------------------


def test_recorded_vm_has_no_finding() -> None:
    readings = case("linux_vm")
    assert readings["default_routes"], "the VM was recorded with a default route"
    assert codes(readings) == []


def test_no_default_route_and_failing_dns() -> None:
    findings = network.evaluate(case("laptop_no_route_dns_failing"))
    assert [f.code for f in findings] == [
        "network.no_default_route", "network.dns_failed", "network.server_unreachable"
    ]
    for f in findings:
        assert (f.severity, f.category, f.remote_fixable) == (
            Severity.WARNING, Category.NETWORK, False
        )
        assert f.summary and f.summary_zh
    route, dns, server = findings
    assert route.evidence["default_routes"] == []
    assert dns.evidence["name"] == "support.helloword.example"
    assert "support.helloword.example" in dns.summary
    assert "support.helloword.example" in dns.summary_zh
    assert "name resolution" in dns.evidence["error"]
    assert dns.evidence["threshold_timeout_s"] == network.DNS_TIMEOUT_S
    assert (server.evidence["host"], server.evidence["port"]) == (
        "support.helloword.example", 8443
    )


def test_all_interfaces_down_ignores_loopback() -> None:
    readings = case("desktop_cable_unplugged")
    findings = network.evaluate(readings)
    assert [f.code for f in findings] == [
        "network.all_interfaces_down", "network.no_default_route"
    ]
    down = findings[0]
    assert (down.severity, down.category) == (Severity.CRITICAL, Category.NETWORK)
    assert [i["name"] for i in down.evidence["interfaces"]] == ["eno1", "wlo1"]
    readings["interfaces"][2]["isup"] = True  # Wi-Fi comes up
    assert "network.all_interfaces_down" not in codes(readings)


def test_loopback_only_or_unknown_state_is_not_all_down() -> None:
    readings = case("desktop_cable_unplugged")
    readings["interfaces"] = [i for i in readings["interfaces"] if i["loopback"]]
    assert "network.all_interfaces_down" not in codes(readings)
    readings = case("desktop_cable_unplugged")
    readings["interfaces"][1]["isup"] = None  # counters but no stats: unknown, not down
    assert "network.all_interfaces_down" not in codes(readings)


def test_windows_shape_interface_errors_and_no_route_verdict() -> None:
    findings = network.evaluate(case("windows_bad_cable"))
    (f,) = findings  # no default_routes key on Windows: no route verdict
    assert f.code == "network.interface_errors"
    assert (f.severity, f.category) == (Severity.WARNING, Category.NETWORK)
    assert f.evidence["name"] == "Ethernet"
    assert f.evidence["errin"] == 9100
    assert f.evidence["ratio"] == pytest.approx(9100 / 500000)
    assert f.evidence["threshold_ratio"] == network.INTERFACE_ERROR_RATIO
    assert "Ethernet" in f.summary and "Ethernet" in f.summary_zh


@pytest.mark.parametrize(
    ("packets", "bad", "expected"),
    [
        (10000, 100, False),  # exactly the ratio: not above it
        (10000, 101, True),
        (999, 999, False),  # too few packets to judge
        (1000, 11, True),
        (1000, 0, False),
    ],
)
def test_interface_errors_boundary(packets: int, bad: int, expected: bool) -> None:
    readings = case("linux_vm")
    eth = readings["interfaces"][0]
    assert eth["name"] == "eth0"
    eth.update(packets_sent=packets // 2, packets_recv=packets - packets // 2,
               errin=bad // 2, dropout=bad - bad // 2, errout=0, dropin=0)
    assert codes(readings) == (["network.interface_errors"] if expected else [])


def test_loopback_errors_are_not_judged() -> None:
    readings = case("linux_vm")
    lo = next(i for i in readings["interfaces"] if i["name"] == "lo")
    lo.update(packets_sent=10000, packets_recv=10000, dropin=5000)
    assert codes(readings) == []


def test_skipped_checks_and_missing_keys_give_no_finding() -> None:
    assert network.evaluate({}) == []
    readings = case("linux_vm")
    readings["server"] = {"skipped": "no server"}
    readings["dns"] = {"name": "x", "ok": True, "addresses": ["1.2.3.4"], "error": ""}
    readings["interfaces"] = "garbage"
    assert codes(readings) == []


def test_hw_evaluate_answers_only_for_network() -> None:
    readings = case("laptop_no_route_dns_failing")
    assert network.hw_evaluate(probe="cpu", readings=readings) == []
    assert len(network.hw_evaluate(probe="network", readings=readings)) == 3


def test_finding_codes_are_all_used() -> None:
    seen: set[str] = set()
    for name in CASES:
        if not name.startswith("_"):
            seen.update(codes(case(name)))
    assert seen == set(network.FINDING_CODES)


# -- reading ---------------------------------------------------------------------------------


def test_read_here_is_wire_ready() -> None:
    try:
        readings = network.read(ProbeContext())
    except NotAvailable as exc:  # allowed, but it must say why
        assert str(exc)
        return
    wire_ready(readings)
    assert readings["interfaces"], "at least the loopback interface"
    assert readings["dns"]["name"] == network.DEFAULT_DNS_NAME
    assert "skipped" in readings["server"]
    if sys.platform.startswith("linux"):
        assert isinstance(readings["default_routes"], list)
    else:
        assert "default_routes" not in readings


def test_read_reaches_a_listening_server_and_not_a_closed_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        readings = network.read(
            ProbeContext(args={"server_host": "127.0.0.1", "server_port": port})
        )
        assert readings["server"]["reachable"] is True
        assert readings["dns"] == {
            "name": "127.0.0.1", "timeout_s": network.DNS_TIMEOUT_S, "ok": True,
            "addresses": ["127.0.0.1"], "error": "",
        }
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    readings = network.read(ProbeContext(args={"server_host": "127.0.0.1", "server_port": port}))
    assert readings["server"]["reachable"] is False
    assert "Refused" in readings["server"]["error"]
    report = wire_ready(readings)
    assert "network.server_unreachable" in [f.code for f in report.findings]


def test_read_reports_an_unresolvable_name() -> None:
    readings = network.read(ProbeContext(args={"dns_name": "no-such-host.invalid"}))
    assert readings["dns"]["ok"] is False and readings["dns"]["error"]
    assert "network.dns_failed" in [f.code for f in wire_ready(readings).findings]


@pytest.mark.parametrize(
    "args",
    [{}, {"server_host": "127.0.0.1"}, {"server_host": "127.0.0.1", "server_port": True},
     {"server_host": "127.0.0.1", "server_port": "http"},
     {"server_host": "127.0.0.1", "server_port": 70000},
     {"server_host": "a\nb", "server_port": 443}, {"server_host": 5, "server_port": 443}],
)
def test_read_skips_the_server_without_valid_args(args: dict[str, Any]) -> None:
    readings = network.read(ProbeContext(args=args))
    assert set(readings["server"]) == {"skipped"}


def test_bounded_gives_up_on_a_hung_call() -> None:
    release = threading.Event()
    try:
        with pytest.raises(TimeoutError):
            network._bounded(lambda: release.wait(30), 0.05)
    finally:
        release.set()
    assert network._bounded(lambda: 42, 1.0) == 42
    with pytest.raises(ZeroDivisionError):
        network._bounded(lambda: 1 // 0, 1.0)


ROUTE_HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
ROUTE_DEFAULT = "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
ROUTE_LINK = "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
ROUTE6_DEFAULT = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n"
)
ROUTE6_REJECT_LO = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
)


@pytest.mark.parametrize(
    ("route", "route6", "expected"),
    [
        (ROUTE_DEFAULT + ROUTE_LINK, ROUTE6_REJECT_LO,
         [{"family": "ipv4", "interface": "eth0", "gateway": "192.0.2.1"}]),
        (ROUTE_LINK, ROUTE6_REJECT_LO, []),
        (ROUTE_LINK, ROUTE6_DEFAULT,
         [{"family": "ipv6", "interface": "eth0", "gateway": "fd00::1"}]),
        (ROUTE_LINK, None, []),  # IPv6 disabled
        (None, ROUTE6_DEFAULT, None),  # no /proc: not known, not "no route"
    ],
)
def test_default_routes_from_proc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str | None, route6: str | None,
    expected: list[dict[str, str]] | None,
) -> None:
    for attr, text in (("_PROC_ROUTE", route), ("_PROC_ROUTE6", route6)):
        path = tmp_path / attr
        if text is not None:
            path.write_text(ROUTE_HEADER + text if attr == "_PROC_ROUTE" else text)
        monkeypatch.setattr(network, attr, path)
    assert network._default_routes() == expected


def test_every_code_has_a_row_in_docs_findings() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "findings.md").read_text(encoding="utf-8")
    for code in network.FINDING_CODES:
        assert f"| `{code}` |" in docs, code
