"""``hw-server`` commands for the on-site desk: field technicians, the report, and checking
a customer's signed service confirmation."""

from __future__ import annotations

import argparse
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proto.errors import DecodeError
from proto.messages import SignedVisit
from proto.receipt import verify_visit
from proto.textsafe import printable, safe_json_dumps
from proto.timefmt import human_time

from . import pki
from .cliargs import (
    DAILY_CAPACITY,
    _home,
    _run,
    city,
    field_tech_name,
    known_service,
    service_list,
    ticket_id,
)
from .config import ServerConfig
from .errors import ServerError
from .onsite.policy import load_home_policy
from .onsite.tickets import OnsiteDesk
from .store import Store


async def _with_desk(args: argparse.Namespace, work: Any) -> Any:

    cfg = ServerConfig.load(_home(args))
    store = await Store.open(cfg.db_url)
    try:
        return await work(OnsiteDesk(store, load_home_policy(cfg.home)), store)
    finally:
        await store.close()


def cmd_field_tech_add(args: argparse.Namespace) -> int:

    skills: list[str] = args.skills

    async def work(desk: OnsiteDesk, _store: Store) -> Any:
        known_service(desk.policy, skills, "--skills")
        now = pki.now_utc()
        tech = await desk.add_field_tech(name=args.name, base=args.base, skills=skills,
                                         capacity=args.capacity, now=now)
        # offers that waited for a field technician are proposed again now
        return tech, await desk.propose_waiting(actor="operator", now=now)

    tech, proposed = _run(_with_desk(args, work))
    print(printable(f"field technician {tech.name}: base {tech.base}, skills "
                    f"{', '.join(tech.skills)}, {tech.daily_capacity} visits per day"))
    for t in proposed:
        print(printable(f"ticket {t.ticket} (case {t.case}, {t.city}) had no slots: "
                        f"{len(t.slots)} proposed now (`hw-tech ticket show {t.ticket}`)"))
    return 0


def cmd_field_tech_list(args: argparse.Namespace) -> int:

    async def work(desk: OnsiteDesk, _store: Store) -> Any:
        return await desk.field_techs()

    techs = _run(_with_desk(args, work))
    rows = [{"name": t.name, "base": t.base, "skills": list(t.skills),
             "daily_capacity": t.daily_capacity, "active": t.active} for t in techs]
    if args.json:
        print(safe_json_dumps(rows))
    elif not rows:
        print("no field technicians; add one with `hw-server field-tech add`")
    for r in [] if args.json else rows:
        print(printable(f"{r['name']}  base {r['base']}  skills {','.join(r['skills'])}  "
                        f"{r['daily_capacity']}/day"))
    return 0


def cmd_report(args: argparse.Namespace) -> int:

    async def work(desk: OnsiteDesk, _store: Store) -> Any:
        return await desk.report()

    report = _run(_with_desk(args, work))
    if args.json:
        print(safe_json_dumps(report))
        return 0
    rate = report["first_time_fix_rate"]
    mttr = report["mean_time_to_resolution_hours"]
    states = ", ".join(f"{k} {v}" for k, v in report["by_state"].items()) or "none"
    print(f"on-site tickets: {report['tickets']} ({states})")
    print(f"visits signed off: {report['visits']}; by tier: {report['visits_by_tier'] or '-'}")
    print(f"first-time fix rate: {'-' if rate is None else f'{rate:.0%}'}; mean time to "
          f"resolution: {'-' if mttr is None else f'{mttr} h'} (case opened -> sign-off)")
    print(f"free contract visits used: {report['free_visits_used']}; revenue: "
          f"{report['revenue']} {report['currency']}")
    sat = report["mean_satisfaction"]
    print(f"mean satisfaction: {'-' if sat is None else f'{sat:.2f}/5'} (follow-up calls: "
          f"{report['satisfaction_answers']})")
    return 0


def cmd_ticket_verify(args: argparse.Namespace) -> int:
    """Check the customer's signed service confirmation against the agent's enrolled key."""

    async def work(desk: OnsiteDesk, store: Store) -> Any:
        info = await desk.get(args.ticket)
        signed = await desk.confirmation(args.ticket)
        agent = await store.get_agent(info.agent_id)
        return info, signed, agent

    info, signed, agent = _run(_with_desk(args, work))
    if signed is None:
        raise ServerError(f"ticket {args.ticket} has no signed confirmation yet (state "
                          f"{info.state.value})")
    assert agent is not None
    try:
        decision = verify_visit(SignedVisit(payload=signed[0], signature=signed[1]),
                                Ed25519PublicKey.from_public_bytes(agent.public_key))
    except DecodeError as exc:
        print(f"ticket {args.ticket}: the confirmation does NOT verify ({exc.reason})")
        return 1
    if (decision.ticket, decision.agent_id) != (info.ticket, info.agent_id):
        print(f"ticket {args.ticket}: the signature is valid but names another ticket/agent")
        return 1
    print(printable(f"ticket {args.ticket}: confirmation signed by agent {agent.agent_id} "
                    f"({agent.customer}) at {human_time(decision.at)}: "
                    f"{'resolved' if decision.resolved else 'unresolved'}, root cause "
                    f"{decision.root_cause.value if decision.root_cause else '-'}, fee "
                    f"{decision.fee} {info.currency}: valid"))
    return 0


def add_onsite_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    f = sub.add_parser("field-tech", parents=[common], help="on-site field technicians "
                       "(base city, skills, daily capacity) used by dispatch")
    fsub = f.add_subparsers(dest="field_tech_command", required=True, metavar="ACTION")
    s = fsub.add_parser("add", parents=[common], help="add a field technician (offers that "
                        "had no slots are proposed again)")
    s.add_argument("name", type=field_tech_name, help="their name, 1-128 characters")
    s.add_argument("--base", required=True, type=city, help="base city, e.g. 成都")
    s.add_argument("--skills", required=True, metavar="A,B", type=service_list,
                   help="service types they do (see `hw-server onsite policy`)")
    s.add_argument("--capacity", type=DAILY_CAPACITY, default=3, metavar="N",
                   help="visits per day at most, 1-20 (default 3)")
    s.set_defaults(func=cmd_field_tech_add)
    s = fsub.add_parser("list", parents=[common], help="list field technicians")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_field_tech_list)

    s = sub.add_parser("report", parents=[common], help="on-site report: first-time-fix "
                       "rate, mean time to resolution, visits by tier, free visits, revenue, mean "
                       "satisfaction")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_report)

    t = sub.add_parser("ticket", parents=[common], help="on-site tickets (operator side)")
    tsub = t.add_subparsers(dest="ticket_command", required=True, metavar="ACTION")
    s = tsub.add_parser("verify", parents=[common], help="verify the customer's signed "
                        "service confirmation with the agent's enrolled key")
    s.add_argument("ticket", metavar="TICKET", type=ticket_id)
    s.set_defaults(func=cmd_ticket_verify)
