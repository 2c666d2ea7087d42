"""The policy: behavioral primitives checked outside the model (specs/imvu.md §3).

:func:`decide` is a pure function of (manifest, state snapshot, proposed action): no I/O,
no clock (the snapshot carries the time), no randomness. The same inputs give the same
verdict on any machine, which is what lets an auditor re-run it from a decision record.
:func:`screen_request` applies the manifest's request rules before any inference.

Checks run in a fixed order and the first that fails decides; the order is part of the
specification (a verdict names the primitive that decided it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from n3xus.canon.cid import CID
from n3xus.canon.codec import encode

from ._schema import Checker
from .actions import SPENDING_KINDS, Action, Kind
from .approval import Approval, approval_from_map
from .errors import DecisionError
from .manifest import Manifest, RefuseRule, normalize_text

# Bumped when the semantics of decide() change; decisions record it so that a re-check
# applies the semantics the decision was taken under.
POLICY_VERSION: Final = 1
STATE_TYPE: Final = "n3xus/imvu-state/v1"
# Events a snapshot carries. Rate counts are capped at MAX_RATE_COUNT (1000) by the
# manifest schema; 4096 leaves room for spends and several rate windows.
MAX_SNAPSHOT_EVENTS: Final = 4096
MAX_STATE_BYTES: Final = 256 * 1024


class Outcome(StrEnum):
    ALLOW = "allow"
    REFUSE = "refuse"
    ESCALATE = "escalate"


class Primitive(StrEnum):
    """Which primitive decided (the registry of specs/imvu.md §3.2)."""

    NONE = ""  # allowed, nothing objected
    SCHEMA = "schema"  # the output is not one well-formed action
    ACTIONS = "actions"
    TOOLS = "tools"
    PAYEES = "payees"
    CONTACTS = "contacts"
    WORLDS = "worlds"
    REFUSE = "refuse"  # a refuse rule matched (the reason names the rule)
    RATE = "rate"
    SPEND_LIMIT = "spend-limit"
    ESCALATION = "escalation"
    APPROVAL = "approval"  # allowed because a valid creator approval lifted an escalation


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    primitive: Primitive
    reason: str

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW


ALLOW: Final = Verdict(Outcome.ALLOW, Primitive.NONE, "")


def refuse(primitive: Primitive, reason: str) -> Verdict:
    return Verdict(Outcome.REFUSE, primitive, reason)


@dataclass(frozen=True)
class Event:
    """An action the agent executed: what rate and spend windows count."""

    time: int
    kind: str
    amount: int  # 0 unless the action spent


@dataclass(frozen=True)
class StateSnapshot:
    """Everything outside the manifest and the action that the policy reads."""

    time: int  # ms since the epoch: "now" for every window
    events: tuple[Event, ...] = ()
    approval: Approval | None = None

    def to_map(self) -> dict[str, Any]:
        return {"type": STATE_TYPE, "time": self.time,
                "events": [[e.time, e.kind, e.amount] for e in self.events],
                "approval": None if self.approval is None else self.approval.to_map()}

    def to_block(self) -> bytes:
        return encode(self.to_map())


def decode_state(data: bytes) -> StateSnapshot:
    check = Checker(DecisionError, "state snapshot")
    raw = check.mapping(check.decode(data, MAX_STATE_BYTES), ("type", "time", "events", "approval"))
    check.require(raw["type"] == STATE_TYPE, f"type must be {STATE_TYPE!r}")
    events = []
    for item in check.array(raw["events"], "events", MAX_SNAPSHOT_EVENTS):
        check.require(type(item) is list and len(item) == 3, "an event is [time, kind, amount]")
        kind = check.text(item[1], "event kind", 32, 1)
        check.require(kind in Kind.__members__.values(), f"unknown event kind {kind!r}")
        events.append(Event(check.integer(item[0], "event time"), kind, check.integer(item[2], "event amount")))
    approval = None if raw["approval"] is None else approval_from_map(raw["approval"])
    snapshot = StateSnapshot(check.integer(raw["time"], "time"), tuple(events), approval)
    check.require(snapshot.to_block() == bytes(data), "block is not canonical")
    return snapshot


def matching_rule(rules: Iterable[RefuseRule], texts: Iterable[str], scopes: tuple[str, ...]) -> RefuseRule | None:
    """The first rule (manifest order) of one of ``scopes`` with a phrase in any text.

    A phrase matches when its words appear consecutively in the normalized text
    (manifest.normalize_text): whole words, so "password" does not match "passwords"."""
    haystacks = [f" {normalize_text(text)} " for text in texts]
    for rule in rules:
        if rule.scope not in scopes:
            continue
        for phrase in rule.phrases:
            needle = f" {phrase} "
            if any(needle in haystack for haystack in haystacks):
                return rule
    return None


def screen_request(manifest: Manifest, texts: Iterable[str]) -> Verdict:
    """The request filter: refuse before inference when a request rule matches."""
    rule = matching_rule(manifest.primitives.refuse, texts, ("request", "both"))
    if rule is not None:
        return refuse(Primitive.REFUSE, f"request matches refuse rule {rule.id!r}")
    return ALLOW


def _window(events: Iterable[Event], now: int, period: int, kinds: Iterable[str]) -> list[Event]:
    wanted = set(kinds)
    # Events later than "now" (a clock that stepped back) count too: fail closed.
    return [e for e in events if e.kind in wanted and e.time > now - period]


def approval_problem(manifest: Manifest, manifest_cid: CID, action: Action, state: StateSnapshot) -> str:
    """Why the snapshot's approval does not lift an escalation of ``action`` ("" if it does)."""
    approval = state.approval
    if approval is None:
        return "no approval"
    if approval.creator != manifest.creator:
        return "approval not by the creator"
    if approval.agent != manifest.agent or approval.manifest != manifest_cid:
        return "approval for another agent or manifest version"
    if approval.action != action.cid:
        return "approval for another action"
    if state.time > approval.expires:
        return "approval expired"
    if not approval.signature_valid():
        return "approval signature invalid"
    return ""


def decide(manifest: Manifest, state: StateSnapshot, action: Action, *,
           manifest_cid: CID | None = None) -> Verdict:
    """The verdict on ``action`` (pure; see the module doc and specs/imvu.md §3.3)."""
    p = manifest.primitives
    if action.kind.value not in p.actions:
        return refuse(Primitive.ACTIONS, f"action {action.kind.value!r} is not allowed")
    if not manifest.allows_tool(action.tool):
        return refuse(Primitive.TOOLS, f"tool {action.tool} is not allowed")
    if action.kind in SPENDING_KINDS and action.to not in p.payees:
        return refuse(Primitive.PAYEES, f"{action.to!r} is not an allowed payee")
    if action.kind is Kind.MESSAGE_AGENT and action.to not in p.contacts:
        return refuse(Primitive.CONTACTS, f"{action.to!r} is not an allowed contact")
    if action.kind in (Kind.READ_WORLD, Kind.PROPOSE_WORLD_EDIT) and action.world not in p.worlds:
        return refuse(Primitive.WORLDS, f"world {action.world!r} is not allowed")
    rule = matching_rule(p.refuse, action.texts(), ("output", "both"))
    if rule is not None:
        return refuse(Primitive.REFUSE, f"output matches refuse rule {rule.id!r}")
    for rate in p.rates:
        if action.kind.value in rate.kinds:
            used = len(_window(state.events, state.time, rate.period_ms, rate.kinds))
            if used + 1 > rate.count:
                return refuse(Primitive.RATE, f"{used} of {rate.count} {'/'.join(rate.kinds)} actions in {rate.period_ms} ms")
    if action.kind not in SPENDING_KINDS:
        return ALLOW
    spent = sum(e.amount for e in _window(state.events, state.time, p.spend_period_ms, SPENDING_KINDS))
    escalation: Verdict | None = None
    if spent + action.amount > p.spend_limit:
        escalation = Verdict(Outcome.ESCALATE, Primitive.SPEND_LIMIT,
                             f"{spent} spent + {action.amount} is over the limit {p.spend_limit} per {p.spend_period_ms} ms")
    elif action.amount > p.escalate_above:
        escalation = Verdict(Outcome.ESCALATE, Primitive.ESCALATION,
                             f"{action.amount} is over the escalation threshold {p.escalate_above}")
    if escalation is None:
        return ALLOW
    problem = approval_problem(manifest, manifest_cid or manifest.cid, action, state)
    if problem:
        return escalation if state.approval is None else Verdict(escalation.outcome, escalation.primitive, f"{escalation.reason}; {problem}")
    return Verdict(Outcome.ALLOW, Primitive.APPROVAL, f"creator approval lifts: {escalation.reason}")
