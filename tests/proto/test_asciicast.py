"""proto.asciicast: recordings are checked on arrival; the agent's own recordings pass,
malformed ones are refused with the line and the problem (never their content)."""

from __future__ import annotations

import json

import pytest

from agent.tunnel import Recorder
from proto import messages as m
from proto.asciicast import RecordingInvalid, validate

HEADER = {"version": 2, "width": 80, "height": 24, "timestamp": 1700000000, "title": "t",
          "env": {"TERM": "xterm", "SHELL": "/bin/sh"}}


def cast(*events: object, header: object = HEADER) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in (header, *events))


def test_the_agents_own_recordings_are_valid() -> None:
    shell = Recorder(m.RecordingKind.SHELL, "HW-20261206-0001", "alice", title="x")
    shell.header(0, 0, "")
    shell.output(b"hello \x1b[31mred\x1b[0m\r\n")
    shell.resize(120, 40)
    shell.output("ü".encode()[:1])  # half a character: decoded later
    validate("shell", shell.message("rec-1").data)
    sftp = Recorder(m.RecordingKind.SFTP, "HW-20261206-0001", "alice", title="x")
    sftp.op("write", b"/a", bytes=3)
    sftp.op("read", b"/a", bytes=0)
    sftp.op("rename", b"/a", to="/b")
    for op in ("remove", "mkdir", "rmdir"):
        sftp.op(op, b"/c")
    validate("sftp", sftp.message("rec-2").data)


def test_a_truncated_recording_is_still_valid() -> None:
    for kind in (m.RecordingKind.SHELL, m.RecordingKind.SFTP):
        rec = Recorder(kind, "HW-20261206-0001", "alice", title="x")
        if kind is m.RecordingKind.SHELL:
            rec.header(80, 24, "xterm")
        while not rec.truncated:
            if kind is m.RecordingKind.SHELL:
                rec.output(b"x" * 4096)
            else:
                rec.op("write", b"/p" * 200, bytes=1)
        validate(kind.value, rec.message("rec-3").data)


@pytest.mark.parametrize(("kind", "data", "says"), [
    ("shell", b"", "empty"),
    ("shell", b"\xff\xfe\n", "not UTF-8"),
    ("shell", cast([0.1, "o", "x"])[:-1], "newline"),
    ("shell", b"not json\n", "line 1 is not JSON"),
    ("shell", cast(header=[2, 80, 24]), "not a JSON object"),
    ("shell", cast(header={**HEADER, "version": 1}), "version 2"),
    ("shell", cast(header={**HEADER, "version": True}), "version 2"),
    ("shell", cast(header={k: v for k, v in HEADER.items() if k != "width"}), "width"),
    ("shell", cast(header={**HEADER, "height": 0}), "height"),
    ("shell", cast(header={**HEADER, "width": 10**9}), "width"),
    ("shell", cast(header={**HEADER, "title": 7}), "title"),
    ("shell", cast(header={**HEADER, "env": {"A": 1}}), "env"),
    ("shell", cast({"t": 1}), "line 2 is not an event"),
    ("shell", cast([0.1, "o"]), "line 2 is not an event"),
    ("shell", cast([-1, "o", "x"]), "line 2: the time"),
    ("shell", cast(["1", "o", "x"]), "line 2: the time"),
    ("shell", cast([1.0, "o", "x"], [0.5, "o", "y"]), "line 3: the time goes backwards"),
    ("shell", cast([0.1, "x", "y"]), "event code"),
    ("shell", cast([0.1, "o", 5]), "not a string"),
    ("shell", cast([0.1, "r", "80 by 24"]), "WxH"),
    ("shell", cast(header=HEADER) + b'[NaN, "o", "x"]\n', "not JSON"),
    # raw control characters inside a JSON string are not JSON: only escaped ones pass
    ("shell", cast(header=HEADER) + b'[0.1, "o", "\x1b]52;c;aGk=\x07"]\n', "not JSON"),
    ("sftp", b'["op"]\n', "not a JSON object"),
    ("sftp", b'{"t": 0, "op": "chmod", "path": "/a"}\n', "op is not one of"),
    ("sftp", b'{"op": "remove", "path": "/a"}\n', "t \\(seconds\\)"),
    ("sftp", b'{"t": 0, "op": "write", "path": "/a"}\n', "bytes"),
    ("sftp", b'{"t": 0, "op": "read", "path": "/a", "bytes": -1}\n', "bytes"),
    ("sftp", b'{"t": 0, "op": "rename", "path": "/a"}\n', "to"),
    ("sftp", b'{"t": 0, "op": "mkdir", "path": "/a", "data": "x"}\n', "unknown field"),
    ("sftp", b'{"op": "truncated"}\n{"t": 0, "op": "mkdir", "path": "/a"}\n', "last line"),
    ("video", cast(), "unknown recording kind"),
])
def test_malformed_recordings_are_refused_with_the_line_and_problem(
        kind: str, data: bytes, says: str) -> None:
    with pytest.raises(RecordingInvalid, match=says) as info:
        validate(kind, data)
    assert "\x1b" not in str(info.value)


def test_the_error_never_repeats_the_content() -> None:
    secret = "hunter2-password"
    with pytest.raises(RecordingInvalid) as info:
        validate("shell", cast([0.1, "o", secret], [0.2, "q", secret]))
    assert secret not in str(info.value)
