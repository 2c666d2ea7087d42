"""Manifests, actions, approvals, memory items and decision records: strict round-trips,
clean errors on truncation and bit flips, signatures, the model CID cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imvu_support import T0, account, key, manifest, primitives

from n3xus.canon.cid import CID
from n3xus.canon.codec import decode, encode
from n3xus.imvu.actions import Action, Kind, action_schema, parse_action, schema_text
from n3xus.imvu.approval import decode_approval, sign_approval
from n3xus.imvu.errors import ActionError, ApprovalError, DecisionError, ManifestError
from n3xus.imvu.manifest import RefuseRule, decode_manifest, make_primitives, model_cid_of_file
from n3xus.imvu.memory import MemoryItem, decode_memory_item
from n3xus.imvu.policy import StateSnapshot, decode_state
from n3xus.imvu.prompt import Request, decode_request

VALUE_ERRORS = (ManifestError, ActionError, ApprovalError, DecisionError)


def test_manifest_round_trip_and_signature() -> None:
    m = manifest()
    block = m.to_block()
    assert decode_manifest(block) == m
    assert m.version == 1 and m.previous is None
    v2 = manifest(previous=m, persona="You are Nova, now quieter.")
    assert v2.version == 2 and v2.previous == m.cid and v2.cid != m.cid
    # Someone else's signature over the same fields is refused.
    raw = decode(block)
    raw["sig"] = key("mallory").sign(m.signing_bytes()).signature
    with pytest.raises(ManifestError, match="signature"):
        decode_manifest(encode(raw))
    # An upgrade may not change the agent or the creator.
    with pytest.raises(ManifestError):
        manifest(creator="mallory", previous=m)


@pytest.mark.parametrize("change, message", [
    ({"type": "n3xus/imvu-manifest/v2"}, "type"),
    ({"name": "Nova!"}, "name"),
    ({"tools": ["world.read", "ledger.pay"]}, "sorted"),
    ({"tools": ["root.shell"]}, "unknown"),
    ({"version": 2}, "previous"),
    ({"extra": 1}, "unknown fields"),
    ({"generation": {"max_tokens": 0, "context_tokens": 2048, "memory_tokens": 256}}, "max_tokens"),
])
def test_manifest_schema_errors_are_clear(change: dict, message: str) -> None:
    raw = {**manifest().unsigned_map(), "sig": bytes(64), **change}
    with pytest.raises(ManifestError, match=message):
        decode_manifest(encode(raw))


def test_primitives_are_checked_when_built() -> None:
    with pytest.raises(ManifestError, match="normalized"):
        make_primitives(actions=["reply"], refuse=[RefuseRule("x", ("Creator Key",), "both")])
    with pytest.raises(ManifestError, match="unknown"):
        make_primitives(actions=["launch_missiles"])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_manifest_bit_flips_and_truncation_fail_cleanly(data: st.DataObject) -> None:
    block = manifest().to_block()
    cut = data.draw(st.integers(0, len(block) - 1))
    with pytest.raises(ManifestError):
        decode_manifest(block[:cut])
    position = data.draw(st.integers(0, len(block) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(block)
    flipped[position] ^= 1 << bit
    with pytest.raises(ManifestError):  # any change breaks the schema, the bytes or the signature
        decode_manifest(bytes(flipped))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_every_decoder_refuses_junk_with_a_value_error(junk: bytes) -> None:
    for decoder in (decode_manifest, decode_approval, decode_state, decode_memory_item, decode_request):
        try:
            decoder(junk)
        except VALUE_ERRORS:
            pass


def test_model_cid_is_cached_by_path_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"GGUF" + bytes(1000))
    first = model_cid_of_file(path)
    assert first.codec_name == "raw" and first.hash_name == "blake3"
    assert model_cid_of_file(path) is first  # cached: the same object, no re-hash
    path.write_bytes(b"GGUF" + bytes(999) + b"\x01")
    os.utime(path, ns=(0, 123_456_789))
    assert model_cid_of_file(path) != first


# -- actions --------------------------------------------------------------------------------

action_strategy = st.one_of(
    st.builds(Action, kind=st.just(Kind.REPLY), text=st.text(max_size=50).filter(lambda t: t.isprintable())),
    st.builds(Action, kind=st.sampled_from([Kind.TIP, Kind.PAY]), to=st.sampled_from(["alice", "bob-2"]),
              amount=st.integers(1, 2**63 - 1)),
    st.builds(Action, kind=st.just(Kind.PROPOSE_WORLD_EDIT), world=st.just("stage"), key=st.just("a/b"),
              value=st.text(max_size=20).filter(lambda t: t.isprintable())),
    st.just(Action(Kind.READ_BALANCE)),
)


@settings(max_examples=300, deadline=None)
@given(action_strategy)
def test_actions_round_trip_through_json(action: Action) -> None:
    assert parse_action(action.to_json()) == action
    assert parse_action(json.dumps(action.to_map(), indent=2)) == action


@pytest.mark.parametrize("output", [
    "", "tip alice 5", '{"action":"tip","to":"alice","amount":5} extra',
    '{"action":"tip","to":"alice","amount":5.0}', '{"action":"tip","to":"alice","amount":-5}',
    '{"action":"tip","to":"alice","amount":5,"amount":6}', '{"action":"tip","to":"Alice!","amount":5}',
    '{"action":"tip","to":"alice"}', '{"action":"sudo","cmd":"rm"}', '[{"action":"read_balance"}]',
    '{"action":"reply","text":"\\u0000"}', '{"action":"reply","text":"x","note":"y"}',
    '{"action":"reply","text":"' + "x" * 401 + '"}', '{"action":"tip","to":"alice","amount":NaN}',
])
def test_malformed_outputs_are_refused(output: str) -> None:
    with pytest.raises(ActionError):
        parse_action(output)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_action_never_crashes(text: str) -> None:
    try:
        parse_action(text)
    except ActionError:
        pass


def test_schema_offers_only_allowed_kinds_and_names() -> None:
    schema = action_schema(["reply", "tip"], payees=["bob", "alice"])
    kinds = [option["properties"]["action"]["const"] for option in schema["oneOf"]]
    assert kinds == ["reply", "tip"]
    assert schema["oneOf"][1]["properties"]["to"] == {"enum": ["alice", "bob"]}
    assert schema_text(schema) == schema_text(action_schema(["tip", "reply"], payees=["alice", "bob"]))


# -- approvals, memory, requests --------------------------------------------------------------

def test_approval_round_trip_and_strictness() -> None:
    m = manifest()
    approval = sign_approval(key("creator"), agent=m.agent, manifest=m.cid,
                             action=Action(Kind.TIP, to="alice", amount=30).cid, decision=m.cid, expires=T0)
    assert decode_approval(approval.to_block()) == approval and approval.signature_valid()
    raw = approval.to_map()
    raw["expires"] = T0 + 1
    assert not decode_approval(encode(raw)).signature_valid()
    with pytest.raises(ApprovalError, match="missing"):
        decode_approval(encode({k: v for k, v in approval.to_map().items() if k != "decision"}))


def test_memory_item_and_request_round_trip() -> None:
    item = MemoryItem("fact", "The show starts at nine.", "creator", T0, 0, None)
    assert decode_memory_item(item.to_block()) == item
    with pytest.raises(DecisionError, match="prev"):
        decode_memory_item(MemoryItem("fact", "x", "creator", T0, 1, None).to_block())
    request = Request("user:sam", "hello", T0, ("quoted world text",))
    assert decode_request(request.to_block()) == request
    snapshot = StateSnapshot(T0)
    assert decode_state(snapshot.to_block()) == snapshot


def test_primitives_helper_defaults_carry_refusals() -> None:
    assert [rule.id for rule in primitives().refuse] == ["secrets", "override"]
    assert isinstance(manifest().model.cid, CID)
    assert account("alice") in primitives().payees.values()
