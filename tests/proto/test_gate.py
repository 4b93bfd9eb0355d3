"""The consent gate, pure: every action, every way a grant can fail to match
(docs/protocol.md#grants), checked against an oracle written from the docs' rule list."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto import messages as m
from proto.errors import LocalProtocolError
from proto.gate import (
    ACTION_SCOPE,
    NO_CONSENT,
    TUNNEL_SCOPES,
    Allowed,
    GatedAction,
    Refusal,
    decide,
    needed_scopes,
)

NOW = datetime(2026, 12, 6, 8, 41, 9, tzinfo=UTC)
CASE, TECH, KEY = "HW-20261206-0001", "alice", "SHA256:alice-key"
GATED: list[GatedAction] = [m.Action.DIAG, m.Action.FIX, m.Action.PLUGINS,
                            m.Action.BOOK_VISIT, m.Action.TUNNEL]


@dataclass(frozen=True)
class G:
    """A grant as the gate reads it (agent.consent.Grant and ConsentGrant have these)."""

    receipt_id: str = "cg-1"
    case: str = CASE
    tech: str = TECH
    tech_fingerprint: str = KEY
    scopes: tuple[m.Scope, ...] = (m.Scope.DIAGNOSTICS,)
    fix_needs_approval: bool = True
    granted_at: datetime = NOW - timedelta(minutes=5)
    expires_at: datetime = NOW + timedelta(minutes=25)
    revoked_at: datetime | None = None


def ask(action: GatedAction, *grants: G, tech: str = TECH, key: str = KEY,
        now: datetime = NOW) -> Allowed[G] | Refusal:
    return decide(action, case=CASE, tech=tech, fingerprint=key, grants=grants, now=now)


def test_every_action_is_either_gated_or_asks_for_consent() -> None:
    assert set(ACTION_SCOPE) == set(m.Action)
    assert {a for a, s in ACTION_SCOPE.items() if s is None} == {m.Action.CONSENT}
    assert set(GATED) == set(m.Action) - {m.Action.CONSENT}
    with pytest.raises(LocalProtocolError, match="needs no grant"):
        needed_scopes(m.Action.CONSENT)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        decide(m.Action.CONSENT, case=CASE, tech=TECH, fingerprint=KEY,  # type: ignore[arg-type]
               grants=[G()], now=NOW)


@pytest.mark.parametrize(("action", "scope"), [
    (m.Action.DIAG, m.Scope.DIAGNOSTICS), (m.Action.PLUGINS, m.Scope.DIAGNOSTICS),
    (m.Action.FIX, m.Scope.FIX), (m.Action.BOOK_VISIT, m.Scope.BOOK_VISIT),
    (m.Action.TUNNEL, m.Scope.SHELL), (m.Action.TUNNEL, m.Scope.FILES)])
def test_the_documented_scope_allows_each_action(action: GatedAction, scope: m.Scope) -> None:
    grant = G(scopes=(scope,))
    assert ask(action, grant) == Allowed(grant=grant, scopes=frozenset({scope}))
    others = tuple(s for s in m.Scope if s not in needed_scopes(action))
    refused = ask(action, G(scopes=others))
    assert isinstance(refused, Refusal) and refused.reason == NO_CONSENT


@pytest.mark.parametrize("why", ["other case", "other tech", "other key", "expired",
                                 "expiring now", "revoked", "no scope"])
@pytest.mark.parametrize("action", GATED)
def test_each_way_a_grant_fails_to_match_refuses(action: GatedAction, why: str) -> None:
    good = G(scopes=tuple(m.Scope))
    assert isinstance(ask(action, good), Allowed)
    bad = {"other case": replace(good, case="HW-20261206-0002"),
           "other tech": replace(good, tech="bob"),
           "other key": replace(good, tech_fingerprint="SHA256:stolen"),
           "expired": replace(good, expires_at=NOW - timedelta(seconds=1)),
           "expiring now": replace(good, expires_at=NOW),
           "revoked": replace(good, revoked_at=NOW - timedelta(minutes=1)),
           "no scope": replace(good, scopes=())}[why]
    refused = ask(action, bad)
    assert isinstance(refused, Refusal)
    assert refused.text.startswith("no_consent: the customer has not granted alice the ")
    assert f"hw-tech consent-request {CASE} --scopes " in refused.text
    assert str(refused) == refused.text


def test_a_grant_without_a_key_holds_for_any_key_of_that_technician() -> None:
    grant = G(tech_fingerprint="")
    assert isinstance(ask(m.Action.DIAG, grant, key="SHA256:any-other"), Allowed)
    assert isinstance(ask(m.Action.DIAG, grant, tech="bob"), Refusal)


def test_refusal_texts_name_the_scope_to_ask_for() -> None:
    texts = {a: ask(a) for a in GATED}
    assert all(isinstance(t, Refusal) for t in texts.values())
    assert "the diagnostics scope" in str(texts[m.Action.DIAG])
    assert "the fix scope" in str(texts[m.Action.FIX])
    assert "--scopes book-visit" in str(texts[m.Action.BOOK_VISIT])
    assert "the shell or files scope" in str(texts[m.Action.TUNNEL])


def test_approval_wins_then_the_oldest() -> None:
    old_free = G(receipt_id="cg-a", scopes=(m.Scope.FIX,), fix_needs_approval=False,
                 granted_at=NOW - timedelta(hours=1))
    new_asking = G(receipt_id="cg-b", scopes=(m.Scope.FIX,), fix_needs_approval=True)
    older_asking = replace(new_asking, receipt_id="cg-c", granted_at=NOW - timedelta(hours=2))
    for order in itertools.permutations([old_free, new_asking, older_asking]):
        decision = ask(m.Action.FIX, *order)
        assert isinstance(decision, Allowed) and decision.grant is older_asking
    decision = ask(m.Action.FIX, old_free)
    assert isinstance(decision, Allowed) and not decision.grant.fix_needs_approval


def test_a_tunnel_gets_the_scopes_of_every_active_grant() -> None:
    shell = G(receipt_id="cg-s", scopes=(m.Scope.SHELL,))
    files = G(receipt_id="cg-f", scopes=(m.Scope.FILES, m.Scope.DIAGNOSTICS))
    revoked_files = replace(files, revoked_at=NOW)
    decision = ask(m.Action.TUNNEL, shell, files)
    assert isinstance(decision, Allowed) and decision.scopes == TUNNEL_SCOPES
    decision = ask(m.Action.TUNNEL, shell, revoked_files)
    assert isinstance(decision, Allowed) and decision.scopes == {m.Scope.SHELL}


# -- property: the gate is the documented rule, whatever the grants --------------------

CASES = [CASE, "HW-20261206-0002"]
TECHS = [TECH, "bob"]
KEYS = [KEY, "SHA256:other", ""]
OFFSETS = st.integers(min_value=-3600, max_value=3600).map(lambda s: timedelta(seconds=s))

grants = st.builds(
    G,
    receipt_id=st.text(alphabet="0123456789abcdef", min_size=1, max_size=4).map("cg-".__add__),
    case=st.sampled_from(CASES), tech=st.sampled_from(TECHS),
    tech_fingerprint=st.sampled_from(KEYS),
    scopes=st.lists(st.sampled_from(list(m.Scope)), max_size=4, unique=True).map(tuple),
    fix_needs_approval=st.booleans(),
    granted_at=OFFSETS.map(lambda d: NOW - abs(d)),
    expires_at=OFFSETS.map(NOW.__add__),
    revoked_at=st.none() | OFFSETS.map(NOW.__add__))


def oracle(action: GatedAction, grant: G, tech: str, key: str, now: datetime) -> set[m.Scope]:
    """docs/protocol.md#grants, one bullet per line: the scopes ``grant`` gives ``action``."""
    needs = {m.Scope.SHELL, m.Scope.FILES} if action is m.Action.TUNNEL else {
        {m.Action.DIAG: m.Scope.DIAGNOSTICS, m.Action.PLUGINS: m.Scope.DIAGNOSTICS,
         m.Action.FIX: m.Scope.FIX, m.Action.BOOK_VISIT: m.Scope.BOOK_VISIT}[action]}
    if grant.case != CASE or grant.tech != tech:
        return set()
    if grant.revoked_at is not None or not now < grant.expires_at:
        return set()
    if grant.tech_fingerprint not in ("", key):
        return set()
    return needs & set(grant.scopes)


#: Receipt ids are unique, as the agent's store makes them.
POOLS = st.lists(grants, max_size=6, unique_by=lambda g: g.receipt_id)


@given(action=st.sampled_from(GATED), pool=POOLS,
       tech=st.sampled_from(TECHS), key=st.sampled_from(KEYS[:2]), data=st.data())
def test_the_gate_is_the_documented_rule(action: GatedAction, pool: list[G], tech: str,
                                         key: str, data: st.DataObject) -> None:
    decision = decide(action, case=CASE, tech=tech, fingerprint=key, grants=pool, now=NOW)
    allowing = [g for g in pool if oracle(action, g, tech, key, NOW)]
    if not allowing:
        assert isinstance(decision, Refusal) and decision.reason == NO_CONSENT
        return
    assert isinstance(decision, Allowed)
    assert decision.grant in allowing
    assert decision.scopes == set().union(*(oracle(action, g, tech, key, NOW)
                                            for g in allowing))
    if any(g.fix_needs_approval for g in allowing):
        assert decision.grant.fix_needs_approval, "approval wins"
    # The order the grants come in never changes the decision.
    shuffled = data.draw(st.permutations(pool))
    assert decide(action, case=CASE, tech=tech, fingerprint=key, grants=shuffled,
                  now=NOW) == decision


@given(action=st.sampled_from(GATED), pool=POOLS,
       later=OFFSETS.map(abs))
def test_time_only_takes_consent_away(action: GatedAction, pool: list[G],
                                      later: timedelta) -> None:
    """A command refused now is refused later too (grants only expire; none starts later)."""
    if isinstance(ask(action, *pool), Refusal):
        assert isinstance(ask(action, *pool, now=NOW + later), Refusal)


def test_a_receipts_wire_grant_is_decided_the_same() -> None:
    """The server (or a console) can ask the gate about the receipts it stores."""
    wire = m.ConsentGrant(receipt_id="cg-w", agent_id="ag-1", case=CASE, tech=TECH,
                          scopes=[m.Scope.FIX], granted_at=NOW, expires_at=NOW + timedelta(1),
                          via="terminal", tech_fingerprint=KEY)
    decision = decide(m.Action.FIX, case=CASE, tech=TECH, fingerprint=KEY, grants=[wire],
                      now=NOW)
    assert isinstance(decision, Allowed) and decision.grant is wire
    assert isinstance(decide(m.Action.DIAG, case=CASE, tech=TECH, fingerprint=KEY,
                             grants=[wire], now=NOW), Refusal)
