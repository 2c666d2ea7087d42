"""Creator approvals of escalated actions (specs/imvu.md §7).

When the policy escalates an action (a payment over the escalation threshold or over the
period's spend limit), the action waits. The creator approves it by signing an approval
that names the agent, the manifest version, the exact action block and the escalated
decision, with an expiry. The creator signs ``APPROVAL_SIGNATURE_TAG || DAG-CBOR(the map
without "sig")``. An approval lifts that escalation once; it never lifts a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import encode

from ._schema import Checker
from .errors import ApprovalError

APPROVAL_TYPE: Final = "n3xus/imvu-approval/v1"
APPROVAL_SIGNATURE_TAG: Final = b"n3xus/imvu-approval/v1\x00"
# An approval is ~250 bytes; the cap bounds what a peer's approval can make us decode.
MAX_APPROVAL_BYTES: Final = 1024
_FIELDS: Final = ("type", "agent", "manifest", "action", "decision", "expires", "creator", "sig")


@dataclass(frozen=True)
class Approval:
    agent: bytes  # the agent's key
    manifest: CID  # the manifest version the escalated decision ran under
    action: CID  # the action block approved (exact bytes)
    decision: CID  # the escalated decision's payload block
    expires: int  # ms since the epoch; the approval is void after
    creator: bytes
    signature: bytes = field(repr=False)

    def unsigned_map(self) -> dict[str, Any]:
        return {"type": APPROVAL_TYPE, "agent": self.agent, "manifest": self.manifest,
                "action": self.action, "decision": self.decision, "expires": self.expires,
                "creator": self.creator}

    def to_map(self) -> dict[str, Any]:
        return {**self.unsigned_map(), "sig": self.signature}

    def signing_bytes(self) -> bytes:
        return APPROVAL_SIGNATURE_TAG + encode(self.unsigned_map())

    def to_block(self) -> bytes:
        return encode(self.to_map())

    @property
    def cid(self) -> CID:
        return cid_of(self.to_block())

    def signature_valid(self) -> bool:
        try:
            VerifyKey(self.creator).verify(self.signing_bytes(), self.signature)
        except (BadSignatureError, ValueError, TypeError):
            return False
        return True


def approval_from_map(raw: Any) -> Approval:
    """Check the shape of a decoded approval (not its signature: see signature_valid)."""
    check = Checker(ApprovalError, "approval")
    check.mapping(raw, _FIELDS, "approval")
    check.require(raw["type"] == APPROVAL_TYPE, f"type must be {APPROVAL_TYPE!r}")
    return Approval(
        agent=check.blob(raw["agent"], "agent", 32), manifest=check.link(raw["manifest"], "manifest"),
        action=check.link(raw["action"], "action"), decision=check.link(raw["decision"], "decision"),
        expires=check.integer(raw["expires"], "expires"), creator=check.blob(raw["creator"], "creator", 32),
        signature=check.blob(raw["sig"], "sig", 64),
    )


def decode_approval(data: bytes) -> Approval:
    check = Checker(ApprovalError, "approval")
    approval = approval_from_map(check.decode(data, MAX_APPROVAL_BYTES))
    check.require(approval.to_block() == bytes(data), "block is not canonical")
    return approval


def sign_approval(creator: SigningKey, *, agent: bytes, manifest: CID, action: CID,
                  decision: CID, expires: int) -> Approval:
    unsigned = Approval(agent, manifest, action, decision, expires, bytes(creator.verify_key), b"")
    signature = creator.sign(unsigned.signing_bytes()).signature
    return Approval(**{**unsigned.__dict__, "signature": signature})
