"""Fault simulation for demos and tests: ``HW_SIMULATE=thermal.fan_stalled,power.battery_worn``.

A simulation does not invent findings. It alters a probe's *readings* so that they show
the fault, and the runner (``agent/runner.py``) hands those readings to the real
``hw_evaluate`` hooks: the thresholds and the classification are exercised as on a faulty
machine. The runner marks the readings ``"simulated": true`` and every finding drawn from
them ``evidence["simulated"] = true``.

:data:`SIMULATIONS` maps each finding code to ``(probe name, alter)``; ``alter`` takes the
probe's real readings (``{}`` when the probe is not available on this machine) and returns
a copy altered to show the fault. Over readings that show no fault, each yields exactly its
own finding code. Processes and services that a simulation adds do not exist (a PID above
every platform's limit, a made-up unit name), so a fixer offered for them refuses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from plugins import cpu, disk, memory, network, power, processes, services, smart, system, thermal
from plugins.api import PluginError, number

__all__ = [
    "ENV",
    "SIMULATED_KEY",
    "SIMULATIONS",
    "parse_simulation",
    "simulated_readings",
]

#: Environment variable naming the faults to simulate (comma-separated finding codes).
ENV = "HW_SIMULATE"
#: Key set to ``True`` in simulated readings and in the evidence of their findings.
SIMULATED_KEY = "simulated"
#: A process id no platform hands out (above Linux's 2**22 limit, and odd: Windows PIDs
#: are multiples of 4), so ``process.terminate`` refuses it.
SIMULATED_PID = 4_194_305
#: A systemd unit that does not exist, so ``service.restart`` fails harmlessly.
SIMULATED_UNIT = "hw-simulated-fault.service"

_GIB = 1024**3

Readings = dict[str, Any]
Alter = Callable[[dict[str, Any]], dict[str, Any]]


# -- helpers ------------------------------------------------------------------------------


def _list(readings: Readings, key: str) -> list[dict[str, Any]]:
    """``readings[key]`` as a list of dicts (created when absent or malformed)."""
    items = readings.get(key)
    if not isinstance(items, list):
        items = []
    items = [item for item in items if isinstance(item, dict)]
    readings[key] = items
    return items


def _first(items: list[dict[str, Any]], default: dict[str, Any],
           wanted: Callable[[dict[str, Any]], bool] = lambda _: True) -> dict[str, Any]:
    """The first wanted item of ``items``, or ``default`` appended to it."""
    for item in items:
        if wanted(item):
            return item
    items.insert(0, default)
    return default


# -- system -------------------------------------------------------------------------------


def _clock_skew(r: Readings) -> Readings:
    r["clock_skew_s"] = 10 * system.CLOCK_SKEW_MAX_S
    r.setdefault("server_time", None)
    return r


# -- cpu ----------------------------------------------------------------------------------


def _cpu_basics(r: Readings) -> int:
    cores = number(r, "logical_cores")
    count = int(cores) if cores and cores > 0 else 4
    r["logical_cores"] = count
    return count


def _cpu_overloaded(r: Readings) -> Readings:
    cores = _cpu_basics(r)
    r["percent"] = 99.0
    r["percent_per_core"] = [99.0] * cores
    r["load1"] = round(3.0 * cores, 2)
    r["load1_per_core"] = 3.0
    maximum = number(r, "freq_max_mhz")
    if maximum is not None and maximum > 0:  # busy, but running at full speed
        r["freq_current_mhz"] = maximum
    return r


def _cpu_throttled(r: Readings) -> Readings:
    cores = _cpu_basics(r)
    percent = number(r, "percent")
    if percent is None or percent < cpu.THROTTLE_BUSY_PERCENT:
        r["percent"] = 75.0
        r["percent_per_core"] = [75.0] * cores
    maximum = number(r, "freq_max_mhz")
    if maximum is None or maximum <= 0:
        maximum = 3000.0
        r["freq_max_mhz"] = maximum
    r["freq_current_mhz"] = round(maximum * cpu.THROTTLE_FREQ_RATIO * 0.5, 1)
    return r


# -- memory -------------------------------------------------------------------------------


def _memory_total(r: Readings) -> float:
    total = number(r, "total")
    if not total or total <= 0:
        total = float(8 * _GIB)
        r["total"] = int(total)
    return total


def _memory_low(r: Readings) -> Readings:
    total = _memory_total(r)
    share = memory.LOW_CRITICAL_PERCENT / 2
    r["available_percent"] = share
    r["available"] = int(total * share / 100)
    r["used"] = int(total) - r["available"]
    r["percent"] = round(100 - share, 1)
    return r


def _memory_swap_heavy(r: Readings) -> Readings:
    swap_total = number(r, "swap_total")
    if not swap_total or swap_total <= 0:
        swap_total = float(2 * _GIB)
        r["swap_total"] = int(swap_total)
    r["swap_percent"] = 95.0
    r["swap_used"] = int(swap_total * 0.95)
    return r


# -- disk ---------------------------------------------------------------------------------


def _mount(r: Readings) -> dict[str, Any]:
    default = {
        "mountpoint": "/", "device": "/dev/sda1", "fstype": "ext4",
        "total": 256 * _GIB, "used": 64 * _GIB, "free": 192 * _GIB, "percent": 25.0,
        "inodes_total": 16_000_000, "inodes_free": 15_000_000, "inodes_percent": 6.3,
    }
    return _first(_list(r, "mounts"), default, lambda m: not m.get("error"))


def _disk_almost_full(r: Readings) -> Readings:
    mount = _mount(r)
    total = number(mount, "total") or float(256 * _GIB)
    mount["total"] = int(total)
    mount["percent"] = 98.0
    mount["used"] = int(total * 0.98)
    mount["free"] = int(total) - mount["used"]
    return r


def _disk_inodes_low(r: Readings) -> Readings:
    mount = _mount(r)
    total = number(mount, "inodes_total") or 16_000_000.0
    mount["inodes_total"] = int(total)
    mount["inodes_percent"] = 98.0
    mount["inodes_free"] = int(total * 0.02)
    return r


# -- smart --------------------------------------------------------------------------------


def _smart_disk(r: Readings) -> dict[str, Any]:
    default = {
        "device": "/dev/sda", "type": "sat", "protocol": "ATA", "model": "Simulated disk",
        "serial_hash": None, "health_passed": True, "reallocated_sectors": 0,
        "pending_sectors": 0, "offline_uncorrectable": 0, "smartctl_exit_status": 0,
    }
    r.setdefault("devices_skipped", 0)
    return _first(_list(r, "devices"), default, lambda d: not d.get("error"))


def _smart_failing(r: Readings) -> Readings:
    _smart_disk(r)["health_passed"] = False
    return r


def _sectors_reallocated(r: Readings) -> Readings:
    _smart_disk(r)["reallocated_sectors"] = smart.REALLOCATED_CRITICAL * 2
    return r


def _sectors_pending(r: Readings) -> Readings:
    found = _smart_disk(r)
    found["pending_sectors"] = 8
    found["offline_uncorrectable"] = 8
    return r


def _nvme_worn(r: Readings) -> Readings:
    found = _smart_disk(r)
    found["nvme_percentage_used"] = 97
    found.setdefault("nvme_available_spare", 100)
    found.setdefault("nvme_media_errors", 0)
    return r


def _io_errors(r: Readings) -> Readings:
    io_errors = r.get("io_errors")
    if not isinstance(io_errors, dict):
        io_errors = {}
    io_errors["sda"] = {
        "count": 12,
        "last": "blk_update_request: I/O error, dev sda, sector 123456 op 0x0:(READ)",
    }
    r["io_errors"] = io_errors
    r.setdefault("kernel_log_lines", 2000)
    return r


# -- network ------------------------------------------------------------------------------


def _physical(r: Readings) -> list[dict[str, Any]]:
    interfaces = _list(r, "interfaces")
    physical = [i for i in interfaces if i.get("loopback") is False]
    if not physical:
        entry = {
            "name": "eth0", "isup": True, "loopback": False, "mtu": 1500, "speed_mbps": 1000,
            "packets_sent": 0, "packets_recv": 0,
            "errin": 0, "errout": 0, "dropin": 0, "dropout": 0,
        }
        interfaces.append(entry)
        physical = [entry]
    return physical


def _all_down(r: Readings) -> Readings:
    for entry in _physical(r):
        entry["isup"] = False
    return r


def _interface_errors(r: Readings) -> Readings:
    entry = _physical(r)[0]
    entry.update(packets_sent=10_000, packets_recv=10_000, errin=800, errout=0,
                 dropin=400, dropout=0)
    return r


def _no_default_route(r: Readings) -> Readings:
    r["default_routes"] = []
    return r


def _dns_failed(r: Readings) -> Readings:
    dns = r.get("dns")
    name = dns.get("name") if isinstance(dns, dict) else None
    r["dns"] = {
        "name": name if isinstance(name, str) else "helloword.example",
        "timeout_s": network.DNS_TIMEOUT_S,
        "ok": False,
        "addresses": [],
        "error": "gaierror: [Errno -3] Temporary failure in name resolution",
    }
    return r


def _server_unreachable(r: Readings) -> Readings:
    server = r.get("server")
    server = server if isinstance(server, dict) else {}
    host, port = server.get("host"), server.get("port")
    r["server"] = {
        "host": host if isinstance(host, str) else "support.helloword.example",
        "port": port if isinstance(port, int) else 443,
        "timeout_s": network.TCP_TIMEOUT_S,
        "reachable": False,
        "error": "TimeoutError: timed out",
    }
    return r


# -- power --------------------------------------------------------------------------------


def _battery(r: Readings) -> None:
    if number(r, "percent") is None:
        r.update(percent=80.0, plugged=True, secsleft=None, secsleft_unlimited=True)


def _battery_low(r: Readings) -> Readings:
    _battery(r)
    r.update(percent=power.LOW_CHARGE_PERCENT / 2, plugged=False, secsleft=600,
             secsleft_unlimited=False)
    return r


def _wear_to(capacity_percent: float) -> Alter:
    def alter(r: Readings) -> Readings:
        _battery(r)
        default = {"name": "BAT0", "full": 50_000_000, "full_design": 50_000_000,
                   "unit": "µWh", "capacity_percent": 100.0}
        entry = _first(_list(r, "wear"), default)
        design = number(entry, "full_design") or 50_000_000.0
        entry["full_design"] = int(design)
        entry["full"] = int(design * capacity_percent / 100)
        entry["capacity_percent"] = capacity_percent
        return r

    return alter


# -- thermal ------------------------------------------------------------------------------


def _sensor(r: Readings) -> dict[str, Any]:
    default = {"chip": "coretemp", "label": "Package id 0", "current": 45.0,
               "high": 85.0, "critical": 105.0}
    r.setdefault("sensors_skipped", 0)
    return _first(_list(r, "sensors"), default)


def _overheating(r: Readings) -> Readings:
    _sensor(r).update(current=95.0, high=90.0, critical=100.0)
    return r


def _fan_stalled(r: Readings) -> Readings:
    sensors = _list(r, "sensors")
    hot = any((number(s, "current") or 0.0) >= thermal.FAN_STALL_HOT_C for s in sensors)
    if not hot:  # hot enough for a fan to be needed, still under the overheating marks
        _sensor(r).update(current=thermal.FAN_STALL_HOT_C + 10, high=95.0, critical=105.0)
    fan = _first(_list(r, "fans"), {"chip": "thinkpad", "label": "fan1", "rpm": 2400})
    fan["rpm"] = 0
    return r


# -- processes ----------------------------------------------------------------------------


def _memory_total_of(r: Readings) -> float:
    total = number(r, "memory_total")
    if not total or total <= 0:
        total = float(8 * _GIB)
        r["memory_total"] = int(total)
    r.setdefault("sample_interval_s", processes.SAMPLE_INTERVAL_S)
    return total


def _simulated_process(cpu_percent: float, memory_percent: float, total: float) -> Readings:
    return {
        "pid": SIMULATED_PID,
        "name": "hw-simulated",
        "cpu_percent": cpu_percent,
        "rss": int(total * memory_percent / 100),
        "memory_percent": memory_percent,
    }


def _runaway(r: Readings) -> Readings:
    total = _memory_total_of(r)
    _list(r, "top_cpu").insert(0, _simulated_process(99.5, 1.0, total))
    return r


def _memory_hog(r: Readings) -> Readings:
    total = _memory_total_of(r)
    _list(r, "top_memory").insert(0, _simulated_process(2.0, 75.0, total))
    return r


def _zombies(r: Readings) -> Readings:
    count = processes.ZOMBIES_WARNING_COUNT + 5
    r["zombie_count"] = count
    r["zombies"] = [
        {"pid": SIMULATED_PID + 2 * i, "name": "hw-simulated", "ppid": SIMULATED_PID}
        for i in range(1, min(count, processes.MAX_ZOMBIES) + 1)
    ]
    return r


# -- services -----------------------------------------------------------------------------


def _service_failed(r: Readings) -> Readings:
    units = _list(r, "failed")
    if not any(u.get("unit") == SIMULATED_UNIT for u in units):
        units.insert(0, {"unit": SIMULATED_UNIT, "load": "loaded", "active": "failed",
                         "sub": "failed", "description": "Simulated failed service"})
    r["failed_count"] = len(units)
    return r


# -- the table ----------------------------------------------------------------------------


SIMULATIONS: dict[str, tuple[str, Alter]] = {
    system.CLOCK_SKEW: (system.NAME, _clock_skew),
    cpu.OVERLOADED: (cpu.NAME, _cpu_overloaded),
    cpu.THROTTLED: (cpu.NAME, _cpu_throttled),
    memory.LOW: (memory.NAME, _memory_low),
    memory.SWAP_HEAVY: (memory.NAME, _memory_swap_heavy),
    disk.ALMOST_FULL: (disk.NAME, _disk_almost_full),
    disk.INODES_LOW: (disk.NAME, _disk_inodes_low),
    smart.SMART_FAILING: (smart.NAME, _smart_failing),
    smart.SECTORS_REALLOCATED: (smart.NAME, _sectors_reallocated),
    smart.SECTORS_PENDING: (smart.NAME, _sectors_pending),
    smart.NVME_WORN: (smart.NAME, _nvme_worn),
    smart.IO_ERRORS: (smart.NAME, _io_errors),
    network.ALL_INTERFACES_DOWN: (network.NAME, _all_down),
    network.NO_DEFAULT_ROUTE: (network.NAME, _no_default_route),
    network.DNS_FAILED: (network.NAME, _dns_failed),
    network.SERVER_UNREACHABLE: (network.NAME, _server_unreachable),
    network.INTERFACE_ERRORS: (network.NAME, _interface_errors),
    power.BATTERY_LOW: (power.NAME, _battery_low),
    power.BATTERY_WORN: (power.NAME, _wear_to(
        (power.WORN_CAPACITY_PERCENT + power.FAILING_CAPACITY_PERCENT) / 2)),
    power.BATTERY_FAILING: (power.NAME, _wear_to(power.FAILING_CAPACITY_PERCENT / 2)),
    thermal.OVERHEATING: (thermal.NAME, _overheating),
    thermal.FAN_STALLED: (thermal.NAME, _fan_stalled),
    processes.RUNAWAY: (processes.NAME, _runaway),
    processes.ZOMBIES: (processes.NAME, _zombies),
    processes.MEMORY_HOG: (processes.NAME, _memory_hog),
    services.FAILED: (services.NAME, _service_failed),
}
"""Finding code -> (probe name, function altering that probe's readings to show it)."""


def parse_simulation(env_value: str) -> dict[str, list[str]]:
    """``"thermal.fan_stalled, power.battery_worn"`` -> ``{probe: [codes]}``.

    Blanks are ignored, duplicates kept once, codes in the order given.

    Raises:
        PluginError: a code is not in :data:`SIMULATIONS` (the message lists the known ones).
    """
    plan: dict[str, list[str]] = {}
    unknown: list[str] = []
    for raw in env_value.split(","):
        code = raw.strip()
        if not code:
            continue
        if code not in SIMULATIONS:
            unknown.append(code)
            continue
        codes = plan.setdefault(SIMULATIONS[code][0], [])
        if code not in codes:
            codes.append(code)
    if unknown:
        shown = ", ".join(repr(code[:64]) for code in unknown[:5])
        raise PluginError(
            f"${ENV} names unknown fault code(s) {shown}; known codes: "
            f"{', '.join(sorted(SIMULATIONS))}"
        )
    return plan


def simulated_readings(
    probe: str, real: Mapping[str, Any] | None, codes: Iterable[str]
) -> dict[str, Any]:
    """A copy of ``real`` (``None``: not available here) altered to show each fault in
    ``codes``, with ``"simulated": true`` and the codes under ``"simulated_codes"``.

    Raises:
        PluginError: a code is unknown or belongs to another probe.
    """
    readings: dict[str, Any] = copy.deepcopy(dict(real)) if real else {}
    applied: list[str] = []
    for code in codes:
        entry = SIMULATIONS.get(code)
        if entry is None or entry[0] != probe:
            raise PluginError(f"no simulation of {code!r} for probe {probe!r}")
        readings = entry[1](readings)
        applied.append(code)
    readings[SIMULATED_KEY] = True
    readings["simulated_codes"] = applied
    return readings
