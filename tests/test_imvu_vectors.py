"""specs/vectors/imvu.json: the bytes of a manifest, an approval, policy verdicts and an ask
frame, made from fixed seeds. Another implementation must produce and accept the same.

Regenerate (after a deliberate, versioned change) with:
    python tests/test_imvu_vectors.py > specs/vectors/imvu.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from n3xus.canon.cid import CID
from n3xus.imvu.actions import Action, Kind, action_from_map
from n3xus.imvu.approval import decode_approval, sign_approval
from n3xus.imvu.errors import ManifestError
from n3xus.imvu.manifest import (
    Generation,
    ModelRef,
    RateLimit,
    decode_manifest,
    make_primitives,
    sign_manifest,
)
from n3xus.imvu.policy import Event, StateSnapshot, decide, decode_state
from n3xus.imvu.wire import AgentExchange, Ask, Role

VECTORS = Path(__file__).resolve().parents[1] / "specs" / "vectors" / "imvu.json"
CREATOR_SEED = bytes(range(32))
AGENT_SEED = bytes(range(32, 64))
ALICE = bytes(32 * [0xA1])
TIME = 1_760_000_000_000


def build() -> dict[str, Any]:
    creator, agent = SigningKey(CREATOR_SEED), SigningKey(AGENT_SEED)
    model = ModelRef(CID.from_digest("raw", "blake3", bytes(32 * [0x11])), "smollm2-135m-instruct.gguf", 1000)
    prims = make_primitives(actions=["reply", "tip"], payees={"alice": ALICE}, spend_limit=50,
                            spend_period_ms=3_600_000, escalate_above=20,
                            rates=[RateLimit(("tip",), 3, 60_000)])
    manifest = sign_manifest(creator, name="nova", persona="You are Nova.", agent=bytes(agent.verify_key),
                             model=model, generation=Generation(48, 2048, 256), tools=["ledger.pay"],
                             primitives=prims, time=TIME)
    tip = Action(Kind.TIP, to="alice", amount=30)
    approval = sign_approval(creator, agent=manifest.agent, manifest=manifest.cid, action=tip.cid,
                             decision=manifest.cid, expires=TIME + 60_000)
    cases = []
    for name, state, action in [
        ("within the limit", StateSnapshot(TIME, (Event(TIME - 1000, "tip", 10),)), Action(Kind.TIP, to="alice", amount=5)),
        ("over the escalation threshold", StateSnapshot(TIME), tip),
        ("approved", StateSnapshot(TIME, (), approval), tip),
        ("over the period limit", StateSnapshot(TIME, (Event(TIME - 1000, "tip", 45),)), Action(Kind.TIP, to="alice", amount=10)),
        ("unknown payee", StateSnapshot(TIME), Action(Kind.TIP, to="mallory", amount=1)),
        ("rate", StateSnapshot(TIME, tuple(Event(TIME - i, "tip", 1) for i in range(1, 4))), Action(Kind.TIP, to="alice", amount=1)),
        ("kind not allowed", StateSnapshot(TIME), Action(Kind.READ_BALANCE)),
    ]:
        verdict = decide(manifest, state, action)
        cases.append({"name": name, "state_hex": state.to_block().hex(), "action": action.to_map(),
                      "verdict": verdict.outcome.value, "primitive": verdict.primitive.value})
    frame = AgentExchange(Role.ASKER).send(Ask("echo", bytes(agent.verify_key), "When does the set start?"))
    broken = bytearray(manifest.to_block())
    broken[-1] ^= 1
    return {
        "description": "IMVU vectors (specs/imvu.md): keys are ed25519 seeds; the manifest's model CID "
                       "is a stand-in (raw, BLAKE3 digest of 32 bytes 0x11).",
        "creator_seed": CREATOR_SEED.hex(), "agent_seed": AGENT_SEED.hex(),
        "manifest": {"hex": manifest.to_block().hex(), "cid": str(manifest.cid)},
        "approval": {"hex": approval.to_block().hex(), "cid": str(approval.cid)},
        "policy": cases,
        "ask_frame": {"hex": frame.hex()},
        "invalid": [{"name": "manifest with one bit of its signature flipped", "hex": bytes(broken).hex(),
                     "error": "signature"}],
    }


def test_vectors_match_the_code() -> None:
    stored = json.loads(VECTORS.read_text())
    assert stored == json.loads(json.dumps(build()))


def test_vectors_decode() -> None:
    stored = json.loads(VECTORS.read_text())
    manifest = decode_manifest(bytes.fromhex(stored["manifest"]["hex"]))
    assert str(manifest.cid) == stored["manifest"]["cid"]
    assert decode_approval(bytes.fromhex(stored["approval"]["hex"])).signature_valid()
    for case in stored["policy"]:
        verdict = decide(manifest, decode_state(bytes.fromhex(case["state_hex"])), action_from_map(case["action"]))
        assert (verdict.outcome.value, verdict.primitive.value) == (case["verdict"], case["primitive"]), case["name"]
    (ask,) = AgentExchange(Role.ANSWERER).receive_data(bytes.fromhex(stored["ask_frame"]["hex"]), 0.0)
    assert isinstance(ask, Ask) and ask.agent == "echo"
    for case in stored["invalid"]:
        with pytest.raises(ManifestError, match=case["error"]):
            decode_manifest(bytes.fromhex(case["hex"]))


if __name__ == "__main__":
    json.dump(build(), sys.stdout, indent=1)
    sys.stdout.write("\n")
