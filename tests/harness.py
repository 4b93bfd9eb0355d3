"""Start real ``hw-server`` / ``hw-agent`` processes and run ``hw-tech`` on loopback.

Used by the end-to-end tests, ``make demo`` (``tests/demo.py``) and the benchmarks. Every
command is the installed console script, run the way a person would run it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
E2E_DIR = Path(__file__).parent / "e2e"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition"
               ) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Proc:
    """A background process whose stderr goes to a log file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self._fh = log.open("ab")
        self.popen = subprocess.Popen(args, stdout=self._fh, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, pattern: str, *, timeout: float = 30.0, count: int = 1) -> str:
        def found() -> str | None:
            hits = re.findall(pattern, self.text())
            if self.popen.poll() is not None and len(hits) < count:
                raise AssertionError(f"process exited ({self.popen.returncode}) before "
                                     f"logging {pattern!r}:\n{self.text()[-3000:]}")
            return hits[count - 1] if len(hits) >= count else None
        return str(wait_until(found, timeout=timeout, what=f"{pattern!r} in {self.log.name}"))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._fh.close()
        return self.popen.returncode


class Harness:
    """Three roles in one directory tree: ``S`` (server), ``A*`` (agents), ``T*`` (techs)."""

    def __init__(self, root: Path, *, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.server_home = root / "S"
        self.procs: list[Proc] = []
        self.env = dict(os.environ)
        self.env.pop("HW_HOME", None)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(E2E_DIR), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.env["PYTHONUNBUFFERED"] = "1"

    # -- running commands -----------------------------------------------------------

    def run(self, tool: str, *args: str, check: bool = True, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def tech_json(self, home: Path, *args: str) -> Any:
        return json.loads(self.run("hw-tech", "--home", str(home), *args, "--json").stdout)

    def spawn(self, name: str, tool: str, *args: str, env: dict[str, str] | None = None
              ) -> Proc:
        proc = Proc([str(BIN / tool), *args], self.root / f"{name}.log",
                    {**self.env, **(env or {})})
        self.procs.append(proc)
        return proc

    # -- roles ----------------------------------------------------------------------

    def init_server(self, **settings: Any) -> None:
        self.run("hw-server", "init", "--home", str(self.server_home),
                 "--listen", f"127.0.0.1:{self.port}")
        if settings:
            cfg = self.server_home / "config.toml"
            text = cfg.read_text(encoding="utf-8")
            for key, value in settings.items():
                text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {json.dumps(value)}", text)
            cfg.write_text(text, encoding="utf-8")

    def start_server(self) -> Proc:
        proc = self.spawn("server", "hw-server", "run", "--home", str(self.server_home))
        proc.wait_log(r"listening on wss://\S+", count=proc.text().count("listening on") + 1)
        return proc

    def token(self, customer: str = "Li Wei", kind: str = "individual", city: str = "上海"
              ) -> str:
        out = self.run("hw-server", "enroll-token", "--home", str(self.server_home),
                       "--customer", customer, "--kind", kind, "--city", city)
        return out.stdout.strip()

    def enroll(self, name: str = "A", **kw: str) -> Path:
        home = self.root / name
        self.run("hw-agent", "enroll", "--home", str(home), self.token(**kw))
        return home

    def start_agent(self, home: Path, env: dict[str, str] | None = None, *args: str) -> Proc:
        """``hw-agent run`` for ``home`` (extra ``args`` such as ``--policy FILE``)."""
        proc = self.spawn(home.name + "-agent", "hw-agent", "run", "--home", str(home),
                          "--retry-min", "0.1", "--retry-max", "0.5", *args, env=env)
        proc.wait_log(r"connected to wss://", count=proc.text().count("connected to wss") + 1)
        return proc

    def help(self, home: Path, text: str = "laptop gets hot and shuts down") -> str:
        return self.run("hw-agent", "--home", str(home), "help", text).stdout.strip()

    def grant(self, home: Path, case: str, tech: str = "alice", scopes: str = "diagnostics",
              duration: str = "1h") -> Any:
        """The customer's `hw-agent consent grant`, through the running agent's socket."""
        out = self.run("hw-agent", "consent", "grant", "--home", str(home), "--case", case,
                       "--tech", tech, "--scopes", scopes, "--for", duration, "--json")
        return json.loads(out.stdout)

    def add_tech(self, name: str = "alice", roles: tuple[str, ...] = ("remote", "desk")
                 ) -> Path:
        """A technician with ``roles`` (default: remote work and the desk's ticket work, what
        one technician did before roles; docs/security.md#roles)."""
        home = self.root / ("T-" + name)
        self.run("hw-server", "tech", "add", "--home", str(self.server_home), name,
                 "--out", str(home), *[a for r in roles for a in ("--role", r)])
        return home

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
