"""``/n3xus/ledger-sync/2.0.0`` frames and session (specs/protocol-ledger-sync.md), the
gossip payload chunking, and the node's verify-ahead ingest against the ledger's own: the
decoder's property tests (round trip, truncation, bit flips: a clean error, never a crash),
the spec's vectors (specs/vectors/protocol-ledger-sync.json, protocol-ledger-gossip.json:
gossip message data), the session's answer matching
and budgets, and admission outcomes equal to ``LedgerStore.ingest``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ledger_gossip_vectors as gossip_vectors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_sync_vectors import FILE, FINGERPRINTED, index_of, render
from libp2p.pubsub.pb import rpc_pb2
from nacl.signing import SigningKey
from sync_support import stream_messages

from n3xus.canon.codec import encode
from n3xus.ledger.genesis import Genesis
from n3xus.ledger.ingest import Accepted, Rejected
from n3xus.ledger.store import LedgerStore
from n3xus.ledger.tx import AccountChain, Op
from n3xus.node.p2p.gossip import message_id
from n3xus.node.services.ledger_federation import (
    MAX_GOSSIP_BYTES,
    MAX_GOSSIP_ENTRIES,
    ParallelVerifier,
    admit_checked,
    gossip_messages,
)
from n3xus.node.storage import open_environment
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import MessageError, ProtocolError, RemoteProtocolError
from n3xus.protocol.framing import FrameDecoder
from n3xus.protocol.sync.messages import (
    ROOT,
    Chain,
    Gossip,
    Message,
    Pull,
    Query,
    Range,
    RangeFingerprint,
    RangeRows,
    Summary,
    SummaryRow,
    decode_message,
    encode_message,
)
from n3xus.protocol.sync.session import (
    EOF,
    MAX_FRAME_BYTES,
    MAX_PULLS_PER_EXCHANGE,
    MAX_RANGES_PER_EXCHANGE,
    Role,
    SyncSession,
    decode_sync,
    encode_sync,
    plan_pulls,
)

SPEC = Path(__file__).resolve().parents[1] / "specs" / "protocol-ledger-sync.md"
VECTORS = Path(__file__).resolve().parents[1] / "specs" / "vectors" / FILE
GOSSIP_VECTORS = Path(__file__).resolve().parents[1] / "specs" / "vectors" / gossip_vectors.FILE


def body_of(frame: bytes) -> bytes:
    decoder = FrameDecoder(MAX_FRAME_BYTES)
    decoder.receive_data(frame, 0.0)
    body = decoder.next_frame()
    assert body is not None
    return body


@given(stream_messages)
@settings(max_examples=300, deadline=None)
def test_every_message_round_trips(message: Message) -> None:
    assert decode_sync(body_of(encode_sync(message))) == message


@given(stream_messages, st.data())
@settings(max_examples=300, deadline=None)
def test_truncated_and_flipped_frames_fail_cleanly(message: Message, data: st.DataObject) -> None:
    body = body_of(encode_sync(message))
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(ProtocolError):
        decode_sync(body[:cut])
    flipped = bytearray(body)
    bit = data.draw(st.integers(0, len(body) * 8 - 1))
    flipped[bit // 8] ^= 1 << (bit % 8)
    try:
        decoded = decode_sync(bytes(flipped))
    except ProtocolError as exc:
        assert exc.code in (ErrorCode.MALFORMED, ErrorCode.UNSUPPORTED)
        return  # a clean refusal (MessageError/FrameError are ValueErrors too)
    assert decode_sync(body_of(encode_sync(decoded))) == decoded  # what decodes is valid


def test_the_vector_file_is_what_the_code_makes() -> None:
    assert VECTORS.read_text(encoding="utf-8") == render(), (
        f"{FILE} is out of date: python tests/ledger_sync_vectors.py --write")
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    index = index_of()
    # The fingerprints, recomputed from the rows the file lists (the §2.1 rule).
    assert [(bytes.fromhex(b64hex(f["prefix"])), f["depth"]) for f in vectors["fingerprints"]] == \
        [(r.prefix, r.depth) for r in FINGERPRINTED]
    for item, where in zip(vectors["fingerprints"], FINGERPRINTED, strict=True):
        assert bytes.fromhex(b64hex(item["fingerprint"])) == index.fingerprint(where)
    root = vectors["valid"][0]
    assert root["name"] == "query of the root" and root["hex"][:18] == "23a261728183400050"
    assert f"root fingerprint `{root['hex'][18:50]}`" in SPEC.read_text()
    assert root["hex"][18:50] == index.fingerprint(ROOT).hex()
    for vector in vectors["valid"]:
        frame = bytes.fromhex(vector["hex"])
        assert encode_sync(decode_sync(body_of(frame))) == frame, vector["name"]
    for vector in vectors["invalid"]:
        with pytest.raises(ProtocolError) as refused:
            decode_sync(body_of(bytes.fromhex(vector["hex"])))
        assert refused.value.code.label == vector["code"], vector["name"]


def b64hex(value: dict[str, dict[str, str]]) -> str:
    import base64

    encoded = value["/"]["bytes"]
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4)).hex()


def test_the_spec_vector_and_unknown_fields() -> None:
    frame = encode_sync(Pull(bytes(32), 5))
    assert frame.hex() == "32a3616158" + "20" + "00" * 32 + "6173" + "05" + "6474797065" + "6470756c6c"
    assert "32                                    varint(50)" in SPEC.read_text()
    # Unknown keys are ignored (a later minor version may add some); gossip is not a
    # stream message, nor is 1.0.0's digest; a missing key is malformed.
    assert decode_sync(encode({"type": "pull", "a": bytes(32), "s": 5, "z": 1})) == Pull(bytes(32), 5)
    for retired in ({"type": "gossip", "e": [b"x"]}, {"type": "digest", "b": [bytes(32)] * 16}):
        with pytest.raises(RemoteProtocolError) as unknown:
            decode_sync(encode(retired))
        assert unknown.value.code == ErrorCode.UNSUPPORTED
    with pytest.raises(RemoteProtocolError) as missing:
        decode_sync(encode({"type": "pull", "a": bytes(32)}))
    assert missing.value.code == ErrorCode.MALFORMED


def feed(session: SyncSession, *frames: bytes, eof: bool = False) -> list[object]:
    for frame in frames:
        session.receive_data(frame, 0.0)
    if eof:
        session.receive_eof()
    events: list[object] = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def test_answers_match_requests_in_order() -> None:
    account = bytes(32)
    chain = Chain(account, (b"entry",))
    root = Query((RangeFingerprint(ROOT, bytes(16)),))
    summary = Summary((RangeRows(ROOT, ()),))
    initiator = SyncSession(Role.INITIATOR)
    with pytest.raises(RemoteProtocolError) as early:
        feed(initiator, encode_sync(summary))  # answers nothing
    assert early.value.code == ErrorCode.UNEXPECTED_MESSAGE
    initiator = SyncSession(Role.INITIATOR)
    initiator.sent(root)
    initiator.sent(Pull(account, 0))
    assert feed(initiator, encode_sync(summary), encode_sync(chain)) == [summary, chain]
    assert initiator.outstanding == 0
    with pytest.raises(RemoteProtocolError) as unasked:
        feed(initiator, encode_sync(chain))  # answers no pull
    assert unasked.value.code == ErrorCode.UNEXPECTED_MESSAGE
    for wrong in (chain, Summary((RangeRows(Range(b"\x10", 1), ()),))):
        crossed = SyncSession(Role.INITIATOR)
        crossed.sent(root)  # a chain where a summary is due; a summary of another range
        with pytest.raises(RemoteProtocolError) as mismatched:
            feed(crossed, encode_sync(wrong))
        assert mismatched.value.code == ErrorCode.UNEXPECTED_MESSAGE
    other = SyncSession(Role.INITIATOR)
    other.sent(Pull(b"\x01" * 32, 0))
    with pytest.raises(RemoteProtocolError):
        feed(other, encode_sync(chain))  # a chain of another account
    cut = SyncSession(Role.INITIATOR)
    cut.sent(Pull(account, 0))
    with pytest.raises(RemoteProtocolError) as truncated:
        feed(cut, eof=True)
    assert truncated.value.code == ErrorCode.TRUNCATED
    responder = SyncSession(Role.RESPONDER)
    assert feed(responder, encode_sync(root), encode_sync(Pull(account, 0)), encode_sync(chain),
                eof=True) == [root, Pull(account, 0), chain, EOF]
    assert responder.state == "done"
    with pytest.raises(RemoteProtocolError) as answer:
        feed(SyncSession(Role.RESPONDER), encode_sync(summary))  # a responder is not asked
    assert answer.value.code == ErrorCode.UNEXPECTED_MESSAGE


def test_a_responder_holds_the_initiator_to_the_budgets() -> None:
    full = Query(tuple(RangeFingerprint(Range(bytes([n // 16 << 4 | n % 16]), 2), bytes(16))
                       for n in range(256)))
    responder = SyncSession(Role.RESPONDER)
    frame = encode_sync(full)
    sent = 0
    with pytest.raises(RemoteProtocolError) as over:
        while True:
            feed(responder, frame)
            sent += 256
    assert over.value.code == ErrorCode.UNEXPECTED_MESSAGE
    assert sent == MAX_RANGES_PER_EXCHANGE
    pulls = SyncSession(Role.RESPONDER)
    pull = encode_sync(Pull(bytes(32), 0))
    feed(pulls, pull * MAX_PULLS_PER_EXCHANGE)
    with pytest.raises(RemoteProtocolError):
        feed(pulls, pull)


def test_pulls_of_a_long_chain_are_planned_in_chunks() -> None:
    account, frozen = b"\x01" * 32, b"\x02" * 32
    summary = Summary((RangeRows(ROOT, (SummaryRow(account, bytes(32), 200, None),
                                        SummaryRow(frozen, bytes(32), 500, 3))),))
    from n3xus.protocol.sync.session import peer_next_seqs

    plan = plan_pulls([Pull(account, 10), Pull(frozen, 3)], peer_next_seqs(summary), 100)
    assert plan == [Pull(account, 10), Pull(account, 74), Pull(account, 138), Pull(frozen, 3)]
    assert plan_pulls([Pull(account, 10), Pull(frozen, 3)], peer_next_seqs(summary), 2) == \
        [Pull(account, 10), Pull(account, 74)]


def test_gossip_messages_respect_count_and_bytes() -> None:
    small = [bytes([i % 256]) * 10 for i in range(600)]
    assert [len(m.entries) for m in gossip_messages(small)] == [256, 256, 88]
    big = [bytes([i]) * (MAX_GOSSIP_BYTES // 3) for i in range(7)]
    chunks = gossip_messages(big)
    assert all(sum(map(len, m.entries)) <= MAX_GOSSIP_BYTES for m in chunks)
    assert [e for m in chunks for e in m.entries] == big and gossip_messages([]) == []
    assert all(isinstance(m, Gossip) for m in chunks)


def test_verify_ahead_ingest_equals_the_ledgers_own(tmp_path: Path) -> None:
    """The node's path (signatures on a pool, then admission without a second check) and
    ``LedgerStore.ingest`` give the same outcomes and state root, bad signatures,
    duplicates, malformed bytes and out-of-order chains included."""
    issuer = SigningKey(b"\x11" * 32)
    genesis = Genesis.create("wire", [bytes(issuer.verify_key)], 10**12,
                             bytes(SigningKey(b"\x12" * 32).verify_key))
    funding = AccountChain(issuer, genesis.cid)
    users = [AccountChain(SigningKey(bytes([i + 1]) * 32), genesis.cid) for i in range(8)]
    batch = [funding.sign(Op.ISSUE, {"to": u.account, "amount": 1000}, time_ms=1) for u in users]
    for n in range(200):
        user = users[n % 8]
        batch.append(user.sign(Op.TRANSFER, {"to": users[(n + 3) % 8].account,
                                             "amount": 1 + n % 50}, time_ms=10 + n))
    forged = bytearray(batch[50])
    forged[-1] ^= 1
    unknown = bytearray(users[0].sign(Op.TRANSFER, {"to": users[1].account, "amount": 1},
                                      time_ms=999))
    unknown[-1] ^= 1
    batch = batch[::-1] + [bytes(forged), batch[7], b"\xa0", bytes(unknown)]  # reversed
    roots, kinds = [], []
    for index, node_path in enumerate((True, False)):
        env = open_environment(tmp_path / f"s{index}", 64)
        store = LedgerStore(env, genesis)
        if node_path:
            verifier = ParallelVerifier(2)
            outcomes = admit_checked(store, batch, verifier.check(store, batch), sort=True, now=None)
        else:
            outcomes = store.ingest(batch)
        kinds.append(sorted(str(o.reason) for o in outcomes if isinstance(o, Rejected)))
        roots.append(store.state_root())
        if node_path:  # sorted by canonical order: every chain in order, none pending
            assert sum(isinstance(o, Accepted) for o in outcomes) == 208
        env.close()
    assert roots[0] == roots[1]
    # The forged copy is a replay either way (§6.1 checks replays before signatures).
    assert kinds[0] == kinds[1] == ["bad-signature", "malformed", "replay", "replay"]


def test_pipelined_verify_ahead_equals_the_ledgers_own(tmp_path: Path) -> None:
    """Batch i+1 checked (``pipelined``) while batch i is admitted: the same outcomes and
    state root as ``LedgerStore.ingest`` of the same batches, for copies that reach the
    ledger only after their batch was checked (replays), forged copies, another network's
    transaction and bytes that do not decode."""
    issuer = SigningKey(b"\x21" * 32)
    genesis = Genesis.create("pipe", [bytes(issuer.verify_key)], 10**12,
                             bytes(SigningKey(b"\x22" * 32).verify_key))
    other = Genesis.create("other", [bytes(issuer.verify_key)], 10**12,
                           bytes(SigningKey(b"\x22" * 32).verify_key))
    funding = AccountChain(issuer, genesis.cid)
    users = [AccountChain(SigningKey(bytes([i + 40]) * 32), genesis.cid) for i in range(6)]
    entries = [funding.sign(Op.ISSUE, {"to": u.account, "amount": 500}, time_ms=1) for u in users]
    for n in range(300):
        entries.append(users[n % 6].sign(Op.TRANSFER, {"to": users[(n + 1) % 6].account,
                                                       "amount": 1 + n % 9}, time_ms=5 + n))
    forged = bytearray(entries[100])
    forged[-1] ^= 1
    foreign = AccountChain(SigningKey(b"\x23" * 32), other.cid).sign(
        Op.TRANSFER, {"to": users[0].account, "amount": 1}, time_ms=2)
    batches = [entries[:100], entries[100:200] + entries[50:60] + [bytes(forged), foreign],
               entries[200:] + entries[150:160] + [b"\xa0\x01"]]
    results = []
    for index, node_path in enumerate((True, False)):
        env = open_environment(tmp_path / f"p{index}", 64)
        store = LedgerStore(env, genesis)
        outcomes = []
        if node_path:
            verifier = ParallelVerifier(2)
            for batch, checked in zip(batches, verifier.pipelined(store, batches), strict=True):
                outcomes += admit_checked(store, batch, checked, sort=False, now=None)
        else:
            for batch in batches:
                outcomes += store.ingest(batch)
        results.append(([(type(o).__name__, str(getattr(o, "reason", None))) for o in outcomes],
                        store.state_root(), store.log_size()))
        env.close()
    assert results[0] == results[1]
    rejected = sorted(reason for kind, reason in results[0][0] if kind == "Rejected")
    assert rejected == ["malformed"] + ["replay"] * 21 + ["wrong-network"]


def test_account_view_follows_the_head_through_failed_transactions(tmp_path: Path) -> None:
    """A peer's transaction that fails (an overdraft) still takes its seq: the account view
    continues after it, and ``head_time`` tells wallets not to sign before it."""
    from n3xus.node.services.ledger import LedgerService

    issuer = SigningKey(b"\x31" * 32)
    genesis = Genesis.create("head", [bytes(issuer.verify_key)], 10**9,
                             bytes(SigningKey(b"\x32" * 32).verify_key))
    user = AccountChain(SigningKey(b"\x33" * 32), genesis.cid)
    env = open_environment(tmp_path / "head", 64)
    service = LedgerService(env, genesis, SigningKey(b"\x34" * 32), "head")
    funding = AccountChain(issuer, genesis.cid).sign(Op.ISSUE, {"to": user.account, "amount": 10},
                                                     time_ms=5)
    overdraft = user.sign(Op.TRANSFER, {"to": b"\x01" * 32, "amount": 11}, time_ms=7_000)
    outcomes = service.store.ingest([funding, overdraft])
    assert isinstance(outcomes[1], Accepted) and str(outcomes[1].reason) == "overdraft"
    view = service.account(user.account)
    assert view["next_seq"] == 1 and view["head_time"] == 7_000 and view["balance"] == 10
    assert view["prev"] == str(outcomes[1].cid)
    env.close()


@given(st.lists(stream_messages, max_size=6), st.sampled_from([Role.INITIATOR, Role.RESPONDER]),
       st.lists(stream_messages.filter(lambda m: isinstance(m, Query | Pull)), max_size=3),
       st.booleans())
@settings(max_examples=200, deadline=None)
def test_any_frame_sequence_gives_events_or_a_clean_protocol_error(
        received: list[Message], role: str, requests: list[Message], eof: bool) -> None:
    session = SyncSession(role)
    if role == Role.INITIATOR:
        for request in requests:
            session.sent(request)
    try:
        events = feed(session, *(encode_sync(m) for m in received), eof=eof)
    except RemoteProtocolError as exc:
        assert exc.code in (ErrorCode.UNEXPECTED_MESSAGE, ErrorCode.TRUNCATED)
        return
    assert [e for e in events if e != EOF] == received


# --- gossip messages (protocol-ledger-sync.md §1) ---------------------------------------------

gossip_entries = st.lists(st.binary(min_size=1, max_size=40), min_size=1,
                          max_size=MAX_GOSSIP_ENTRIES).map(tuple)


@given(gossip_entries)
@settings(max_examples=200, deadline=None)
def test_gossip_messages_round_trip(entries: tuple[bytes, ...]) -> None:
    data = encode_message(Gossip(entries))
    assert decode_message(data) == Gossip(entries)
    assert gossip_messages(list(entries)) == [Gossip(entries)]  # one message when it fits


@given(gossip_entries, st.data())
@settings(max_examples=300, deadline=None)
def test_truncated_and_flipped_gossip_fails_cleanly(entries: tuple[bytes, ...],
                                                    data: st.DataObject) -> None:
    encoded = encode_message(Gossip(entries))
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(ValueError):
        decode_message(encoded[:cut])
    bit = data.draw(st.integers(0, len(encoded) * 8 - 1))
    flipped = bytearray(encoded)
    flipped[bit // 8] ^= 1 << (bit % 8)
    try:
        decoded = decode_message(bytes(flipped))
    except ValueError:
        return  # a clean refusal (MessageError is a ValueError)
    assert decode_message(encode_message(decoded)) == decoded


def test_the_gossip_vector_file_is_what_the_code_makes() -> None:
    assert GOSSIP_VECTORS.read_text(encoding="utf-8") == gossip_vectors.render(), (
        f"{gossip_vectors.FILE} is out of date: python tests/ledger_gossip_vectors.py --write")
    found = json.loads(GOSSIP_VECTORS.read_text(encoding="utf-8"))

    def data_of(vector: dict[str, Any]) -> bytes:
        return bytes.fromhex(vector["hex"]) if "hex" in vector \
            else gossip_vectors.runs_data(vector["runs"])

    for vector in found["valid"]:
        data = data_of(vector)
        message = decode_message(data)
        assert isinstance(message, Gossip) and encode_message(message) == data, vector["name"]
        assert message_id(rpc_pb2.Message(data=data)).hex() == vector["message id"]
    assert [len(decode_message(data_of(v)).entries) for v in found["valid"]][2] == \
        MAX_GOSSIP_ENTRIES  # type: ignore[union-attr]
    for vector in found["invalid"]:
        with pytest.raises(MessageError):
            decode_message(data_of(vector))
        assert vector["code"] == "malformed"
    # The spec states the limits the vectors check.
    spec = SPEC.read_text()
    assert f"| `MAX_GOSSIP_ENTRIES` | {MAX_GOSSIP_ENTRIES} |" in spec
    assert f"| `MAX_GOSSIP_BYTES` | {MAX_GOSSIP_BYTES:,} |" in spec
