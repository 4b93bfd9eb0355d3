"""``hw-agent``: the customer's commands. Parses arguments and calls into the package."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proto.errors import TokenError
from proto.textsafe import safe_json_dumps
from proto.timefmt import human_time
from proto.token import decode_token

from .cliargs import (
    RETRY_MAX,
    RETRY_MIN,
    _home,
    _run,
    case_number,
    out,
    scope_list,
    tech_name,
)
from .errors import AgentError
from .fixcli import add_fix_commands
from .visitcli import add_visit_commands


def cmd_enroll(args: argparse.Namespace) -> int:
    from .enroll import enroll

    home = _home(args)
    token = decode_token(args.token, now=datetime.now(UTC))
    state = enroll(home, token)
    out(f"enrolled as {state.agent_id} for {state.customer}; CA pinned "
        f"(sha256 {state.ca_sha256[:16]}...)")
    print(f"next: hw-agent run --home {home.path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from plugins import get_plugin_manager

    from .backoff import Backoff
    from .client import Agent
    from .consent import Policy
    from .terminal import LocalFormatter, Terminal

    home = _home(args)
    home.state()
    policy = Policy.load(Path(args.policy) if args.policy else None)
    # The customer's window shows our one-line messages: never a library's debug chatter
    # (asyncssh logs ~17 INFO lines per SSH command), never over a question being asked.
    terminal = Terminal() if sys.stdin.isatty() else None
    if terminal is not None:
        handler = terminal.log_handler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(LocalFormatter("%(asctime)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    backoff = Backoff(minimum=args.retry_min, cap=args.retry_max)

    async def main() -> None:
        agent = Agent(home, get_plugin_manager(), backoff=backoff, policy=policy,
                      terminal=terminal)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        await agent.run(stop)

    _run(main())
    logging.getLogger("hw.agent").info("hw-agent stopped")
    return 0


def cmd_help(args: argparse.Namespace) -> int:
    from .client import open_case

    description = " ".join(args.description).strip()
    if not description:
        raise AgentError("describe the problem, e.g. hw-agent help \"laptop gets hot\"")
    case = _run(open_case(_home(args), description[:4000]))
    print(case.number)
    if len(description) > 4000:
        print(f"note: your description was cut to its first 4000 of {len(description)} "
              "characters", file=sys.stderr)
    print(f"case {case.number} opened. A technician will ask for your consent before doing "
          f"anything on this computer; `hw-agent consent grant --case {case.number} --tech "
          "NAME --scopes diagnostics` allows diagnostics in advance.", file=sys.stderr)
    return 0


def _control(args: argparse.Namespace, request: dict[str, Any]) -> dict[str, Any]:
    from .control import call
    from .errors import ControlError

    home = _home(args)
    home.state()
    reply: dict[str, Any] = asyncio.run(call(home.path, request))
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "the agent refused")))
    return reply


def _when(text: str) -> str:
    """A UTC time from the agent's JSON as the customer reads it (local, with offset)."""
    return human_time(datetime.fromisoformat(text))


def _print_grant(g: dict[str, Any]) -> None:
    state = "revoked" if g.get("revoked_at") else ("active" if g.get("active", True)
                                                   else "expired")
    out(f"{g['case']}  {g['tech']:<12} {','.join(g['scopes']):<24} {state:<8} until "
        f"{_when(g['expires_at'])}  ({g['via']}, {g['receipt_id']})")


def cmd_consent_grant(args: argparse.Namespace) -> int:
    reply = _control(args, {"op": "grant", "case": args.case, "tech": args.tech,
                            "scopes": args.scopes, "for": args.duration,
                            "fix_approval": not args.no_fix_approval})
    if args.json:
        print(safe_json_dumps(reply["grant"]))
    else:
        _print_grant(reply["grant"])
        if reply.get("answered"):
            print(f"this answers the request {args.tech} is waiting on")
    if reply.get("capped"):
        print(f"hw-agent: note: you asked for {_minutes(reply['asked_minutes'])}; this "
              f"computer's policy allows grants of at most {_minutes(reply['max_minutes'])}, "
              "so this one lasts that long", file=sys.stderr)
    return 0


def _minutes(minutes: float) -> str:
    whole = round(minutes)
    return f"{whole // 60} h {whole % 60} min" if whole % 60 and whole > 60 else (
        f"{whole // 60} h" if whole >= 60 else f"{whole} min")


def _duration_arg(text: str) -> str:
    """``--for``: checked here, so bad input exits 2 before the agent is asked."""
    from .consent import parse_duration
    from .errors import ConsentError

    try:
        parse_duration(text)
    except ConsentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def cmd_consent_deny(args: argparse.Namespace) -> int:
    reply = _control(args, {"op": "deny", "case": args.case})
    print(f"declined {reply['denied']} pending request(s)")
    return 0


def cmd_consent_status(args: argparse.Namespace) -> int:
    reply = _control(args, {"op": "status"})
    if args.json:
        print(safe_json_dumps({k: reply.get(k, []) for k in ("grants", "pending", "approvals",
                                                             "sessions", "connected")}))
        return 0
    print("connected to the support server" if reply["connected"] else
          "not connected to the support server")
    for a in reply.get("approvals", []):
        undo = "can be undone" if a["reversible"] else "cannot be undone"
        out(f"fix waiting for your approval on case {a['case']}: {a['summary']} ({undo}); "
            f"no answer by {_when(a['deadline'])} is a no")
        for change in a["changes"][:20]:
            out(f"    - {change}")
        out(f"  approve: hw-agent consent approve --case {a['case']}   decline: hw-agent "
            f"consent decline --case {a['case']}")
    for sess in reply.get("sessions", []):
        out(f"remote session open: {sess['tech']} on case {sess['case']} ({sess['scopes']}) "
            f"since {_when(sess['since'])}; end it: hw-agent consent revoke --case "
            f"{sess['case']}")
    for p in reply["pending"]:
        out(f"waiting for your answer: {p['tech']} asks for access to case {p['case']} "
            f"({', '.join(p['scopes'])} for {p['minutes']} min); no answer by "
            f"{_when(p['deadline'])} is a no")
        out(f"  grant: hw-agent consent grant --case {p['case']} --tech {p['tech']} "
            f"--scopes {','.join(p['scopes'])}   decline: hw-agent consent deny --case "
            f"{p['case']}")
    if not reply["grants"]:
        print("no grants")
    for g in reply["grants"]:
        _print_grant(g)
    return 0


def cmd_consent_decide(args: argparse.Namespace) -> int:
    reply = _control(args, {"op": args.decision, "case": args.case})
    verb = "approved" if reply["approved"] else "declined"
    out(f"{verb} fix {reply['fix']} on case {args.case}")
    return 0


def cmd_consent_revoke(args: argparse.Namespace) -> int:
    reply = _control(args, {"op": "revoke", "case": args.case})
    for g in reply["revoked"]:
        _print_grant(g)
    finished = reply.get("finished", 0)
    print(f"revoked {len(reply['revoked'])} grant(s); cancelled {reply['cancelled']} running "
          "action(s)" + (f"; {finished} fix(es) already being applied were allowed to finish"
                         if finished else ""))
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    from .localstore import LocalStore

    home = _home(args)
    home.state()
    store = LocalStore(home.db_path)
    try:
        entries = store.entries()
        ok, count, reason = store.verify_log()
    finally:
        store.close()
    if args.verify:
        if not ok:
            raise AgentError(f"the local log was tampered with: {reason}")
        print(f"local log OK: {count} entries, every link checks")
        return 0
    if args.json:
        print(safe_json_dumps([{"at": e.at.isoformat(), "event": e.event, "detail": e.detail}
                               for e in entries]))
    else:
        for e in entries:
            out(f"{human_time(e.at, seconds=True)}  {e.event:<10} {e.detail}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(add_help=False)
    top.add_argument("--home", metavar="DIR", help="agent home directory (default: $HW_HOME)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                        help="agent home directory (default: $HW_HOME)")
    p = argparse.ArgumentParser(
        prog="hw-agent", parents=[top],
        description="HelloWord support agent: runs on the customer's computer, dials out to "
                    "the support server, and does only what the customer allowed.",
        epilog="Exit codes: 0 ok, 1 refused or failed (reason on stderr), 2 usage error.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("enroll", parents=[common], help="enroll this computer with a token")
    s.add_argument("token", help="the one-line token from HelloWord support")
    s.set_defaults(func=cmd_enroll)
    s = sub.add_parser("run", parents=[common], help="stay connected to the support server "
                       "(foreground; reconnects by itself)")
    s.add_argument("--retry-min", type=RETRY_MIN, default=1.0, metavar="S",
                   help="upper bound of the first reconnect delay in seconds; each failed "
                        "attempt multiplies it by 1.6, and the delay is drawn at random "
                        "below it; a busy server's Retry-After is followed instead "
                        "(more than 0, up to 600; default 1)")
    s.add_argument("--retry-max", type=RETRY_MAX, default=60.0, metavar="S",
                   help="largest reconnect window in seconds, up to 3600 (default 60); a busy "
                        "server's Retry-After, capped at this, is followed with a delay "
                        "between half and one and a half times it")
    s.add_argument("--policy", metavar="FILE", help="local policy (TOML) for managed devices: "
                   "max_minutes, preapproved_scopes, preapproved_techs, prompt_timeout_s")
    s.set_defaults(func=cmd_run)
    c = sub.add_parser("consent", parents=[common], help="grant, inspect or revoke what "
                       "technicians may do on this computer (talks to the running agent)")
    csub = c.add_subparsers(dest="consent_command", required=True, metavar="ACTION")
    s = csub.add_parser("grant", parents=[common], help="allow a technician scopes on a case")
    s.add_argument("--case", required=True, type=case_number, help="case number")
    s.add_argument("--tech", required=True, type=tech_name, help="technician name")
    s.add_argument("--scopes", required=True, metavar="A,B", type=scope_list,
                   help="diagnostics, fix, shell, files, book-visit (comma-separated)")
    s.add_argument("--for", dest="duration", default="30m", metavar="DURATION",
                   type=_duration_arg,
                   help="how long, e.g. 20m or 1h: more than 0, at most 7 days (default "
                        "30m); this computer's policy caps it (8 h unless set otherwise), "
                        "and says so when it does")
    s.add_argument("--no-fix-approval", action="store_true",
                   help="fixes need no per-fix approval (default: each fix asks you)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_consent_grant)
    s = csub.add_parser("deny", parents=[common], help="decline pending requests now")
    s.add_argument("--case", type=case_number, help="only this case")
    s.set_defaults(func=cmd_consent_deny)
    for decision, text in (("approve", "apply the fix waiting on a case"),
                           ("decline", "refuse the fix waiting on a case")):
        s = csub.add_parser(decision, parents=[common], help=text)
        s.add_argument("--case", required=True, type=case_number, help="case number")
        s.set_defaults(func=cmd_consent_decide, decision=decision)
    s = csub.add_parser("status", parents=[common], help="grants, pending requests and fixes "
                        "waiting for your approval",
                        description="What the running agent holds: your grants, the requests "
                        "and fixes waiting for your answer (with their deadlines), and open "
                        "remote sessions.")
    s.add_argument("--json", action="store_true",
                   help="machine-readable output: an object with the lists grants, pending "
                        "(consent requests), approvals (fixes), sessions and whether the agent is "
                        "connected; times in UTC")
    s.set_defaults(func=cmd_consent_status)
    s = csub.add_parser("revoke", parents=[common], help="revoke grants at once; running "
                        "actions are cancelled")
    s.add_argument("--case", type=case_number, help="only this case (default: all)")
    s.set_defaults(func=cmd_consent_revoke)
    s = sub.add_parser("help", parents=[common], help="ask HelloWord for help: opens a case "
                       "and prints its number (technicians still need your consent)")
    s.add_argument("description", nargs="+", help="what is wrong, in your words")
    s.set_defaults(func=cmd_help)
    s = sub.add_parser("log", parents=[common], help="what was done on this computer "
                       "(a hash-chained log)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--verify", action="store_true",
                   help="check the hash chain; exit 1 naming the first broken entry")
    s.set_defaults(func=cmd_log)
    add_visit_commands(sub, common)
    add_fix_commands(sub, common)
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
    except (AgentError, TokenError, OSError) as exc:
        out(f"hw-agent: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
