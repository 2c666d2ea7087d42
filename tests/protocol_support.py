"""Shared pieces for the protocol core tests: deterministic keys, configs, checkpoints."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nacl.signing import SigningKey

from n3xus.canon import merkle
from n3xus.canon.checkpoint import Checkpoint
from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import encode
from n3xus.protocol.hello import FederationPolicy, HelloConfig, HelloExchange, Role
from n3xus.protocol.identity import canon_origin, ledger_origin, peer_id_of

NETWORK = cid_of(encode({"genesis": "test network"}))
OTHER_NETWORK = cid_of(encode({"genesis": "another network"}))
NOW_MS = 1_790_000_000_000
NOW = 1000.0


def key(seed: int) -> SigningKey:
    return SigningKey(bytes([seed]) * 32)


def peer(seed: int) -> str:
    return peer_id_of(bytes(key(seed).verify_key))


def signed_checkpoint(seed: int, size: int, *, ledger: bool = False, leaves: int | None = None,
                      network: CID = NETWORK, salt: bytes = b"") -> str:
    """A checkpoint of ``size`` leaves ``leaf i`` (+ ``salt``) signed by key ``seed``."""
    origin = ledger_origin(network, peer(seed)) if ledger else canon_origin(peer(seed))
    tree = merkle.MerkleTree(merkle.BLAKE3, [merkle.BLAKE3.leaf_hash(b"leaf %d" % i + salt)
                                             for i in range(size if leaves is None else leaves)])
    extensions = ("n3xus-state 0 " + "A" * 43 + "=",) if ledger else ()
    return Checkpoint(origin, size, tree.root(size), extensions).sign(origin, key(seed))


def config(seed: int, **changes: Any) -> HelloConfig:
    base = HelloConfig(
        signing_key=key(seed), version="0.1.0", agent="n3xus-py/0.1.0",
        protocols=("/n3xus/blocks/1.0.0", "/n3xus/hello/1.0.0"), capabilities=("blocks",),
        network=NETWORK, policy=FederationPolicy((NETWORK,)),
        canon_checkpoint=signed_checkpoint(seed, 5),
        ledger_checkpoint=signed_checkpoint(seed, 3, ledger=True),
    )
    return replace(base, **changes)


def pair(initiator: HelloConfig, responder: HelloConfig, *, nonces: tuple[bytes, bytes] | None = None
         ) -> tuple[HelloExchange, HelloExchange]:
    i_nonce, r_nonce = nonces if nonces is not None else (None, None)
    a = HelloExchange(Role.INITIATOR, initiator, local_peer=initiator.peer_id,
                      remote_peer=responder.peer_id, now=NOW, nonce=i_nonce)
    b = HelloExchange(Role.RESPONDER, responder, local_peer=responder.peer_id,
                      remote_peer=initiator.peer_id, now=NOW, nonce=r_nonce)
    return a, b


def run(a: HelloExchange, b: HelloExchange, *, now: float = NOW, a_ms: int = NOW_MS,
        b_ms: int = NOW_MS) -> list[bytes]:
    """Drive both sides to the end; answers the frames sent, in order."""
    sent = [a.start()]
    to_b = sent[0]
    for _ in range(4):
        to_a = b.receive_data(to_b, now=now, wall_ms=b_ms)
        if to_a:
            sent.append(to_a)
        to_b = a.receive_data(to_a, now=now, wall_ms=a_ms)
        if to_b:
            sent.append(to_b)
        if a.finished and b.finished:
            break
    return sent
