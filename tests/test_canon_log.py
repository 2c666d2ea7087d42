"""The signed canon log: typed entries, Merkle proofs, checkpoints and verification."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest
from blake3 import blake3
from nacl.signing import SigningKey

from n3xus.canon import entries, merkle
from n3xus.canon.blockstore import BlockStore
from n3xus.canon.checkpoint import ProofBundle
from n3xus.canon.cid import cid_of
from n3xus.canon.codec import encode
from n3xus.canon.errors import CanonDecodeError, CanonError, VerificationError
from n3xus.canon.log import CanonLog, LogEntry, LogHead, sign_entry
from n3xus.canon.note import make_vkey
from n3xus.canon.world import BlockSource, World

ORIGIN = "n3xus.net/canon/12D3KooWTest"
NODE_KEY = SigningKey(b"\x07" * 32)
T0 = 1_700_000_000_000
LOG_DBS = (b"canon/log/entries", b"canon/log/by-cid", b"canon/log/tree", b"canon/log/meta")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[lmdb.Environment]:
    environment = lmdb.open(str(tmp_path / "db"), max_dbs=64, map_size=1 << 28)
    yield environment
    environment.close()


def new_log(env: lmdb.Environment) -> CanonLog:
    return CanonLog(env, BlockStore(env), ORIGIN)


def dump(env: lmdb.Environment) -> dict[bytes, list[tuple[bytes, bytes]]]:
    """Every key/value of the log's databases, to prove a refused append changed nothing."""
    result = {}
    for name in LOG_DBS:
        db = env.open_db(name)
        with env.begin(db=db) as txn:
            result[name] = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    return result


def handshake(peer: str = "12D3KooWPeer", time: int = T0) -> dict[str, object]:
    return {
        "peer": peer, "addresses": ["/ip4/127.0.0.1/udp/4001/quic-v1"],
        "protocols": ["/n3xus/canon/1.0.0", "/ipfs/id/1.0.0"], "agent": "n3xus/0.1.0",
        "direction": "inbound", "time": time,
    }


def decision(store: BlockSource, accepted: bool = True, verdict: str = "allow") -> dict[str, object]:
    return {
        "agent": "guide-1", "model": "smollm2-360m-q8_0", "model_cid": None,
        "prompt": store.put(encode({"text": "Where is the lobby?"})),
        "output": store.put(encode({"text": "Go north."})),
        "action": "reply", "policy": [{"rule": "no-pii", "verdict": verdict, "reason": ""}],
        "accepted": accepted, "time": T0,
    }


def world_commit(store: BlockSource, time: int = T0) -> entries.WorldCommit:
    root = World(store).set("lobby/door", {"open": True}).root
    return entries.sign_commit(SigningKey(b"\x09" * 32), world="lobby", root=root, time=time)


def fill(log: CanonLog, count: int) -> None:
    for i in range(count):
        log.append(NODE_KEY, "handshake", handshake(f"12D3KooWPeer{i}"), time=T0 + i)


def test_append_all_three_types_and_read_back(env: lmdb.Environment) -> None:
    log = new_log(env)
    commit = world_commit(log.store)
    first = log.append(NODE_KEY, "world-commit", commit, time=T0)
    second = log.append(NODE_KEY, "handshake", handshake(), time=T0 + 1)
    third = log.append(NODE_KEY, "agent-decision", decision(log.store), time=T0 + 2)
    assert [e.seq for e in (first, second, third)] == [0, 1, 2]
    assert (first.prev, second.prev, third.prev) == (None, first.cid, second.cid)
    assert log.head() == LogHead(3, third.cid, T0 + 2)
    assert log.entry(1) == second and log.index_of(third.cid) == 2
    assert log.payload(0) == commit and log.payload(1)["peer"] == "12D3KooWPeer"
    assert log.store.get(commit.cid) == commit.to_block()
    assert log.verify_log() == log.head()


def test_leaves_are_blake3_of_the_entry_block_bytes(env: lmdb.Environment) -> None:
    log = new_log(env)
    fill(log, 13)
    leaf_hashes = [blake3(b"\x00" + log.entry_block(i)).digest() for i in range(13)]
    assert [log.leaf_hash(i) for i in range(13)] == leaf_hashes
    for size in range(14):
        assert log.root(size) == merkle.root_from_leaf_hashes(merkle.BLAKE3, leaf_hashes[:size])


def test_proofs_verify_for_every_index_and_size(env: lmdb.Environment) -> None:
    log = new_log(env)
    fill(log, 21)
    for size in range(1, 22):
        root = log.root(size)
        for index in range(size):
            proof = log.inclusion_proof(index, size)
            merkle.verify_inclusion(merkle.BLAKE3, index, size, log.leaf_hash(index), proof, root)
        for old in range(1, size + 1):
            proof = log.consistency_proof(old, size)
            merkle.verify_consistency(merkle.BLAKE3, old, size, proof, log.root(old), root)
    with pytest.raises(VerificationError):
        merkle.verify_inclusion(merkle.BLAKE3, 3, 21, log.leaf_hash(4), log.inclusion_proof(3, 21), log.root())
    with pytest.raises(ValueError):
        log.inclusion_proof(0, 22)


def test_log_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    environment = lmdb.open(path, max_dbs=64, map_size=1 << 28)
    log = new_log(environment)
    fill(log, 5)
    root, head = log.root(), log.head()
    environment.close()
    environment = lmdb.open(path, max_dbs=64, map_size=1 << 28)
    log = new_log(environment)
    assert (log.root(), log.head()) == (root, head)
    log.append(NODE_KEY, "handshake", handshake(), time=T0 + 10)
    assert len(log) == 6 and log.verify_log().size == 6
    environment.close()


def refused_appends(log: CanonLog) -> Iterator[tuple[str, bytes, bytes, type[Exception]]]:
    """(what, entry block, payload block, expected error) for appends that must fail
    against a log of 2 entries whose head time is T0 + 1."""
    head = log.head()
    payload = encode(handshake())
    good = sign_entry(NODE_KEY, head, entry_type="handshake", version=1, payload=cid_of(payload), time=T0 + 5)

    def variant(**changes: object) -> bytes:
        unsigned = LogEntry(**{**good.__dict__, **changes, "signature": b""})
        signed = LogEntry(**{**unsigned.__dict__, "signature": NODE_KEY.sign(unsigned.signing_bytes()).signature})
        return signed.to_block()

    forged = LogEntry(**{**good.__dict__, "time": T0 + 6}).to_block()  # signature over other bytes
    yield "forged signature", forged, payload, VerificationError
    other_key = SigningKey(b"\x08" * 32)
    yield "signature by another key", LogEntry(**{**good.__dict__, "author": bytes(other_key.verify_key)}).to_block(), payload, VerificationError
    yield "replayed seq", variant(seq=1, prev=log.entry(0).cid), payload, VerificationError
    yield "skipped seq", variant(seq=3), payload, VerificationError
    yield "wrong prev", variant(prev=log.entry(0).cid), payload, VerificationError
    yield "time going back", variant(time=T0), payload, VerificationError
    yield "unknown type", variant(type="gossip"), payload, CanonDecodeError
    yield "unknown version", variant(version=2), payload, CanonDecodeError
    yield "payload not the one named", good.to_block(), encode(handshake("12D3KooWOther")), VerificationError
    bad_schema = encode({**handshake(), "direction": "sideways"})
    yield "schema mismatch", variant(payload=cid_of(bad_schema)), bad_schema, CanonDecodeError
    extra = encode({**handshake(), "extra": 1})
    yield "unknown payload field", variant(payload=cid_of(extra)), extra, CanonDecodeError
    wrong_type = encode(decision(log.store))
    yield "payload of another type", variant(payload=cid_of(wrong_type)), wrong_type, CanonDecodeError
    denied = encode(decision(log.store, accepted=True, verdict="deny"))
    yield "accepted despite a deny", variant(type="agent-decision", payload=cid_of(denied)), denied, CanonDecodeError
    commit = world_commit(log.store)
    tampered = entries.WorldCommit(**{**commit.__dict__, "time": commit.time + 1}).to_block()
    yield "world commit with a bad signature", variant(type="world-commit", payload=cid_of(tampered)), tampered, VerificationError
    yield "not canonical", good.to_block() + b"\x00", payload, CanonDecodeError
    yield "not a map", encode([1, 2]), payload, CanonDecodeError


def test_refused_appends_change_nothing(env: lmdb.Environment) -> None:
    log = new_log(env)
    fill(log, 2)
    before, root = dump(env), log.root()
    cases = list(refused_appends(log))
    assert len(cases) == 16
    for what, entry_block, payload_block, error in cases:
        with pytest.raises(error):
            log.append_entry(entry_block, payload_block)
        assert dump(env) == before, what
    assert log.root() == root and log.verify_log().size == 2
    # The good entry the variants were made from is still accepted afterwards.
    payload = encode(handshake())
    good = sign_entry(NODE_KEY, log.head(), entry_type="handshake", version=1, payload=cid_of(payload), time=T0 + 5)
    assert log.append_entry(good.to_block(), payload).seq == 2


def test_append_of_a_peers_signed_entry(env: lmdb.Environment) -> None:
    log = new_log(env)
    peer = SigningKey(b"\x0a" * 32)
    payload = encode(handshake())
    entry = sign_entry(peer, log.head(), entry_type="handshake", version=1, payload=cid_of(payload), time=T0)
    assert log.append_entry(entry.to_block(), payload).author == bytes(peer.verify_key)


def tamper(env: lmdb.Environment, db_name: bytes, key: bytes, value: bytes) -> None:
    db = env.open_db(db_name)
    with env.begin(write=True, db=db) as txn:
        txn.put(key, value)


def test_verify_log_finds_tampering(env: lmdb.Environment) -> None:
    log = new_log(env)
    fill(log, 6)
    pristine = dump(env)
    entry = log.entry(3)
    altered = LogEntry(**{**entry.__dict__, "time": entry.time + 1}).to_block()
    tamper(env, b"canon/log/entries", (3).to_bytes(8, "big"), altered)
    with pytest.raises(VerificationError, match="entry 3"):
        log.verify_log()
    tamper(env, b"canon/log/entries", (3).to_bytes(8, "big"), dict(pristine[b"canon/log/entries"])[(3).to_bytes(8, "big")])
    log.verify_log()
    tamper(env, b"canon/log/tree", bytes([1]) + (1).to_bytes(8, "big"), b"\x00" * 32)
    with pytest.raises(VerificationError, match="tree node"):
        log.verify_log()


def test_checkpoints_are_signed_and_never_inconsistent(env: lmdb.Environment) -> None:
    log = new_log(env)
    fill(log, 4)
    note = log.checkpoint(NODE_KEY)
    opened = log.verify_checkpoint(note, NODE_KEY.verify_key)
    size, root = opened.size, opened.root_hash
    assert (opened.origin, size, root) == (ORIGIN, 4, log.root())
    fill_more = [log.append(NODE_KEY, "handshake", handshake(), time=T0 + 100 + i) for i in range(3)]
    assert len(fill_more) == 3
    later = log.checkpoint(NODE_KEY)
    opened2 = log.verify_checkpoint(later, NODE_KEY.verify_key)
    size2, root2 = opened2.size, opened2.root_hash
    assert size2 == 7
    merkle.verify_consistency(merkle.BLAKE3, size, size2, log.consistency_proof(size, size2), root, root2)
    with pytest.raises(VerificationError):
        log.verify_checkpoint(later, SigningKey(b"\x0b" * 32).verify_key)
    assert log.verify_log(NODE_KEY.verify_key).size == 7
    bundle = log.prove(5)
    vkey = make_vkey(ORIGIN, NODE_KEY.verify_key)
    parsed = ProofBundle.parse(bundle.to_text())
    assert parsed.verify(vkey, merkle.BLAKE3, entry=log.entry_block(5)).size == 7
    with pytest.raises(VerificationError):
        parsed.verify(vkey, merkle.BLAKE3, entry=log.entry_block(4))
    # A log whose stored tree was rolled back below its last checkpoint refuses to sign.
    tamper(env, b"canon/log/meta", b"size", (2).to_bytes(8, "big"))
    with pytest.raises(CanonError):
        log.checkpoint(NODE_KEY)


def test_payloads_are_pinned_and_survive_garbage_collection(env: lmdb.Environment) -> None:
    log = new_log(env)
    fill(log, 3)
    store = log.store
    assert isinstance(store, BlockStore)
    pinned = {pin.name: pin.cid for pin in store.pins()}
    assert pinned == {f"canon/log/payload/{i}": log.entry(i).payload for i in range(3)}
    loose = store.put(encode({"not": "pinned"}))
    for _ in range(3):  # past the grace cycle of bare puts
        store.collect_garbage()
    assert not store.has(loose)
    assert log.verify_log().size == 3


def test_origin_must_be_a_note_key_name(env: lmdb.Environment) -> None:
    for bad in ("", "has space", "a+b", "two\nlines"):
        with pytest.raises(ValueError):
            CanonLog(env, BlockStore(env), bad)
