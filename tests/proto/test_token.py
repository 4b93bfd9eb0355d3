"""The enrollment token: one line that round-trips, and clear errors for everything else."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto.errors import TokenError
from proto.token import MAX_TOKEN_LENGTH, PREFIX, EnrollToken, decode_token, encode_token

NOW = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
SECRET = bytes.fromhex("5ec2e75ec2e75ec2e75ec2e75ec2e75e")
TOKEN = EnrollToken(
    urls=["wss://support.helloword.example:8443", "wss://10.0.0.5:8443/"],
    secret=SECRET,
    expires=NOW + timedelta(hours=24),
    ca_sha256=hashlib.sha256(b"ca certificate DER").digest(),
    org_pub=b"\x07" * 32,
    customer="Acme Ltd",
)


def _body(obj: object) -> str:
    raw = msgspec.json.encode(obj)
    return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _fields(**change: object) -> dict[str, object]:
    fields = msgspec.to_builtins(TOKEN)
    assert isinstance(fields, dict)
    fields.update(change)
    return fields


def test_round_trip() -> None:
    line = encode_token(TOKEN)
    assert line.startswith("hwe1.")
    assert "=" not in line and "\n" not in line and " " not in line
    assert set(line[len(PREFIX):]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_token(line, now=NOW) == TOKEN


def test_wire_form() -> None:
    """docs/protocol.md#enrollment-token: base64url (no padding) of a JSON object."""
    line = encode_token(TOKEN)
    body = line[len(PREFIX):]
    obj = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert obj == {
        "urls": TOKEN.urls,
        "secret": base64.b64encode(SECRET).decode(),
        "expires": "2025-03-15T09:00:00Z",
        "ca_sha256": base64.b64encode(TOKEN.ca_sha256).decode(),
        "org_pub": base64.b64encode(TOKEN.org_pub).decode(),
        "customer": "Acme Ltd",
    }


def test_customer_is_optional_and_surrounding_space_is_ignored() -> None:
    fields = _fields()
    del fields["customer"]
    token = decode_token("  " + _body(fields) + "\r\n", now=NOW)
    assert token.customer == ""


def test_other_time_zones_compare_as_instants() -> None:
    cst = timezone(timedelta(hours=8))
    line = encode_token(msgspec.structs.replace(TOKEN, expires=datetime(2025, 3, 14, 18, 0,
                                                                         tzinfo=cst)))
    assert decode_token(line, now=NOW).expires == NOW + timedelta(hours=1)
    with pytest.raises(TokenError, match="expired"):
        decode_token(line, now=NOW + timedelta(hours=1))


@settings(max_examples=100, deadline=None)
@given(
    secret=st.binary(min_size=16, max_size=64),
    ca=st.binary(min_size=32, max_size=32),
    org=st.binary(min_size=32, max_size=32),
    hours=st.integers(1, 24 * 365),
    customer=st.text(max_size=128),
    hosts=st.lists(st.from_regex(r"[a-z0-9.-]{1,40}(:[0-9]{1,5})?", fullmatch=True),
                   min_size=1, max_size=8),
)
def test_random_tokens_round_trip(secret: bytes, ca: bytes, org: bytes, hours: int,
                                  customer: str, hosts: list[str]) -> None:
    token = EnrollToken(urls=[f"wss://{h}" for h in hosts], secret=secret,
                        expires=NOW + timedelta(hours=hours), ca_sha256=ca, org_pub=org,
                        customer=customer)
    assert decode_token(encode_token(token), now=NOW) == token


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("now", [TOKEN.expires, TOKEN.expires + timedelta(seconds=1),
                                 TOKEN.expires + timedelta(days=400)])
def test_expired(now: datetime) -> None:
    with pytest.raises(TokenError) as info:
        decode_token(encode_token(TOKEN), now=now)
    text = str(info.value)
    assert "expired" in text and TOKEN.expires.isoformat() in text
    assert "new one" in text


def test_valid_until_the_last_microsecond() -> None:
    assert decode_token(encode_token(TOKEN), now=TOKEN.expires - timedelta(microseconds=1))


@pytest.mark.parametrize("text", [
    "", "hello", "hwe2." + encode_token(TOKEN)[5:], "HWE1." + encode_token(TOKEN)[5:],
    encode_token(TOKEN)[5:], "x" + encode_token(TOKEN), "hwe1" + encode_token(TOKEN)[5:],
    encode_token(TOKEN) + "A" * MAX_TOKEN_LENGTH,
], ids=["empty", "word", "wrong version", "upper case", "no prefix", "junk before",
        "missing dot", "too long"])
def test_wrong_prefix(text: str) -> None:
    with pytest.raises(TokenError) as info:
        decode_token(text, now=NOW)
    assert "hwe1." in str(info.value)
    assert "hw-server enroll-token" in str(info.value)


@pytest.mark.parametrize("text", [
    PREFIX,
    PREFIX + "!!!!",
    PREFIX + "中文",
    PREFIX + "A",
    PREFIX + base64.urlsafe_b64encode(b"not json").decode(),
    PREFIX + base64.urlsafe_b64encode(b"[]").decode(),
    PREFIX + base64.urlsafe_b64encode(b"\xff\xfe").decode(),
], ids=["empty body", "punctuation", "non-ascii", "one char", "not json", "array", "binary"])
def test_garbage(text: str) -> None:
    with pytest.raises(TokenError, match="damaged or incomplete"):
        decode_token(text, now=NOW)


def test_every_truncation_is_refused() -> None:
    line = encode_token(TOKEN)
    for cut in range(len(PREFIX), len(line)):
        with pytest.raises(TokenError):
            decode_token(line[:cut], now=NOW)


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_random_text_raises_only_token_error(text: str) -> None:
    try:
        decode_token(PREFIX + text, now=NOW)
    except TokenError:
        pass


@pytest.mark.parametrize("change", [
    {"urls": []},
    {"urls": ["https://support.example"]},
    {"urls": ["wss://"]},
    {"urls": ["wss://a b"]},
    {"secret": base64.b64encode(b"short").decode()},
    {"ca_sha256": base64.b64encode(b"\x00" * 20).decode()},
    {"org_pub": base64.b64encode(b"\x00" * 33).decode()},
    {"expires": "next week"},
    {"customer": "x" * 129},
    {"extra": 1},
], ids=lambda c: next(iter(c)))
def test_invalid_contents_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(TokenError, match="damaged or incomplete"):
        decode_token(_body(_fields(**change)), now=NOW)


def test_missing_field_is_refused() -> None:
    fields = _fields()
    del fields["ca_sha256"]
    with pytest.raises(TokenError):
        decode_token(_body(fields), now=NOW)


def test_naive_expiry_is_refused() -> None:
    line = _body(_fields(expires="2099-01-01T00:00:00"))
    with pytest.raises(TokenError) as info:
        decode_token(line, now=NOW)
    assert "time zone" in str(info.value) and "new one" in str(info.value)


def test_errors_never_echo_the_secret() -> None:
    line = encode_token(TOKEN)
    secret_b64 = base64.b64encode(SECRET).decode()
    for bad in [line[:-3], line[:-3] + "!", line.replace("hwe1.", "hwe9."), line[:40]]:
        with pytest.raises(TokenError) as info:
            decode_token(bad, now=NOW)
        text = str(info.value)
        assert secret_b64 not in text and SECRET.hex() not in text
        assert line[len(PREFIX):len(PREFIX) + 16] not in text
        assert info.value.__cause__ is None
