"""``make demo``: a whole support case on this machine, with real processes on loopback.

An operator sets up a server, a customer enrolls and asks for help, a technician lists
the agents and cases, is refused until the customer grants consent, then runs the
diagnostics. The laptop's fan has stalled (a simulated reading fed into the real probes), so
the case escalates to an on-site ticket: the quote goes to the customer through the agent,
the customer accepts a slot, a field technician is dispatched. Both sides' hash-chained logs
are verified, and the demo ends with the booked ticket. Everything lives in
a temporary directory and is shut down at the end. The same harness drives the end-to-end tests.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Harness, wait_until


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hw-demo-") as tmp:
        h = Harness(Path(tmp))

        def say(role: str, *args: str, show: bool = True) -> str:
            shown = [a if len(a) < 60 else a[:24] + "..." for a in args]
            print(f"\n[{role}] $ {shlex.join(shown)}")
            out = h.run(*args)
            if show:
                for stream in (out.stdout, out.stderr):
                    if stream.strip():
                        print(stream.rstrip())
            return out.stdout.strip()

        try:
            S = str(h.server_home)
            say("operator", "hw-server", "init", "--home", S, "--listen",
                f"127.0.0.1:{h.port}")
            say("operator", "hw-server", "field-tech", "add", "--home", S, "wang", "--base",
                "上海", "--skills", "hardware-repair,network-setup", "--capacity", "3")
            print(f"\n[operator] $ hw-server run --home {S} &")
            server = h.start_server()
            token = say("operator", "hw-server", "enroll-token", "--home", S, "--customer",
                        "Li Wei", "--kind", "individual", "--city", "上海", show=False)
            print(f"{token[:40]}...  (one line, single use)")
            A = str(h.root / "A")
            say("customer", "hw-agent", "enroll", "--home", A, token)
            print(f"\n[customer] $ HW_SIMULATE=thermal.fan_stalled hw-agent run --home {A} &"
                  "   # a stalled fan, simulated")
            agent = h.start_agent(h.root / "A", env={"HW_SIMULATE": "thermal.fan_stalled"})
            case = say("customer", "hw-agent", "help", "--home", A,
                       "laptop gets hot and shuts down").splitlines()[0]
            T = str(h.root / "T")
            say("operator", "hw-server", "tech", "add", "--home", S, "alice", "--out", T,
                "--role", "remote", "--role", "desk")
            say("technician", "hw-tech", "--home", T, "agents")
            say("technician", "hw-tech", "--home", T, "ping", "--all")  # one signed fan-out
            say("technician", "hw-tech", "--home", T, "cases")
            print(f"\n[technician] $ hw-tech --home {T} diag {case}   # no consent yet")
            refused = h.run("hw-tech", "--home", T, "diag", case, check=False)
            print(refused.stderr.rstrip())
            print(f"\n[technician] $ hw-tech --home {T} consent-request {case} "
                  "--scopes diagnostics,fix,book-visit --for 20m &")
            ask = h.spawn("ask", "hw-tech", "--home", T, "consent-request", case,
                          "--scopes", "diagnostics,fix,book-visit", "--for", "20m")
            wait_until(lambda: "asks for access" in h.run(
                "hw-agent", "consent", "status", "--home", A).stdout, what="the request")
            say("customer", "hw-agent", "consent", "status", "--home", A)
            say("customer", "hw-agent", "consent", "grant", "--home", A, "--case", case,
                "--tech", "alice", "--scopes", "diagnostics,fix,book-visit", "--for", "20m")
            ask.popen.wait(60)
            print("[technician] " + ask.text().strip())
            say("technician", "hw-tech", "--home", T, "diag", case)
            say("technician", "hw-tech", "--home", T, "plugins", case)
            say("technician", "hw-tech", "--home", T, "fix", case, "disk.cleanup", "--dry-run")
            say("technician", "hw-tech", "--home", T, "case", case)
            print("\n--- the fan cannot be fixed remotely: the case escalated on its own ---")
            ticket = h.tech_json(Path(T), "tickets")[0]["ticket"]
            say("technician", "hw-tech", "--home", T, "tickets")
            say("technician", "hw-tech", "--home", T, "book", ticket, show=False)
            print(f"offered ticket {ticket}'s quote and slots to the customer (signed)")
            agent.wait_log(rf"on-site offer {ticket}")
            say("customer", "hw-agent", "visit", "show", "--home", A, ticket)
            say("customer", "hw-agent", "visit", "accept", "--home", A, ticket, "--slot", "1")
            say("customer", "hw-agent", "log", "--home", A)
            say("customer", "hw-agent", "log", "--home", A, "--verify")
            say("operator", "hw-server", "audit", "verify", "--home", S)
            print("\n--- the escalated, booked on-site ticket ---")
            say("technician", "hw-tech", "--home", T, "ticket", "show", ticket)
            print("\n--- shutting down ---")
            codes = agent.stop(), server.stop()
            print(f"agent exited {codes[0]}, server exited {codes[1]}")
            print("\nserver log (one line per connection):")
            for line in server.text().splitlines():
                print("  " + line)
            return 0 if codes == (0, 0) else 1
        finally:
            h.stop_all()


if __name__ == "__main__":
    sys.exit(main())
