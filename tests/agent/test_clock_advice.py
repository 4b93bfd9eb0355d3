"""Refusals for time reasons name the clock that is off and by how much (issue 13,
break 6): proto.command.clock_advice with real keys and OpenSSH certificates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from proto.command import (
    Command,
    CommandRefused,
    RefusalReason,
    SignedCommand,
    clock_advice,
    human_offset,
    sign_command,
    verify_command,
)

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
AGENT = "ag-0123456789abcdef0123"
SETTINGS = "correct the clock (Settings → Date & time)"


@pytest.fixture(scope="module")
def keys() -> tuple[asyncssh.SSHKey, bytes, Ed25519PrivateKey, str]:
    org = asyncssh.generate_private_key("ssh-ed25519")
    pub = serialization.load_ssh_public_key(org.export_public_key("openssh"))
    assert isinstance(pub, Ed25519PublicKey)
    alice = Ed25519PrivateKey.generate()
    cert = org.generate_user_certificate(
        asyncssh.import_private_key(alice.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption())),
        "helloword-tech:alice", principals=["alice"],
        valid_after=int((NOW - timedelta(hours=1)).timestamp()),
        valid_before=int((NOW + timedelta(days=1)).timestamp()))
    return org, pub.public_bytes_raw(), alice, cert.export_certificate().decode()


def _signed(keys: Any, issued_at: datetime) -> SignedCommand:
    _, _, alice, cert = keys
    cmd = Command(agent_id=AGENT, case="HW-20261206-0001", action="diag", tech="alice",
                  nonce=bytes(16), issued_at=issued_at,
                  expires_at=issued_at + timedelta(minutes=5))
    return sign_command(cmd, certificate=cert, key=alice)


def _refused(keys: Any, signed: SignedCommand, agent_now: datetime,
             server_offset: timedelta | None) -> str:
    with pytest.raises(CommandRefused) as info:
        verify_command(signed, org_pub=keys[1], now=agent_now, agent_id=AGENT)
    return clock_advice(signed, info.value.reason, org_pub=keys[1], now=agent_now,
                        server_offset=server_offset)


def test_this_computer_behind_the_server(keys: Any) -> None:
    behind = timedelta(minutes=7, seconds=12)
    advice = _refused(keys, _signed(keys, NOW), NOW - behind, behind)
    assert advice == f"this computer's clock is 7 min 12 s behind the server's; {SETTINGS}"


def test_this_computer_ahead_of_the_server(keys: Any) -> None:
    ahead = timedelta(minutes=9)
    advice = _refused(keys, _signed(keys, NOW), NOW + ahead, -ahead)
    assert advice == f"this computer's clock is 9 min ahead of the server's; {SETTINGS}"


def test_the_technicians_clock_ahead_or_behind(keys: Any) -> None:
    ahead = _refused(keys, _signed(keys, NOW + timedelta(minutes=4, seconds=30)), NOW,
                     timedelta(0))
    assert ahead.startswith("the technician's clock is 4 min 30 s ahead of the server's")
    assert "this computer" not in ahead
    behind = _refused(keys, _signed(keys, NOW - timedelta(minutes=6)), NOW, timedelta(0))
    assert behind.startswith("the technician's clock is 6 min behind the server's")


def test_both_clocks_off_are_both_named(keys: Any) -> None:
    agent_behind = timedelta(minutes=2)
    advice = _refused(keys, _signed(keys, NOW + timedelta(minutes=3)), NOW - agent_behind,
                      agent_behind)
    assert "this computer's clock is 2 min behind" in advice
    assert "the technician's clock is 3 min ahead" in advice


def test_a_certificate_valid_by_the_servers_clock_blames_this_computer(keys: Any) -> None:
    behind = timedelta(hours=3)  # the certificate is valid from NOW - 1 h
    advice = _refused(keys, _signed(keys, NOW - behind), NOW - behind, behind)
    assert advice == f"this computer's clock is 3 h behind the server's; {SETTINGS}"


def test_nothing_is_blamed_without_an_offset_or_for_other_reasons(keys: Any) -> None:
    signed = _signed(keys, NOW)
    assert clock_advice(signed, RefusalReason.REPLAYED, org_pub=keys[1], now=NOW,
                        server_offset=timedelta(hours=1)) == ""
    # The certificate really expired: no clock to blame.
    late = NOW + timedelta(days=2)
    assert _refused(keys, _signed(keys, late), late, timedelta(0)) == ""
    # Noise (10 s) is not blamed.
    assert clock_advice(signed, RefusalReason.EXPIRED, org_pub=keys[1], now=NOW,
                        server_offset=timedelta(seconds=-10)) == ""


@pytest.mark.parametrize(("seconds", "text"), [
    (5, "5 s"), (432, "7 min 12 s"), (3600, "1 h"), (7500, "2 h 5 min"),
    (86400 * 3 + 3600 * 4, "3 days 4 h"), (-60, "1 min")])
def test_human_offset(seconds: int, text: str) -> None:
    assert human_offset(timedelta(seconds=seconds)) == text
