"""Witnessing between real CLI nodes: a node that signs two inconsistent checkpoints -- a
second process started from a copy of its data dir and identity, which then diverges -- is
caught by a peer that fetched the consistency proof; the proof is stored, gossiped to the
witness's other peers, and verifies offline with ``n3xus audit split-view``. Plus the
``/n3xus/witness/1.0.0`` messages: round trips and hostile bytes (property tests)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import CliNode, run_cli, start_cli_node, wait_for
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import ProtocolError, RemoteProtocolError
from n3xus.protocol.framing import encode_message
from n3xus.protocol.witness import verify_split_view
from n3xus.protocol.witness_wire import (
    MAX_WITNESS_FRAME_BYTES,
    Ack,
    Checkpoints,
    Consistency,
    GetCheckpoints,
    GetConsistency,
    SplitViewGossip,
    WitnessRequester,
    WitnessResponder,
    WitnessState,
    encode_request,
    encode_response,
)

BOUND_S = 40.0


def cli(*args: str) -> Any:
    res = run_cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def recognises(node: CliNode, peer_id: str) -> bool:
    return any(p["peer_id"] == peer_id and p.get("hello") for p in node.api_get("/peers")["peers"])


def test_a_node_that_signs_two_histories_is_caught_and_the_proof_verifies_offline(
        tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    # The equivocator's identity, and a copy of it made before it ever ran.
    init = run_cli("node", "init", "--data-dir", str(tmp_path / "a"))
    assert init.returncode == 0, init.stderr
    shutil.copytree(tmp_path / "a", tmp_path / "a-copy")
    genesis = tmp_path / "a" / "genesis.cbor"

    witness = start_cli_node(tmp_path / "w", genesis=genesis)
    cli_nodes.append(witness)
    other = start_cli_node(tmp_path / "b", "--bootstrap", witness.listen_addr, genesis=genesis)
    cli_nodes.append(other)
    wait_for(lambda: recognises(witness, other.peer_id), BOUND_S, "B recognised by W")

    # History 1: A logs a world commit, then shows W its checkpoint in the hello.
    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    cli("world", "set", "garden", "rose", '"red"', "--data-dir", str(a.data_dir))
    cli("peers", "connect", witness.listen_addr, "--data-dir", str(a.data_dir))
    wait_for(lambda: recognises(witness, a.peer_id), BOUND_S, "A recognised by W")
    origin = f"n3xus.net/canon/{a.peer_id}"
    wait_for(lambda: witness.api_get("/status")["federation"]["witness"]["latest"].get(origin) == 1,
             BOUND_S, "W follows A's canon log at size 1")
    code, _, stderr = a.stop()
    assert code == 0, stderr[-2000:]
    # The witness restarts: what it witnessed is kept (LMDB), not only in memory.
    # (On its old port too, where B, which bootstraps from it, re-dials it.)
    old_port = witness.listen_addr.split("/")[4]
    code, _, stderr = witness.stop()
    assert code == 0, stderr[-2000:]
    witness = start_cli_node(tmp_path / "w", "--listen", f"/ip4/127.0.0.1/tcp/{old_port}")
    cli_nodes.append(witness)
    assert witness.api_get("/status")["federation"]["witness"]["logs_followed"] >= 2
    wait_for(lambda: recognises(witness, other.peer_id), BOUND_S * 2, "B recognised again")

    # History 2: the same identity from the copy commits something else, twice, and shows
    # W a checkpoint of size 2 that does not extend the one of size 1.
    forked = start_cli_node(tmp_path / "a-copy")
    cli_nodes.append(forked)
    assert forked.peer_id == a.peer_id
    cli("world", "set", "garden", "rose", '"white"', "--data-dir", str(forked.data_dir))
    cli("world", "set", "garden", "tulip", '"yellow"', "--data-dir", str(forked.data_dir))
    run_cli("peers", "connect", witness.listen_addr, "--data-dir", str(forked.data_dir))

    took = wait_for(lambda: witness.api_get("/status")["federation"]["witness"]["split_views"] == 1,
                    BOUND_S, "W catches the split view")
    print(f"\nsplit view caught {took:.1f} s after the forked node connected")
    status = witness.api_get("/status")["federation"]["witness"]
    assert status["proofs_fetched"] >= 1
    [evidence] = status["evidence"]
    proof_file = Path(evidence)
    assert proof_file.parent == witness.data_dir / "evidence"

    # The equivocator is banned by W; the honest peer stays.
    listed = cli("peers", "list", "--data-dir", str(witness.data_dir))
    banned = {p["peer_id"]: p for p in [*listed["peers"], *listed["others"]]}[a.peer_id]
    assert banned["banned"] is not None and banned["traffic"]["penalties"]["split-view"] == 1
    assert other.peer_id in {p["peer_id"] for p in listed["peers"]}

    # Gossip: B received the proof, checked it, and keeps it too.
    wait_for(lambda: other.api_get("/status")["federation"]["witness"]["split_views"] == 1,
             BOUND_S, "B received the gossiped proof")
    [gossiped] = other.api_get("/status")["federation"]["witness"]["evidence"]
    assert Path(gossiped).read_bytes() == proof_file.read_bytes()

    # Offline: anyone verifies the proof with the CLI, no node needed.
    res = run_cli("audit", "split-view", str(proof_file), "--json")
    assert res.returncode == 0, res.stderr
    verdict = json.loads(res.stdout)
    assert verdict["ok"] is True and verdict["kind"] == "inconsistent"
    assert verdict["origin"] == origin
    assert (verdict["first"]["size"], verdict["second"]["size"]) == (1, 2)
    human = run_cli("audit", "split-view", str(proof_file))
    assert human.returncode == 0 and human.stdout.startswith("OK  split view (inconsistent)")
    tampered = bytearray(proof_file.read_bytes())
    tampered[-5] ^= 0x01
    (tmp_path / "tampered.cbor").write_bytes(bytes(tampered))
    bad = run_cli("audit", "split-view", str(tmp_path / "tampered.cbor"))
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    verify_split_view(proof_file.read_bytes())  # the library agrees

    for node in (witness, other, forked):
        code, _, stderr = node.stop()
        assert code == 0, stderr[-2000:]


# -- /n3xus/witness/1.0.0 messages ----------------------------------------------------------

hashes = st.lists(st.binary(min_size=32, max_size=32), max_size=20)
notes = st.none() | st.text(min_size=1, max_size=200)
requests = st.one_of(
    st.just(GetCheckpoints()),
    st.builds(GetConsistency, st.sampled_from(["canon", "ledger"]),
              st.integers(1, 1000), st.integers(1001, 2**40)),
    st.builds(SplitViewGossip, st.binary(min_size=1, max_size=2000)),
)


def answer_for(request: Any, data: st.DataObject) -> Any:
    if isinstance(request, GetCheckpoints):
        return Checkpoints(data.draw(notes), data.draw(notes))
    if isinstance(request, GetConsistency):
        return Consistency(tuple(data.draw(hashes)), data.draw(st.binary(min_size=32, max_size=32)))
    return Ack(data.draw(st.booleans()))


@given(request=requests, data=st.data())
@settings(max_examples=200, deadline=None)
def test_witness_exchange_round_trips(request: Any, data: st.DataObject) -> None:
    requester = WitnessRequester(request, now=0.0)
    responder = WitnessResponder(now=0.0)
    assert responder.receive_data(requester.start(), 0.0) == request
    response = answer_for(request, data)
    assert requester.receive_data(responder.respond(response), 0.0) == response
    assert requester.state is WitnessState.DONE and responder.state is WitnessState.DONE


@given(request=requests, data=st.data())
@settings(max_examples=200, deadline=None)
def test_truncated_and_flipped_witness_frames_fail_cleanly(request: Any, data: st.DataObject) -> None:
    frame = encode_request(request)
    cut = data.draw(st.integers(0, len(frame) - 1))
    responder = WitnessResponder(now=0.0)
    assert responder.receive_data(frame[:cut], 0.0) is None
    with pytest.raises(RemoteProtocolError) as ended:
        responder.receive_eof()
    assert ended.value.code is ErrorCode.TRUNCATED
    flipped = bytearray(frame)
    index = data.draw(st.integers(0, len(frame) - 1))
    flipped[index] ^= 1 << data.draw(st.integers(0, 7))
    responder = WitnessResponder(now=0.0)
    try:
        parsed = responder.receive_data(bytes(flipped), 0.0)
    except ProtocolError as exc:
        assert isinstance(exc, RemoteProtocolError) and responder.state is WitnessState.FAILED
    else:
        assert parsed is None or responder.state is WitnessState.ANSWERING


def test_witness_responses_are_checked_against_the_request() -> None:
    requester = WitnessRequester(GetConsistency("canon", 1, 2), now=0.0)
    requester.start()
    with pytest.raises(RemoteProtocolError) as wrong:
        requester.receive_data(encode_response(Ack(True)), 0.0)
    assert wrong.value.code is ErrorCode.UNEXPECTED_MESSAGE
    responder = WitnessResponder(now=0.0)
    with pytest.raises(RemoteProtocolError) as bad:  # old must be below new
        responder.receive_data(encode_message({"type": "get-consistency", "log": "canon",
                                               "old": 5, "new": 5}, MAX_WITNESS_FRAME_BYTES), 0.0)
    assert bad.value.code is ErrorCode.MALFORMED
    responder = WitnessResponder(now=0.0)
    with pytest.raises(RemoteProtocolError) as unknown:
        responder.receive_data(encode_message({"type": "gimme"}, MAX_WITNESS_FRAME_BYTES), 0.0)
    assert unknown.value.code is ErrorCode.UNSUPPORTED
    responder = WitnessResponder(now=0.0)
    assert responder.deadline == 10.0
    with pytest.raises(RemoteProtocolError) as late:
        responder.check_deadline(10.0)
    assert late.value.code is ErrorCode.TIMEOUT and responder.state is WitnessState.FAILED


def test_witness_vectors_match_the_implementation() -> None:
    from protocol_vectors import from_json, to_json

    from n3xus.protocol.framing import FrameDecoder, decode_message

    vectors = json.loads((Path(__file__).resolve().parents[1] / "specs" / "vectors" /
                          "protocol-witness.json").read_text(encoding="utf-8"))
    assert len(vectors["valid"]) == 6 and len(vectors["invalid"]) == 5
    for vector in vectors["valid"]:
        frames = FrameDecoder(MAX_WITNESS_FRAME_BYTES)
        frames.receive_data(bytes.fromhex(vector["frame_hex"]), 0.0)
        body = frames.next_frame()
        assert body is not None and frames.buffered == 0
        value = decode_message(body)
        assert to_json(value) == vector["value"], vector["name"]
        assert encode_message(from_json(vector["value"]), MAX_WITNESS_FRAME_BYTES).hex() == vector["frame_hex"]
    for vector in vectors["invalid"]:
        responder = WitnessResponder(now=0.0)
        with pytest.raises(RemoteProtocolError) as refused:
            responder.receive_data(bytes.fromhex(vector["frame_hex"]), 0.0)
        assert int(refused.value.code) == vector["code"], vector["name"]
