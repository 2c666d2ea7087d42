"""``/n3xus/ledger-sync/1.0.0`` frames and session (specs/protocol-ledger-sync.md), the
gossip payload chunking, and the node's verify-ahead ingest against the ledger's own: the
decoder's property tests (round trip, truncation, bit flips: a clean error, never a crash),
the spec's vector and state table, and admission outcomes equal to ``LedgerStore.ingest``."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from n3xus.ledger.genesis import Genesis
from n3xus.ledger.ingest import Accepted, Rejected
from n3xus.ledger.store import LedgerStore
from n3xus.ledger.tx import AccountChain, Op
from n3xus.node.p2p.ledger_sync import (
    EOF,
    MAX_FRAME_BYTES,
    TRANSITIONS,
    Role,
    SyncSession,
    decode_sync,
    encode_sync,
    plan_pulls,
)
from n3xus.node.services.ledger_federation import (
    MAX_GOSSIP_BYTES,
    ParallelVerifier,
    admit_checked,
    gossip_messages,
)
from n3xus.node.storage import open_environment
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import ProtocolError, RemoteProtocolError
from n3xus.protocol.framing import FrameDecoder
from n3xus.protocol.sync.messages import Chain, Digest, Gossip, Message, Pull, Summary, SummaryRow

SPEC = Path(__file__).resolve().parents[1] / "specs" / "protocol-ledger-sync.md"
b32 = st.binary(min_size=32, max_size=32)
seqs = st.integers(0, 2**63 - 1)
entries = st.lists(st.binary(min_size=1, max_size=300), max_size=64).map(tuple)
messages: st.SearchStrategy[Message] = st.one_of(
    st.lists(b32, min_size=16, max_size=16).map(lambda b: Digest(tuple(b))),
    st.builds(lambda buckets, rows: Summary(tuple(sorted(set(buckets))), tuple(rows)),
              st.lists(st.integers(0, 15), min_size=1, max_size=16),
              st.lists(st.builds(SummaryRow, b32, b32, seqs, st.none() | seqs), max_size=8)),
    st.builds(Pull, b32, seqs),
    st.builds(Chain, b32, entries),
)


def body_of(frame: bytes) -> bytes:
    decoder = FrameDecoder(MAX_FRAME_BYTES)
    decoder.receive_data(frame, 0.0)
    body = decoder.next_frame()
    assert body is not None
    return body


@given(messages)
@settings(max_examples=200, deadline=None)
def test_every_message_round_trips(message: Message) -> None:
    assert decode_sync(body_of(encode_sync(message))) == message


@given(messages, st.data())
@settings(max_examples=200, deadline=None)
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
    except ProtocolError:
        return  # a clean refusal (MessageError/FrameError are ValueErrors too)
    assert decoded != message or bytes(flipped) == body


def test_the_spec_vector_and_unknown_fields() -> None:
    frame = encode_sync(Pull(bytes(32), 5))
    assert frame.hex() == "32a3616158" + "20" + "00" * 32 + "6173" + "05" + "6474797065" + "6470756c6c"
    assert "32                                    varint(50)" in SPEC.read_text()
    # Unknown keys are ignored (a later minor version may add some); gossip is not a
    # stream message; a missing key is malformed.
    from n3xus.canon.codec import encode

    assert decode_sync(encode({"type": "pull", "a": bytes(32), "s": 5, "z": 1})) == Pull(bytes(32), 5)
    with pytest.raises(RemoteProtocolError) as unknown:
        decode_sync(encode({"type": "gossip", "e": [b"x"]}))
    assert unknown.value.code == ErrorCode.UNSUPPORTED
    with pytest.raises(RemoteProtocolError) as missing:
        decode_sync(encode({"type": "pull", "a": bytes(32)}))
    assert missing.value.code == ErrorCode.MALFORMED


def test_the_spec_state_table_is_the_code_table() -> None:
    text = SPEC.read_text()
    table = text.split("<!-- table: ledger-sync-transitions -->")[1].split("<!-- end table -->")[0]
    rows = set()
    for line in table.strip().splitlines()[2:]:
        role, state, received, after = (c.strip() for c in line.strip("|").split("|"))
        received = EOF if received == "end of stream" else received.strip("`")
        rows.add((role, state, received, after))
    code = {(role, state, event, after) for (role, state), events in TRANSITIONS.items()
            for event, after in events.items()}
    assert rows == code


def feed(session: SyncSession, *frames: bytes, eof: bool = False) -> list[object]:
    for frame in frames:
        session.receive_data(frame, 0.0)
    if eof:
        session.receive_eof()
    events: list[object] = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def test_sessions_follow_the_table() -> None:
    chain = Chain(bytes(32), (b"entry",))
    summary = Summary((0,), ())
    initiator = SyncSession(Role.INITIATOR)
    with pytest.raises(RemoteProtocolError) as early:
        feed(initiator, encode_sync(chain))  # a chain before the summary
    assert early.value.code == ErrorCode.UNEXPECTED_MESSAGE
    initiator = SyncSession(Role.INITIATOR)
    assert feed(initiator, encode_sync(summary)) == [summary]
    initiator.sent(Pull(bytes(32), 0))
    assert feed(initiator, encode_sync(chain)) == [chain]
    with pytest.raises(RemoteProtocolError) as unasked:
        feed(initiator, encode_sync(chain))  # answers no pull
    assert unasked.value.code == ErrorCode.UNEXPECTED_MESSAGE
    cut = SyncSession(Role.INITIATOR)
    feed(cut, encode_sync(summary))
    cut.sent(Pull(bytes(32), 0))
    with pytest.raises(RemoteProtocolError) as truncated:
        feed(cut, eof=True)
    assert truncated.value.code == ErrorCode.TRUNCATED
    responder = SyncSession(Role.RESPONDER)
    with pytest.raises(RemoteProtocolError):
        feed(responder, encode_sync(Pull(bytes(32), 0)))  # a pull before the digest
    responder = SyncSession(Role.RESPONDER)
    digest = Digest((bytes(32),) * 16)
    assert feed(responder, encode_sync(digest), encode_sync(chain), eof=True) == [digest, chain, EOF]
    assert responder.state == "done"


def test_pulls_of_a_long_chain_are_planned_in_chunks() -> None:
    account = b"\x01" * 32
    row = SummaryRow(account, bytes(32), 200, None)
    frozen = SummaryRow(b"\x02" * 32, bytes(32), 500, 3)
    push = Chain(b"\x03" * 32, (b"e",))
    plan = plan_pulls([Pull(account, 10), Pull(frozen.account, 3), push],
                      Summary((0,), (row, frozen)))
    assert plan == [push, Pull(account, 10), Pull(account, 74), Pull(account, 138),
                    Pull(frozen.account, 3)]


def test_gossip_messages_respect_count_and_bytes() -> None:
    small = [bytes([i]) * 10 for i in range(130)]
    assert [len(m.entries) for m in gossip_messages(small)] == [64, 64, 2]
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
            verifier.close()
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
