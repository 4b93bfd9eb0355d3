"""The codec: every message round-trips, and anything else is one typed DecodeError."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import proto
from proto import messages as m
from proto.codec import decode, encode
from proto.errors import (
    CloseCode,
    DecodeError,
    FrameTooLarge,
    ProtocolError,
    RemoteProtocolError,
)

T0 = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
CST = timezone(timedelta(hours=8))
CASE = "HW-20250314-0042"
AGENT = "ag-0123456789abcdef0123"
SECRET = "sk-live-7f3a9c2e5b1d4086"

# -- hand-built examples of every message ------------------------------------------------

FINDING = m.Finding(
    code="disk.almost_full", severity=m.Severity.WARNING, category=m.Category.HARDWARE,
    summary="Disk C: is 96% full", summary_zh="C 盘已用 96%",
    evidence={"mount": "C:", "used_pct": 96.2, "free_bytes": 4_100_000_000, "ok": False,
              "nested": {"list": [1, 2.5, None, "x"]}},
    remote_fixable=True, fixers=["disk.clean_temp", "disk.empty_recycle_bin"],
)
REPORT = m.ProbeReport(
    probe="disk", version="1.2.0", status=m.ProbeStatus.OK,
    readings={"volumes": [{"mount": "C:", "total": 256_000_000_000}]},
    findings=[FINDING, m.Finding(code="disk.smart_warning", severity=m.Severity.CRITICAL,
                                 category=m.Category.HARDWARE, summary="SMART pre-fail")],
    duration_ms=12.5,
)
REPORT_NA = m.ProbeReport(probe="thermal", version="1.0", status=m.ProbeStatus.NOT_AVAILABLE,
                          error="no sensors exposed by this platform")
STORED = m.StoredResult(msg_id="res-1", request_id="req-1", action=m.Action.DIAG, ok=True,
                        received_at=T0, reports=[REPORT, REPORT_NA])
AGENT_INFO = m.AgentInfo(agent_id=AGENT, customer="Acme Ltd", kind="enterprise",
                         city="Shanghai", hostname="acme-pc-01", os="Windows 11", online=True,
                         last_seen=T0)
CASE_INFO = m.CaseInfo(number=CASE, agent_id=AGENT, customer="Acme Ltd",
                       description="laptop is slow", state="open", opened_at=T0,
                       updated_at=T0.astimezone(CST))

SIGNED = m.SignedCommand(payload=b'{"agent_id":"ag-1"}', certificate="ssh-ed25519-cert-v01",
                         signature=b"\x01" * 64)
GRANT = m.ConsentGrant(receipt_id="cg-1", agent_id=AGENT, case=CASE, tech="alice",
                       scopes=[m.Scope.DIAGNOSTICS, m.Scope.FIX], granted_at=T0, expires_at=T0,
                       via="control", tech_fingerprint="SHA256:abc")

TICKET = m.TicketInfo(
    ticket="TK-20261126-0001", case=CASE, agent_id=AGENT, customer="Li Wei",
    state=m.TicketState.BOOKED, created_at=T0, updated_at=T0, reason="fan stalled",
    service="hardware-repair", city="成都", tier="new-1", eligible=True, covered=True,
    provisional=False, currency="CNY", reasons=["remote attempt failed"],
    price_items=[m.PriceItem(name="base fee", amount=400)], total=480,
    slots=[m.SlotOffer(start=T0, end=T0, total=480)], booked_start=T0, booked_end=T0,
    technician="wang", accepted_by="phone", preparation=["fan assembly"],
    checklist=["power ready"], resolved=False, root_cause=m.RootCause.THIRD_PARTY, fee=400,
    followup_due=date(2026, 11, 30), satisfaction=4,
    history=[m.CaseEvent(state="booked", at=T0, actor="tech:alice")],
    ics="BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
VISIT = m.SignedVisit(payload=b"{}", signature=b"\x03" * 64)
TICKET_EXAMPLES: list[Any] = [
    m.EscalateCase(id="ec-1", case=CASE, reason="the fan is broken"),
    m.ListTickets(id="lt-1", state=m.TicketState.CONFIRMED, followup_due=True),
    m.GetTicket(id="gt-1", ticket=TICKET.ticket),
    m.OfferVisit(id="ov-1", ticket=TICKET.ticket, case=CASE, command=SIGNED),
    m.BookVisit(id="bv-1", ticket=TICKET.ticket, start=T0, accepted_by="phone"),
    m.UpdateTicket(id="ut-1", ticket=TICKET.ticket, to=m.TicketState.ON_SITE, resolved=True,
                   root_cause=m.RootCause.PRODUCT_DEFECT),
    m.TicketList(re="lt-1", tickets=[TICKET]),
    m.TicketDetail(re="gt-1", ticket=TICKET),
    m.GetVisits(id="gv-1"),
    m.VisitUpdate(id="vu-1", signed=VISIT),
    m.VisitList(re="gv-1", visits=[TICKET], message="booked"),
]

EXAMPLES: list[Any] = [*TICKET_EXAMPLES,
    m.Hello(role=m.Role.AGENT, min_version=1, max_version=1, software="hw-agent/0.1.0",
            agent_id=AGENT),
    m.Hello(role=m.Role.AGENT, min_version=1, max_version=3, software="hw-agent/0.1.0",
            agent_id=AGENT, mode=m.Mode.CALL),
    m.Hello(role=m.Role.TECH, min_version=1, max_version=1, software="hw-tech/0.1.0",
            name="alice", certificate="ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1 alice"),
    m.Enroll(min_version=1, max_version=1, software="hw-agent/0.1.0", secret=b"s" * 32,
             public_key=b"\x01" * 32, hostname="acme-pc-01", os="Linux 6.8"),
    m.Challenge(version=1, nonce=bytes(range(32)), server_time=T0),
    m.Proof(signature=b"\xff" * 64),
    m.Welcome(session_id="sess-1", identity=AGENT, server_time=T0),
    m.Enrolled(version=1, agent_id=AGENT, customer="Acme Ltd"),
    m.OpenCase(id="oc-1", description="我的电脑很慢 / my computer is slow"),
    m.CaseOpened(re="oc-1", case=CASE, opened_at=T0),
    m.Request(id="req-1", case=CASE, action=m.Action.DIAG, tech="alice", timeout=45.0,
              command=SIGNED),
    m.Result(id="res-1", re="req-1", case=CASE, action=m.Action.DIAG, ok=True,
             reports=[REPORT, REPORT_NA]),
    m.Result(id="res-2", re="req-2", case=CASE, action=m.Action.DIAG, ok=False,
             error_code=m.ErrorCode.REFUSED, error="no consent for this case"),
    m.Ack(re="res-1"),
    m.ListAgents(id="la-1"),
    m.ListAgents(id="la-2", customer="Li Wei", online=True, offset=1000, limit=10),
    m.ListCases(id="lc-1", state="open"),
    m.ListCases(id="lc-2", owner="alice"),
    m.ClaimCase(id="cc-1", case=CASE),
    m.AssignCase(id="ac-1", case=CASE, to="bob"),
    m.CaseOwner(re="ac-1", previous="alice", case=m.CaseInfo(
        number=CASE, agent_id=AGENT, customer="Li Wei", description="hot", state="open",
        opened_at=T0, updated_at=T0, owner="bob")),
    m.GetCase(id="gc-1", case=CASE),
    m.RunDiag(id="rd-1", case=CASE, command=SIGNED, timeout=120.0),
    m.AskConsent(id="ac-1", case=CASE, command=SIGNED),
    m.RunFix(id="rf-1", case=CASE, command=SIGNED, timeout=60.0),
    m.ListPlugins(id="lp-1", case=CASE, command=SIGNED),
    m.PluginList(re="lp-1", case=CASE, plugins=[
        m.PluginInfo(kind="probe", name="disk", version="1", summary="disk use"),
        m.PluginInfo(kind="fixer", name="disk.cleanup", version="1",
                     addresses=["disk.almost_full"])]),
    m.FixDone(re="rf-1", case=CASE, result=m.StoredResult(
        msg_id="res-9", request_id="req-9", action=m.Action.FIX, ok=True, received_at=T0,
        fix=m.FixReport(decision=m.FixDecision.APPROVED, applied=True, ok=True, verified=True,
                        outcome="freed 12 MB", plan=m.FixPlanInfo(
                            fixer="disk.cleanup", summary="move 3 files to quarantine",
                            reversible=True, changes=["move /tmp/a (1 MB)"])))),
    m.ConsentAnswer(re="ac-1", case=CASE, granted=True, message="granted", grant=GRANT),
    m.ConsentAnswer(re="ac-2", case=CASE, granted=False, message="declined"),
    m.ConsentUpdate(id="cg-1", receipt=m.SignedReceipt(payload=b"{}", signature=b"\x02" * 64)),
    m.Revocations(fingerprints=["SHA256:abc"]),
    m.SignedRevocations(payload=b"{}", signature=b"\x01" * 64),
    m.Request(id="req-2", case=CASE, action=m.Action.CONSENT, tech="alice", command=SIGNED),
    m.Result(id="res-3", re="req-2", case=CASE, action=m.Action.CONSENT, ok=True,
             receipt=m.SignedReceipt(payload=b"{}", signature=b"\x03" * 64)),
    m.AgentList(re="la-1", agents=[AGENT_INFO,
                                   msgspec.structs.replace(AGENT_INFO, online=False,
                                                           last_seen=None)]),
    m.AgentList(re="la-2", agents=[AGENT_INFO], next_offset=1001),
    m.CaseList(re="lc-1", cases=[CASE_INFO]),
    m.CaseDetail(re="gc-1", case=CASE_INFO,
                 history=[m.CaseEvent(state="open", at=T0, actor="customer"),
                          m.CaseEvent(state="diagnosing", at=T0, actor="alice", note="diag")],
                 results=[STORED]),
    m.DiagDone(re="rd-1", case=CASE, result=STORED),
    m.Error(re="rd-1", code=m.ErrorCode.AGENT_OFFLINE, message="the agent is not connected"),
    m.Error(re=None, code=m.ErrorCode.BAD_REQUEST, message="frame rejected"),
    m.Bye(),
    m.Bye(reason="agent shutting down"),
    m.Hello(role=m.Role.AGENT, min_version=1, max_version=1, software="hw-agent/0.1.0",
            agent_id=AGENT, mode=m.Mode.TUNNEL, tunnel="tn-0123456789abcdef"),
    m.OpenTunnel(id="ot-1", case=CASE, command=SIGNED),
    m.TunnelOpen(re="ot-1", case=CASE, tunnel="tn-1", host_key="ssh-ed25519 AAAAC3Nz"),
    m.Recording(id="rec-1", case=CASE, tech="alice", kind=m.RecordingKind.SHELL, started_at=T0,
                ended_at=T0, data=b'{"version": 2}\n[0.1, "o", "ok"]\n', truncated=True),
    m.GetRecording(id="gr-1", case=CASE, recording="rec-1"),
    m.RecordingData(re="gr-1", case=CASE, recordings=[m.RecordingInfo(
        id="rec-1", case=CASE, tech="alice", kind=m.RecordingKind.SFTP, started_at=T0,
        ended_at=None, size=3, sha256="ab" * 32)], data=b"abc"),
    m.Fanout(id="fo-1", command=SIGNED, timeout=5.0),
    m.Ping(id="fo-1", command=SIGNED),
    m.Pong(re="fo-1", ok=True),
    m.Pong(re="fo-1", ok=False, reason="wrong_audience", error="addressed to another customer"),
    m.FanoutDone(re="fo-1", audience="all", sent=3, ok=2, seconds=0.5,
                 misses=[m.FanoutMiss(agent_id=AGENT, reason="no_answer")]),
]


def test_examples_cover_every_message() -> None:
    assert {type(x) for x in EXAMPLES} == set(m.ALL_MESSAGES)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda x: type(x).__name__)
def test_round_trip(message: Any) -> None:
    frame = encode(message)
    assert isinstance(frame, bytes)
    assert decode(frame) == message
    assert decode(frame.decode("utf-8")) == message  # a text frame as str works too
    obj = json.loads(frame)
    assert obj["type"] == type(message).__struct_config__.tag
    assert len(frame) <= proto.MAX_FRAME_SIZE


def test_wire_form_is_plain_json() -> None:
    """What a third-party implementation must produce: see docs/protocol.md#framing."""
    frame = encode(m.Challenge(version=1, nonce=b"\x00" * 32, server_time=T0))
    assert json.loads(frame) == {
        "type": "challenge", "version": 1,
        "nonce": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "server_time": "2025-03-14T09:26:53.589793Z",
    }
    # Optional fields may be omitted; the decoder fills in the defaults.
    assert decode(b'{"type":"bye"}') == m.Bye(reason="")
    assert decode(b' {"reason":"x", "type":"bye"}\n') == m.Bye(reason="x")


# -- random valid messages (strategies derived from the structs' Meta constraints) -----------

TZS = st.sampled_from([UTC, CST, timezone(timedelta(hours=-5, minutes=-30))])
JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=16))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)


def _sized(lo: int | None, hi: int | None, cap: int = 3) -> tuple[int, int]:
    lo = lo or 0
    return lo, max(lo, min(hi if hi is not None else cap, lo + cap))


def strategy(t: mi.Type, depth: int = 0) -> st.SearchStrategy[Any]:
    """A hypothesis strategy for values of msgspec type ``t`` that satisfy its Meta.

    Collections get shorter with nesting depth, to keep nested results small.
    """
    if isinstance(t, mi.StructType):
        fields = {f.name: strategy(f.type, depth + 1) for f in t.fields}
        return st.builds(t.cls, **fields)
    if isinstance(t, mi.StrType):
        lo, hi = t.min_length or 0, t.max_length
        if t.pattern is not None:
            return st.from_regex(t.pattern, fullmatch=True).filter(
                lambda s: lo <= len(s) <= (hi if hi is not None else len(s)))
        small = st.text(min_size=lo, max_size=max(lo, min(hi or 40, 40)))
        if hi is None:
            return small
        longest = st.characters(exclude_categories=["Cs"]).map(lambda c: c * hi)
        return st.one_of(small, longest)  # the limit itself, cheaply
    if isinstance(t, mi.BytesType):
        return st.binary(min_size=t.min_length or 0, max_size=t.max_length or 64)
    if isinstance(t, mi.IntType):
        lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else -(2**63))
        hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else 2**63 - 1)
        return st.integers(lo, hi)
    if isinstance(t, mi.FloatType):
        return st.floats(
            min_value=t.ge if t.ge is not None else t.gt,
            max_value=t.le if t.le is not None else t.lt,
            exclude_min=t.gt is not None, exclude_max=t.lt is not None,
            allow_nan=False, allow_infinity=False)
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.EnumType):
        return st.sampled_from(list(t.cls))
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.DateTimeType):
        aware = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1),
                             timezones=TZS)
        naive = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1))
        return {True: aware, False: naive}.get(t.tz, aware | naive)  # type: ignore[arg-type]
    if isinstance(t, mi.DateType):
        return st.dates(min_value=date(1970, 1, 1), max_value=date(2200, 1, 1))
    if isinstance(t, mi.UnionType):
        return st.one_of([strategy(x, depth) for x in t.types])
    cap = max(1, 4 - depth)
    if isinstance(t, mi.ListType):
        lo, hi = _sized(t.min_length, t.max_length, cap)
        return st.lists(strategy(t.item_type, depth + 1), min_size=lo, max_size=hi)
    if isinstance(t, mi.DictType):
        lo, hi = _sized(t.min_length, t.max_length, cap)
        return st.dictionaries(strategy(t.key_type, depth + 1),
                               strategy(t.value_type, depth + 1), min_size=lo, max_size=hi)
    if isinstance(t, mi.AnyType):
        return JSON_VALUES
    raise NotImplementedError(f"no strategy for {t!r}: extend tests/proto/test_codec.py")


MESSAGE_STRATEGIES = {cls: strategy(mi.type_info(cls)) for cls in m.ALL_MESSAGES}
ANY_MESSAGE = st.one_of(list(MESSAGE_STRATEGIES.values()))


@pytest.mark.parametrize("cls", m.ALL_MESSAGES, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.filter_too_much])
@given(data=st.data())
def test_random_valid_messages_round_trip(cls: type, data: st.DataObject) -> None:
    message = data.draw(MESSAGE_STRATEGIES[cls])
    assert decode(encode(message)) == message


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        m.Result,
        id=st.from_regex(r"[A-Za-z0-9._:@-]{1,64}", fullmatch=True),
        re=st.from_regex(r"[A-Za-z0-9._:@-]{1,64}", fullmatch=True),
        case=st.from_regex(r"HW-[0-9]{8}-[0-9]{4,6}", fullmatch=True),
        action=st.sampled_from(m.Action),
        ok=st.booleans(),
        reports=st.lists(st.builds(
            m.ProbeReport,
            probe=st.text(min_size=1, max_size=128), version=st.text(min_size=1, max_size=16),
            status=st.sampled_from(m.ProbeStatus),
            readings=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4),
            findings=st.lists(st.builds(
                m.Finding,
                code=st.lists(st.from_regex(r"[a-z0-9_]{1,8}", fullmatch=True), min_size=2,
                              max_size=4).map(".".join),
                severity=st.sampled_from(m.Severity), category=st.sampled_from(m.Category),
                summary=st.text(max_size=4096), evidence=st.dictionaries(
                    st.text(max_size=8), JSON_VALUES, max_size=3),
                remote_fixable=st.booleans()), max_size=3),
            duration_ms=st.floats(min_value=0, allow_infinity=False)), max_size=3),
        error_code=st.none() | st.sampled_from(m.ErrorCode),
        error=st.text(max_size=64),
    )
)
def test_random_results_with_nested_findings_round_trip(message: m.Result) -> None:
    assert decode(encode(message)) == message


# -- garbage in: one DecodeError, nothing else -----------------------------------------------


def _decode_or_decode_error(data: bytes | str) -> None:
    try:
        decode(data)
    except DecodeError as exc:
        assert isinstance(exc, RemoteProtocolError)
        assert exc.close_code in (CloseCode.MALFORMED, CloseCode.MESSAGE_TOO_BIG)
        assert exc.__cause__ is None


@settings(max_examples=500)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    _decode_or_decode_error(data)


@settings(max_examples=300)
@given(st.text(max_size=512))
def test_random_text_raises_only_decode_error(data: str) -> None:
    _decode_or_decode_error(data)


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(codec="utf-16", categories=["Cs", "Ll"]), max_size=64))
def test_lone_surrogates_in_text_raise_decode_error(data: str) -> None:
    _decode_or_decode_error('{"type":"bye","reason":"' + data + '"}')


TAGS = [cls.__struct_config__.tag for cls in m.ALL_MESSAGES]  # type: ignore[attr-defined]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(TAGS), st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6))
def test_random_objects_with_real_tags_raise_only_decode_error(
        tag: str, fields: dict[str, Any]) -> None:
    _decode_or_decode_error(json.dumps({**fields, "type": tag}))


@settings(max_examples=300, deadline=None)
@given(ANY_MESSAGE, st.data())
def test_mutated_frames_raise_only_decode_error(message: Any, data: st.DataObject) -> None:
    frame = bytearray(encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    _decode_or_decode_error(bytes(frame))


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda x: type(x).__name__)
def test_every_truncation_is_a_decode_error(message: Any) -> None:
    frame = encode(message)
    for cut in range(len(frame)):
        with pytest.raises(DecodeError):
            decode(frame[:cut])


@settings(max_examples=200, deadline=None)
@given(ANY_MESSAGE, st.data())
def test_truncated_random_frames_are_decode_errors(message: Any, data: st.DataObject) -> None:
    frame = encode(message)
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(DecodeError):
        decode(frame[:cut])


# -- size limit ------------------------------------------------------------------------------


def test_oversize_frame_is_frame_too_large() -> None:
    frame = b'{"type":"bye","reason":"' + b"x" * proto.MAX_FRAME_SIZE + b'"}'
    with pytest.raises(FrameTooLarge) as info:
        decode(frame)
    assert isinstance(info.value, DecodeError)
    assert info.value.close_code is CloseCode.MESSAGE_TOO_BIG
    assert info.value.close_code == 1009
    assert str(proto.MAX_FRAME_SIZE) in str(info.value)


def test_size_limit_is_inclusive() -> None:
    head, tail = b'{"type":"bye"', b"}"
    frame = head + b" " * (proto.MAX_FRAME_SIZE - len(head) - len(tail)) + tail
    assert len(frame) == proto.MAX_FRAME_SIZE
    assert decode(frame) == m.Bye()
    with pytest.raises(FrameTooLarge):
        decode(frame + b" ")


def test_custom_max_size() -> None:
    frame = encode(m.Bye(reason="hello"))
    assert decode(frame, max_size=len(frame)) == m.Bye(reason="hello")
    with pytest.raises(FrameTooLarge):
        decode(frame, max_size=len(frame) - 1)


def test_encoding_an_oversize_message_refuses() -> None:
    big = m.ProbeReport(probe="dump", version="1", status=m.ProbeStatus.OK,
                        readings={"blob": "x" * proto.MAX_FRAME_SIZE})
    with pytest.raises(FrameTooLarge):
        encode(m.Result(id="r", re="q", case=CASE, action=m.Action.DIAG, ok=True,
                        reports=[big]))


def test_text_frame_size_is_counted_in_bytes() -> None:
    blob = "中" * (proto.MAX_FRAME_SIZE // 2)  # 0.5 Mi characters, 1.5 MiB of UTF-8
    frame = json.dumps({"type": "result", "id": "r", "re": "q", "case": CASE,
                        "action": "diag", "ok": True,
                        "reports": [{"probe": "p", "version": "1", "status": "ok",
                                     "readings": {"blob": blob}}]}, ensure_ascii=False)
    assert len(frame.encode()) > proto.MAX_FRAME_SIZE
    with pytest.raises(FrameTooLarge):
        decode(frame)


# -- invalid messages ------------------------------------------------------------------------

HELLO = {"type": "hello", "role": "agent", "min_version": 1, "max_version": 1,
         "software": "hw-agent/0.1", "agent_id": AGENT}

INVALID: list[tuple[str, Any]] = [
    ("not an object", [HELLO]),
    ("no type", {k: v for k, v in HELLO.items() if k != "type"}),
    ("unknown type tag", {**HELLO, "type": "helo"}),
    ("type tag wrong case", {**HELLO, "type": "Hello"}),
    ("type is not a string", {**HELLO, "type": 1}),
    ("unknown field", {**HELLO, "extra": 1}),
    ("missing required field", {k: v for k, v in HELLO.items() if k != "software"}),
    ("int as string", {**HELLO, "min_version": "1"}),
    ("bool for int", {**HELLO, "min_version": True}),
    ("float for int", {**HELLO, "min_version": 1.5}),
    ("version zero", {**HELLO, "min_version": 0}),
    ("version too large", {**HELLO, "max_version": 65536}),
    ("unknown role", {**HELLO, "role": "admin"}),
    ("unknown mode", {**HELLO, "mode": "daemon"}),
    ("empty software", {**HELLO, "software": ""}),
    ("software too long", {**HELLO, "software": "x" * 129}),
    ("agent_id with space", {**HELLO, "agent_id": "ag 1"}),
    ("agent_id too long", {**HELLO, "agent_id": "a" * 65}),
    ("null where not optional", {**HELLO, "role": None}),
    ("nonce not base64", {"type": "challenge", "version": 1, "nonce": "***",
                          "server_time": "2025-01-01T00:00:00Z"}),
    ("nonce too short", {"type": "challenge", "version": 1, "nonce": "AAAA",
                         "server_time": "2025-01-01T00:00:00Z"}),
    ("bad timestamp", {"type": "challenge", "version": 1, "nonce": "A" * 43 + "=",
                       "server_time": "yesterday"}),
    ("signature too short", {"type": "proof", "signature": "AAAA"}),
    ("bad case number", {"type": "get_case", "id": "g", "case": "HW-1-1"}),
    ("timeout zero", {"type": "run_diag", "id": "r", "case": CASE, "timeout": 0}),
    ("timeout too long", {"type": "run_diag", "id": "r", "case": CASE, "timeout": 601}),
    ("finding code without dot", {"type": "result", "id": "r", "re": "q", "case": CASE,
                                  "action": "diag", "ok": True, "reports": [
                                      {"probe": "p", "version": "1", "status": "ok",
                                       "findings": [{"code": "disk", "severity": "info",
                                                     "category": "hardware",
                                                     "summary": ""}]}]}),
    ("unknown field in nested struct", {"type": "result", "id": "r", "re": "q", "case": CASE,
                                        "action": "diag", "ok": True, "reports": [
                                            {"probe": "p", "version": "1", "status": "ok",
                                             "x": 1}]}),
    ("negative duration", {"type": "result", "id": "r", "re": "q", "case": CASE,
                           "action": "diag", "ok": True, "reports": [
                               {"probe": "p", "version": "1", "status": "ok",
                                "duration_ms": -1}]}),
    ("too many readings", {"type": "result", "id": "r", "re": "q", "case": CASE,
                           "action": "diag", "ok": True, "reports": [
                               {"probe": "p", "version": "1", "status": "ok",
                                "readings": {str(i): i for i in range(257)}}]}),
    ("unknown action", {"type": "request", "id": "q", "case": CASE, "action": "format_c",
                        "tech": "alice"}),
    ("error without re", {"type": "error", "code": "internal", "message": "x"}),
    ("unknown error code", {"type": "error", "re": None, "code": "oops", "message": "x"}),
]


@pytest.mark.parametrize(("what", "obj"), INVALID, ids=[w for w, _ in INVALID])
def test_invalid_messages_are_decode_errors(what: str, obj: Any) -> None:
    with pytest.raises(DecodeError) as info:
        decode(json.dumps(obj).encode())
    assert info.value.close_code is CloseCode.MALFORMED
    assert isinstance(info.value, ProtocolError)
    assert str(info.value) == info.value.reason
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("data", [
    b"", b" ", b"null", b"0", b'"hello"', b"{", b"}", b'{"type":"bye"}{"type":"bye"}',
    b'{"type":"bye"} x', b"\xff\xfe\xfd", b"\x00", b'{"type":"bye",}', b"[" * 10_000,
    b'{"type":"bye","reason":"' + b"\xc3\x28" + b'"}',
], ids=repr)
def test_garbage_frames(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


# -- error text never carries the payload ------------------------------------------------------

LEAKS: list[tuple[str, dict[str, Any]]] = [
    ("enum value", {**HELLO, "role": SECRET}),
    ("type tag", {**HELLO, "type": SECRET}),
    ("string for int", {**HELLO, "min_version": SECRET}),
    ("pattern mismatch", {**HELLO, "agent_id": SECRET + " x"}),
    ("too long", {**HELLO, "software": SECRET * 10}),
    ("bad base64", {"type": "proof", "signature": SECRET}),
    ("bad timestamp", {"type": "welcome", "session_id": "s", "identity": "i",
                       "server_time": SECRET}),
    ("bad case number", {"type": "get_case", "id": "g", "case": SECRET}),
    ("nested enum", {"type": "result", "id": "r", "re": "q", "case": CASE, "action": "diag",
                     "ok": True, "reports": [{"probe": "p", "version": "1",
                                              "status": SECRET}]}),
    ("error code", {"type": "result", "id": "r", "re": "q", "case": CASE, "action": "diag",
                    "ok": False, "error_code": SECRET}),
    ("dict key", {"type": "request", "id": "q", "case": CASE, "action": "diag",
                  "tech": "alice", "args": {SECRET: "x" * 10, **{str(i): i for i in range(40)}}}),
]


@pytest.mark.parametrize(("what", "obj"), LEAKS, ids=[w for w, _ in LEAKS])
def test_error_text_never_contains_the_value(what: str, obj: dict[str, Any]) -> None:
    with pytest.raises(DecodeError) as info:
        decode(json.dumps(obj).encode())
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)
    assert SECRET[3:] not in info.value.reason


@settings(max_examples=300, deadline=None)
@given(
    secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_+/=",
                   min_size=12, max_size=200).map(lambda s: "sk-" + s),
    field=st.sampled_from(["role", "mode", "min_version", "agent_id", "software", "type",
                           "name"]),
    wrap=st.sampled_from(["plain", "list", "object"]),
)
def test_error_text_never_contains_a_secret(secret: str, field: str, wrap: str) -> None:
    value: Any = {"plain": secret, "list": [secret], "object": {"v": secret}}[wrap]
    obj = {**HELLO, field: value}
    if wrap == "plain" and field in ("software", "name"):
        obj[field] = secret * 20  # too long, so it is rejected
    elif wrap == "plain" and field == "agent_id":
        obj[field] = secret + " "  # a space is outside the Id pattern
    with pytest.raises(DecodeError) as info:
        decode(json.dumps(obj).encode())
    assert secret not in str(info.value)
    assert secret[3:] not in str(info.value)


def test_error_text_hides_values_with_apostrophes() -> None:
    secret = "it's " + SECRET
    with pytest.raises(DecodeError) as info:
        decode(json.dumps({**HELLO, "role": secret}).encode())
    assert SECRET not in str(info.value)


def test_error_text_hides_unknown_field_names() -> None:
    with pytest.raises(DecodeError) as info:
        decode(json.dumps({**HELLO, SECRET: 1}).encode())
    assert SECRET not in str(info.value)


def test_error_text_is_bounded() -> None:
    with pytest.raises(DecodeError) as info:
        decode(json.dumps({**HELLO, "role": "x" * 100_000}).encode())
    assert len(str(info.value)) <= 250


def test_error_text_names_the_field() -> None:
    with pytest.raises(DecodeError, match=r"\$\.min_version"):
        decode(json.dumps({**HELLO, "min_version": "one"}).encode())


# -- known validation gaps (reported; see the test names) -----------------------------------------


@pytest.mark.parametrize("obj", [
    {"type": "ack", "re": "res-1\n"},
    {"type": "get_case", "id": "g", "case": CASE + "\n"},
], ids=["Id", "CaseNumber"])
def test_trailing_newline_is_rejected(obj: dict[str, Any]) -> None:
    with pytest.raises(DecodeError):
        decode(json.dumps(obj).encode())


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(DecodeError):
        decode(json.dumps({"type": "welcome", "session_id": "s", "identity": "i",
                           "server_time": "2025-01-01T00:00:00"}).encode())
