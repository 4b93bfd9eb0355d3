"""``make demo``: a whole support case on this machine, with real processes on loopback.

An operator sets up a server, a customer enrolls and asks for help, a technician lists
the agents and cases, is refused until the customer grants consent, then runs the
diagnostics; both sides' hash-chained logs are verified at the end. Everything lives in
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
            print(f"\n[operator] $ hw-server run --home {S} &")
            server = h.start_server()
            token = say("operator", "hw-server", "enroll-token", "--home", S, "--customer",
                        "Li Wei", "--kind", "individual", "--city", "上海", show=False)
            print(f"{token[:40]}...  (one line, single use)")
            A = str(h.root / "A")
            say("customer", "hw-agent", "enroll", "--home", A, token)
            print(f"\n[customer] $ hw-agent run --home {A} &")
            agent = h.start_agent(h.root / "A")
            case = say("customer", "hw-agent", "help", "--home", A,
                       "laptop gets hot and shuts down").splitlines()[0]
            T = str(h.root / "T")
            say("operator", "hw-server", "tech", "add", "--home", S, "alice", "--out", T)
            say("technician", "hw-tech", "--home", T, "agents")
            say("technician", "hw-tech", "--home", T, "cases")
            print(f"\n[technician] $ hw-tech --home {T} diag {case}   # no consent yet")
            refused = h.run("hw-tech", "--home", T, "diag", case, check=False)
            print(refused.stderr.rstrip())
            print(f"\n[technician] $ hw-tech --home {T} consent-request {case} "
                  "--scopes diagnostics,fix --for 20m &")
            ask = h.spawn("ask", "hw-tech", "--home", T, "consent-request", case,
                          "--scopes", "diagnostics,fix", "--for", "20m")
            wait_until(lambda: "asks for access" in h.run(
                "hw-agent", "consent", "status", "--home", A).stdout, what="the request")
            say("customer", "hw-agent", "consent", "status", "--home", A)
            say("customer", "hw-agent", "consent", "grant", "--home", A, "--case", case,
                "--tech", "alice", "--scopes", "diagnostics,fix", "--for", "20m")
            ask.popen.wait(60)
            print("[technician] " + ask.text().strip())
            say("technician", "hw-tech", "--home", T, "diag", case)
            say("technician", "hw-tech", "--home", T, "plugins", case)
            say("technician", "hw-tech", "--home", T, "fix", case, "disk.cleanup", "--dry-run")
            say("technician", "hw-tech", "--home", T, "case", case)
            say("customer", "hw-agent", "log", "--home", A)
            say("customer", "hw-agent", "log", "--home", A, "--verify")
            say("operator", "hw-server", "audit", "verify", "--home", S)
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
