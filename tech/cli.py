"""``hw-tech``: the technician's commands. Parses arguments and calls into the client.

``--json`` output is the protocol structs as JSON (``docs/protocol.md#messages``): keys are
stable; new keys may be added, none renamed or removed within a protocol version.
Control and format characters in values are written as ``\\uXXXX`` escapes
(``proto/textsafe.py``), so the output is safe to show on a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from proto import messages as m
from proto.session import CASE_PAGES_VERSION
from proto.timefmt import human_time

from .cliargs import (
    any_case_number,
    case_state,
    customer_name,
    fix_arg,
    fixer_code,
    minutes,
    page_offset,
    page_size,
    probe_list,
    recording_id,
    scope_list,
    tech_name,
    timeout_seconds,
)
from .client import TechClient
from .common import (
    _act,
    _call,
    _dump,
    _out,
    _profile,
    _table,
    _when,
    case_number,
)
from .errors import TechError
from .tickets import add_ticket_commands


def cmd_agents(args: argparse.Namespace) -> int:
    profile = _profile(args)

    async def go() -> list[m.AgentInfo]:
        agents: list[m.AgentInfo] = []
        offset: int | None = 0
        async with TechClient(profile) as client:
            while offset is not None:  # every page, one connection
                page = await client.call(m.ListAgents(id=client.new_id(), offset=offset,
                                                      customer=args.customer,
                                                      online=args.online))
                assert isinstance(page, m.AgentList)
                agents += page.agents
                offset = page.next_offset
        return agents

    agents = asyncio.run(go())
    if args.json:
        _dump(agents)
    else:
        _table([[a.agent_id, a.customer, a.city, a.hostname, "online" if a.online else "offline",
                 _when(a.last_seen)] for a in agents],
               ["AGENT", "CUSTOMER", "CITY", "HOST", "STATUS", "LAST SEEN"])
    return 0


def cmd_cases(args: argparse.Namespace) -> int:
    profile = _profile(args)
    owner = profile.name if args.mine else args.owner

    async def go() -> tuple[list[m.CaseInfo], int | None]:
        got: dict[str, m.CaseInfo] = {}  # a case opened meanwhile shifts pages: once each
        offset: int | None = 0 if args.all else args.offset
        async with TechClient(profile) as client:
            paged = (args.customer is not None or args.offset or args.all
                     or args.limit != m.CASE_PAGE or owner is not None or args.unassigned)
            if paged and (client.session.version or 0) < CASE_PAGES_VERSION:
                raise TechError(
                    f"the server speaks protocol version {client.session.version}: "
                    "--customer, --limit, --offset, --all, --mine, --owner and --unassigned "
                    f"need a server at version {CASE_PAGES_VERSION} or later; upgrade the server, "
                    "or list without them")
            while offset is not None:
                page = await client.call(m.ListCases(
                    id=client.new_id(), state=args.state, customer=args.customer,
                    offset=offset, limit=args.limit, owner=owner,
                    unassigned=args.unassigned))
                assert isinstance(page, m.CaseList)
                for c in page.cases:
                    got.setdefault(c.number, c)
                offset = page.next_offset
                if not args.all:
                    break
        return list(got.values()), offset

    cases, more = asyncio.run(go())
    if args.json:
        _dump(cases)
    else:
        _table([[c.number, c.state, c.customer, c.owner or "-", _when(c.opened_at),
                 c.description[:50]] for c in cases],
               ["CASE", "STATE", "CUSTOMER", "OWNER", "OPENED", "DESCRIPTION"])
    if more is not None:
        print(f"hw-tech: more cases follow: add --offset {more} for the next page, or --all "
              "for every page", file=sys.stderr)
    return 0


def _print_owner(reply: m.CaseOwner, args: argparse.Namespace) -> int:
    if args.json:
        _dump(reply)
        return 0
    c = reply.case
    _out(f"{c.number} is now owned by {c.owner}"
         + (f" (was {reply.previous})" if reply.previous and reply.previous != c.owner
            else " (was unassigned)" if reply.previous is None else ""))
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    return _print_owner(_call(args, lambda rid: m.ClaimCase(id=rid, case=args.case)), args)


def cmd_assign(args: argparse.Namespace) -> int:
    return _print_owner(_call(args, lambda rid: m.AssignCase(id=rid, case=args.case,
                                                             to=args.tech)), args)


def cmd_case(args: argparse.Namespace) -> int:
    reply = _call(args, lambda rid: m.GetCase(id=rid, case=args.case))
    if args.json:
        _dump({"case": reply.case, "history": reply.history, "results": reply.results})
        return 0
    c = reply.case
    _out(f"{c.number}  {c.state}  {c.customer}  agent {c.agent_id}")
    _out(f"  {c.description}")
    for h in reply.history:
        _out(f"  {_when(h.at)}  {h.state:<18} {h.actor}  {h.note}")
    for r in reply.results:
        _print_result(r)
    return 0


def _print_result(r: m.StoredResult) -> None:
    if r.action is m.Action.FIX:
        _out(f"result {r.msg_id} (fix, {_when(r.received_at)}):")
        _print_fix(r)
        return
    status = "ok" if r.ok else f"failed: {r.error}"
    _out(f"result {r.msg_id} ({r.action.value}, {_when(r.received_at)}): {status}")
    for rep in r.reports:
        _out(f"  [{rep.status.value:<13}] {rep.probe} {rep.version} "
              f"({rep.duration_ms:.0f} ms){'  ' + rep.error if rep.error else ''}")
        for f in rep.findings:
            _out(f"      {f.severity.value.upper():<8} {f.code}: {f.summary}")
    findings = [f for rep in r.reports for f in rep.findings]
    if r.ok and r.action is m.Action.DIAG and not findings:
        print("  no findings: nothing abnormal seen")


def cmd_diag(args: argparse.Namespace) -> int:
    cmd_args: dict[str, Any] = {"probes": args.probes} if args.probes else {}
    reply = _act(args, m.Action.DIAG, cmd_args,
                 lambda rid, signed: m.RunDiag(id=rid, case=args.case, command=signed,
                                               timeout=args.timeout))
    if args.json:
        _dump({"case": reply.case, "result": reply.result})
    else:
        _print_result(reply.result)
    return 0


def _print_fix(r: m.StoredResult) -> None:
    fix = r.fix
    if fix is None:
        _out(f"result {r.msg_id}: {r.error or 'no fix report'}")
        return
    plan = fix.plan
    if plan is not None:
        undo = "reversible" if plan.reversible else "NOT reversible"
        _out(f"plan ({plan.fixer}, {undo}): {plan.summary}")
        for change in plan.changes[:50]:
            _out(f"  - {change}")
        if len(plan.changes) > 50:
            _out(f"  ... and {len(plan.changes) - 50} more")
    _out(f"decision: {fix.decision.value}")
    if fix.applied:
        check = "verified" if fix.verified else f"NOT verified: {fix.verify_note}"
        _out(f"outcome: {'ok' if fix.ok else 'failed'}: {fix.outcome} ({check})")
    elif fix.outcome:
        _out(f"not applied: {fix.outcome}")


def cmd_fix(args: argparse.Namespace) -> int:
    cmd_args: dict[str, Any] = {"fixer": args.fixer, "args": dict(args.arg or []),
                                "dry_run": args.dry_run}
    reply = _act(args, m.Action.FIX, cmd_args,
                 lambda rid, signed: m.RunFix(id=rid, case=args.case, command=signed,
                                              timeout=args.timeout))
    if args.json:
        _dump({"case": reply.case, "result": reply.result})
    else:
        _print_fix(reply.result)
    fix = reply.result.fix
    done = fix is not None and (fix.decision is m.FixDecision.DRY_RUN or
                                (fix.applied and fix.ok))
    return 0 if done else 1


def cmd_plugins(args: argparse.Namespace) -> int:
    reply = _act(args, m.Action.PLUGINS, {},
                 lambda rid, signed: m.ListPlugins(id=rid, case=args.case, command=signed))
    if args.json:
        _dump(reply.plugins)
    else:
        _table([[p.kind, p.name, p.version, ", ".join(p.addresses), p.summary[:60]]
                for p in reply.plugins], ["KIND", "NAME", "VERSION", "FIXES", "SUMMARY"])
    return 0


def cmd_consent_request(args: argparse.Namespace) -> int:
    scopes: list[str] = args.scopes
    cmd_args = {"scopes": scopes, "minutes": args.minutes,
                "fix_approval": not args.no_fix_approval}
    reply = _act(args, m.Action.CONSENT, cmd_args,
                 lambda rid, signed: m.AskConsent(id=rid, case=args.case, command=signed,
                                                  timeout=args.timeout))
    if args.json:
        _dump({"case": reply.case, "granted": reply.granted, "message": reply.message,
               "grant": reply.grant})
    elif reply.granted and reply.grant is not None:  # the receipt's times, in local time
        _out(f"{reply.case}: granted {', '.join(s.value for s in reply.grant.scopes)} until "
             f"{human_time(reply.grant.expires_at)}")
        got = (reply.grant.expires_at - reply.grant.granted_at).total_seconds() / 60
        if got < args.minutes - 1:  # the customer's policy or answer shortened it
            _out(f"  capped: asked for {args.minutes:g} min, granted {got:.0f} min")
    elif reply.granted:
        _out(f"{reply.case}: {reply.message}")
    if not reply.granted:
        _out(f"hw-tech: error: not granted: {reply.message}", file=sys.stderr)
        return 1
    return 0


def cmd_ssh(args: argparse.Namespace) -> int:
    from . import ssh as techssh

    command = list(args.remote)
    if command and command[0] == "--":
        command = command[1:]
    return int(asyncio.run(techssh.ssh(_profile(args), args.case, command)))


def cmd_proxy(args: argparse.Namespace) -> int:
    from . import ssh as techssh

    return int(asyncio.run(techssh.proxy(_profile(args), args.case)))


def cmd_ssh_config(args: argparse.Namespace) -> int:
    from . import ssh as techssh

    exe = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).exists() else Path("hw-tech")
    print(techssh.ssh_config(_profile(args), str(exe)), end="")
    return 0


def _recording_key(args: argparse.Namespace, home: Path) -> Path | None:
    """The private recording key to open sealed recordings: --key, else recording.key in
    the technician home; ``None`` if neither is there."""
    if args.key:
        return Path(args.key)
    default = home / "recording.key"
    return default if default.is_file() else None


def _open_recording(args: argparse.Namespace, home: Path, info: m.RecordingInfo,
                    data: bytes) -> bytes | int:
    """The recording's plaintext (opened with the recording key if it is sealed, checked
    against its SHA-256), or an exit status after saying why not."""
    from proto import sealed

    if info.sealed:
        path = _recording_key(args, home)
        if path is None:
            _out(f"hw-tech: error: recording {info.id} is sealed to the organisation's "
                 f"recording key and no key was given: pass --key FILE (recording.key, held "
                 f"by auditors and supervisors) or put it at {home / 'recording.key'}",
                 file=sys.stderr)
            return 2
        try:
            key = sealed.load_private(path.read_bytes())
        except OSError as exc:
            _out(f"hw-tech: error: cannot read the recording key {path} ({exc.strerror}); "
                 "pass --key FILE with the recording.key the auditors hold", file=sys.stderr)
            return 2
        except sealed.SealError as exc:
            _out(f"hw-tech: error: {path}: {exc}", file=sys.stderr)
            return 2
        if info.agent is None:
            raise TechError(f"recording {info.id} is sealed but the server did not say which "
                            "agent it came from; upgrade hw-server")
        try:
            data = sealed.open_sealed(key, data, sealed.associated_data(info.agent, info.case,
                                                                        info.id))
        except sealed.SealError as exc:
            raise TechError(f"recording {info.id} cannot be opened with {path}: {exc}"
                            ) from None
    if hashlib.sha256(data).hexdigest() != info.sha256:
        raise TechError(f"recording {info.id} does not match the SHA-256 the agent's copy had; "
                        "it was changed on the server or on the way: tell an operator")
    return data


def _write_private_file(path: Path, data: bytes) -> None:
    """Write ``path`` readable by the owner only (0600), from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # if it existed with wider rights
        f.write(data)


def cmd_recording(args: argparse.Namespace) -> int:
    from . import ssh as techssh

    wants_data = not args.list and (args.out or not args.json)
    if wants_data and not args.out and not args.raw and sys.stdout.isatty():
        _out("hw-tech: error: a recording holds what the session printed, escape sequences "
             "included, which would drive this terminal; write it to a file with --out FILE "
             "(then `asciinema play FILE`), or pass --raw to print it here anyway, or --list",
             file=sys.stderr)
        return 2
    profile = _profile(args)
    reply = asyncio.run(techssh.recording(profile, args.case, args.id))
    if args.json:
        def every_key(info: m.RecordingInfo | None) -> dict[str, Any] | None:
            # every field, defaults included: `sealed: false` says "stored before sealing"
            return None if info is None else {f: getattr(info, f)
                                              for f in info.__struct_fields__}

        _dump({"case": reply.case, "recordings": [every_key(r) for r in reply.recordings],
               "shown": every_key(reply.info)})
        if not args.out:
            return 0
    elif args.list or not reply.recordings:
        _table([[r.id, r.kind.value, r.tech, _when(r.started_at), str(r.size),
                 "sealed" if r.sealed else "no (stored before sealing)"]
                for r in reply.recordings],
               ["RECORDING", "KIND", "TECH", "STARTED", "BYTES", "ENCRYPTED AT REST"])
        return 0
    if reply.info is None:
        return 0
    data = _open_recording(args, profile.home, reply.info, reply.data)
    if isinstance(data, int):
        return data
    if args.out:
        _write_private_file(Path(args.out), data)
        if not args.json:
            _out(f"wrote {len(data)} bytes of recording {reply.info.id} to {args.out}"
                 + (" (play it with `asciinema play FILE`)"
                    if reply.info.kind is m.RecordingKind.SHELL else ""),
                 file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    profile = _profile(args)
    audience = "all" if args.all else f"customer:{args.customer}"

    async def go() -> Any:
        async with TechClient(profile) as client:
            signed = client.sign_fanout(audience)
            return await client.call(m.Fanout(id=client.new_id(), command=signed,
                                              timeout=args.timeout))

    try:
        reply = asyncio.run(go())
    except ValueError as exc:  # the audience does not pass the schema
        raise TechError(f"cannot sign this fan-out: {exc}") from None
    if args.json:
        _dump(reply)
        return 0 if reply.ok == reply.sent else 1
    _out(f"fan-out to {reply.audience}: {reply.ok} of {reply.sent} online agents answered ok "
         f"in {reply.seconds:.3f}s")
    for miss in reply.misses:
        _out(f"  {miss.agent_id}  {miss.reason}")
    if reply.unlisted:
        _out(f"  ... and {reply.unlisted} more not listed; by reason: "
             + ", ".join(f"{why} {n}" for why, n in sorted(reply.counts.items())))
    return 0 if reply.ok == reply.sent else 1


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(add_help=False)
    top.add_argument("--home", metavar="DIR", help="technician home (default: $HW_HOME)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                        help="technician home (default: $HW_HOME)")
    common.add_argument("--json", action="store_true",
                        help="machine-readable output (stable keys, docs/protocol.md)")
    p = argparse.ArgumentParser(
        prog="hw-tech", parents=[top],
        description="HelloWord technician tool: list agents and cases, ask the customer for "
                    "consent, run diagnostics, propose fixes the customer approves, open an "
                    "SSH session, and carry on-site tickets from escalation to follow-up.",
        epilog="Exit codes: 0 ok, 1 refused or failed (reason on stderr), 2 usage error.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("agents", parents=[common], help="enrolled agents and whether online")
    s.add_argument("--customer", metavar="NAME", type=customer_name,
                   help="only this customer's agents")
    state = s.add_mutually_exclusive_group()
    state.add_argument("--online", dest="online", action="store_const", const=True,
                       help="only agents online now")
    state.add_argument("--offline", dest="online", action="store_const", const=False,
                       help="only agents offline now")
    s.set_defaults(func=cmd_agents)
    s = sub.add_parser(
        "cases", parents=[common], help="cases, newest first, a page at a time (a remote "
        "technician sees their own cases and the unassigned queue)",
        description="List cases, newest first: one page (at most --limit cases, from "
                    "--offset), or every page with --all. When more cases follow, the offset "
                    "of the next page is printed on stderr. A remote technician sees the "
                    "cases they own and the unassigned queue.")
    s.add_argument("--state", type=case_state,
                   help="only cases in this state (open, diagnosed, diagnosis-failed, "
                        "needs-onsite, resolved, closed, reopened)")
    s.add_argument("--customer", metavar="NAME", type=customer_name,
                   help="only this customer's cases (exact name, as `hw-tech agents` shows)")
    s.add_argument("--limit", metavar="N", type=page_size, default=m.CASE_PAGE,
                   help=f"cases per page, 1-{m.CASE_PAGE} cases (default {m.CASE_PAGE})")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--offset", metavar="N", type=page_offset, default=0,
                       help="skip this many cases, 0-2147483648 cases (the next page's "
                            "offset printed on stderr)")
    where.add_argument("--all", action="store_true",
                       help="every page: all matching cases (a case opened meanwhile is "
                            "listed once)")
    who = s.add_mutually_exclusive_group()
    who.add_argument("--mine", action="store_true", help="only the cases you own")
    who.add_argument("--owner", metavar="NAME", type=tech_name,
                     help="only the cases technician NAME owns")
    who.add_argument("--unassigned", action="store_true",
                     help="only the unassigned queue (cases nobody owns yet)")
    s.set_defaults(func=cmd_cases)
    s = sub.add_parser("claim", parents=[common], help="take an unassigned case: you own it "
                       "from now on (your first diag or consent request on it does the same)")
    s.add_argument("case", metavar="CASE", type=case_number)
    s.set_defaults(func=cmd_claim)
    s = sub.add_parser("assign", parents=[common], help="give a case to technician TECH: a "
                       "supervisor assigns any case, an owner transfers their own")
    s.add_argument("case", metavar="CASE", type=case_number)
    s.add_argument("tech", metavar="TECH", type=tech_name, help="the technician's name")
    s.set_defaults(func=cmd_assign)
    s = sub.add_parser("case", parents=[common], help="one case: history and stored results")
    s.add_argument("case", metavar="CASE", type=case_number,
                   help="case number, e.g. HW-20261126-0007")
    s.set_defaults(func=cmd_case)
    s = sub.add_parser("diag", parents=[common], help="run the diagnostic probes on the "
                       "case's agent and show the findings")
    s.add_argument("case", metavar="CASE", type=case_number)
    s.add_argument("--probes", metavar="A,B", type=probe_list, default=[],
                   help="only these probes (default: all)")
    s.add_argument("--timeout", type=timeout_seconds, default=60.0, metavar="S",
                   help="how long to wait for the agent, up to 600 s (default 60)")
    s.set_defaults(func=cmd_diag)
    s = sub.add_parser("plugins", parents=[common], help="probes and fixers on the case's "
                       "agent, with versions (needs the diagnostics scope)")
    s.add_argument("case", metavar="CASE", type=case_number)
    s.set_defaults(func=cmd_plugins)
    s = sub.add_parser("fix", parents=[common], help="show a fixer's plan (--dry-run) or "
                       "apply it once the customer approves; prints plan, decision, outcome")
    s.add_argument("case", metavar="CASE", type=case_number)
    s.add_argument("fixer", metavar="CODE", type=fixer_code, help="fixer code (e.g. "
                   "disk.cleanup), or the finding code it fixes (e.g. disk.almost_full)")
    s.add_argument("--arg", action="append", type=fix_arg, metavar="KEY=VALUE",
                   help="fixer argument (repeatable), e.g. --arg days=14; whole numbers "
                        "within ±2**53")
    s.add_argument("--dry-run", action="store_true", help="only show what would change")
    s.add_argument("--timeout", type=timeout_seconds, default=300.0, metavar="S",
                   help="how long to wait for the customer and the fix, up to 600 s "
                        "(default 300)")
    s.set_defaults(func=cmd_fix)
    s = sub.add_parser("consent-request", parents=[common], help="ask the case's customer "
                       "for a grant; waits for their answer")
    s.add_argument("case", metavar="CASE", type=case_number)
    s.add_argument("--scopes", required=True, metavar="A,B", type=scope_list,
                   help="diagnostics, fix, shell, files, book-visit (comma-separated)")
    s.add_argument("--for", dest="minutes", type=minutes, default=30.0, metavar="DURATION",
                   help="how long, e.g. 20m or 1h, at most 7 days (default 30m; the "
                        "customer's policy may cap it: the answer shows the grant's end)")
    s.add_argument("--no-fix-approval", action="store_true",
                   help="ask that fixes need no per-fix approval")
    s.add_argument("--timeout", type=timeout_seconds, default=120.0, metavar="S",
                   help="how long to wait for the customer's answer, up to 600 s "
                        "(default 120)")
    s.set_defaults(func=cmd_consent_request)
    home_only = argparse.ArgumentParser(add_help=False)
    home_only.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                           help="technician home (default: $HW_HOME)")
    s = sub.add_parser("ssh", parents=[home_only], help="a shell, or one command after `--`, on "
                       "the case's agent over SSH through the server (needs the shell scope)",
                       description="SSH to the case's agent, end to end inside the server's "
                       "tunnel. Without a command: an interactive shell (needs a terminal). "
                       "With `-- CMD ...`: runs it and exits with its status.")
    s.add_argument("case", metavar="CASE", type=any_case_number)
    s.add_argument("remote", nargs=argparse.REMAINDER, metavar="-- CMD",
                   help="command to run instead of a shell")
    s.set_defaults(func=cmd_ssh)
    s = sub.add_parser("proxy", parents=[home_only], help="the SSH tunnel to the case's agent "
                       "on stdin/stdout, for OpenSSH: ssh -o ProxyCommand='hw-tech proxy %%n'",
                       description="Speaks the tunnel on stdin/stdout so stock ssh, scp and "
                       "sftp work; writes the agent's host key to known_hosts in the "
                       "technician home first (see `hw-tech ssh-config`).",
                       epilog="e.g. ssh -o ProxyCommand='hw-tech --home T proxy %n' -i "
                       "T/tech.key -o CertificateFile=T/tech.key-cert.pub -o "
                       "UserKnownHostsFile=T/known_hosts alice@HW-20261126-0007")
    s.add_argument("case", metavar="CASE", type=any_case_number)
    s.set_defaults(func=cmd_proxy)
    s = sub.add_parser("ssh-config", parents=[home_only], help="print a `Host hw-*` block for "
                       "~/.ssh/config (ProxyCommand, key, certificate, known_hosts)")
    s.set_defaults(func=cmd_ssh_config)
    s = sub.add_parser("recording", parents=[common], help="a case's session recordings: "
                       "the newest (or --id) to --out FILE (or stdout if not a terminal, or "
                       "--raw); --list lists them",
                       description="Recordings are sealed at rest to the organisation's "
                       "recording key: opening one needs its private half (--key FILE or "
                       "recording.key in the technician home). Each is checked against the "
                       "SHA-256 of the agent's copy. Never written raw to a terminal unless "
                       "--raw: a recording replays escape sequences.")
    s.add_argument("case", metavar="CASE", type=case_number)
    s.add_argument("--id", metavar="REC", type=recording_id,
                   help="this recording (default: the newest)")
    s.add_argument("--out", metavar="FILE", help="write the recording to FILE (0600)")
    s.add_argument("--raw", action="store_true", help="write it to stdout even when that "
                   "is a terminal (its escape sequences then act on the terminal)")
    s.add_argument("--key", metavar="FILE", help="the private recording key that opens "
                   "sealed recordings (default: recording.key in the technician home)")
    s.add_argument("--list", action="store_true", help="only list the recordings")
    s.set_defaults(func=cmd_recording)
    s = sub.add_parser("recordings", parents=[common], help="list a case's session "
                       "recordings (as `recording CASE --list`): who, when, size, whether "
                       "encrypted at rest")
    s.add_argument("case", metavar="CASE", type=case_number)
    s.set_defaults(func=cmd_recording, list=True, id=None, out=None, raw=False, key=None)
    s = sub.add_parser("ping", parents=[common], help="one signed ping to every online agent "
                       "(--all) or a customer's (--customer NAME); each agent checks it",
                       description="Fan-out: one signed command, checked and audited once by "
                       "the server and checked by every agent, which answers; reads nothing "
                       "from the customers' machines, so it needs no consent grant. Exit 0 "
                       "when every online agent answered ok, 1 otherwise (the others are "
                       "listed with why).")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--all", action="store_true", help="every online agent")
    who.add_argument("--customer", metavar="NAME", type=customer_name,
                     help="the online agents of this customer")
    s.add_argument("--timeout", type=timeout_seconds, default=10.0, metavar="S",
                   help="how long to wait for the answers, up to 600 s (default 10)")
    s.set_defaults(func=cmd_ping)
    add_ticket_commands(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # asyncssh (imported later, lazily) trips cryptography's deprecations: ours only, please.
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning,
                            module=r"asyncssh(\.|$)")
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (TechError, OSError, TimeoutError) as exc:
        _out(f"hw-tech: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
    return 1


if __name__ == "__main__":
    sys.exit(main())


