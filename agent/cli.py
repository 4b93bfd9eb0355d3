"""``hw-agent``: the customer's commands. Parses arguments and calls into the package."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proto.errors import TokenError
from proto.token import decode_token

from .errors import AgentError
from .home import AgentHome


def _home(args: argparse.Namespace) -> AgentHome:
    home = getattr(args, "home", None) or os.environ.get("HW_HOME")
    if not home:
        raise AgentError("no home directory: pass --home DIR or set HW_HOME")
    return AgentHome(Path(home))


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def cmd_enroll(args: argparse.Namespace) -> int:
    from .enroll import enroll

    home = _home(args)
    token = decode_token(args.token, now=datetime.now(UTC))
    state = enroll(home, token)
    print(f"enrolled as {state.agent_id} for {state.customer}; CA pinned "
          f"(sha256 {state.ca_sha256[:16]}...)")
    print(f"next: hw-agent run --home {home.path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from plugins import get_plugin_manager

    from .backoff import Backoff
    from .client import Agent

    home = _home(args)
    home.state()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    backoff = Backoff(minimum=args.retry_min, cap=args.retry_max)

    async def main() -> None:
        agent = Agent(home, get_plugin_manager(), backoff=backoff)
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
    print(f"case {case.number} opened; a HelloWord technician may run diagnostics on this "
          f"computer until {case.diag_until.astimezone().strftime('%Y-%m-%d %H:%M')}",
          file=sys.stderr)
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    from .localstore import LocalStore

    home = _home(args)
    home.state()
    store = LocalStore(home.db_path)
    try:
        entries = store.entries()
    finally:
        store.close()
    if args.json:
        print(json.dumps([{"at": e.at.isoformat(), "event": e.event, "detail": e.detail}
                          for e in entries], ensure_ascii=False, indent=2))
    else:
        for e in entries:
            print(f"{e.at.astimezone().strftime('%Y-%m-%d %H:%M:%S')}  {e.event:<10} {e.detail}")
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
    s.add_argument("--retry-min", type=float, default=1.0, metavar="S",
                   help="first reconnect delay upper bound in seconds (default 1)")
    s.add_argument("--retry-max", type=float, default=60.0, metavar="S",
                   help="largest reconnect delay in seconds (default 60)")
    s.set_defaults(func=cmd_run)
    s = sub.add_parser("help", parents=[common], help="ask HelloWord for help: opens a case "
                       "and allows diagnostics on it for 24 hours; prints the case number")
    s.add_argument("description", nargs="+", help="what is wrong, in your words")
    s.set_defaults(func=cmd_help)
    s = sub.add_parser("log", parents=[common], help="what was done on this computer")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_log)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (AgentError, TokenError, OSError) as exc:
        print(f"hw-agent: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
