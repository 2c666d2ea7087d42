"""Peer ids of ed25519 keys, and the log origins derived from them.

A libp2p peer id of an ed25519 key is the identity multihash of the key's protobuf
encoding: ``00 24 08 01 12 20 || public key`` (38 bytes), printed in base58btc
(``12D3KooW…``). So a peer id *is* its public key: a verifier derives the key from the id,
and a node's canon log origin ``n3xus.net/canon/<peer id>`` or ledger log origin
``n3xus.net/ledger/<network>/<peer id>`` names the key that signs its checkpoints.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from n3xus.canon.errors import CanonDecodeError
from n3xus.canon.multiformats import base58btc_decode, base58btc_encode
from n3xus.canon.note import NoteVerifier, make_vkey, parse_vkey

ED25519_PEER_ID_PREFIX: Final = bytes.fromhex("002408011220")
"""identity multihash (00), length 36 (24), protobuf KeyType=Ed25519 (08 01), Data (12 20)."""
ED25519_KEY_BYTES: Final = 32
MAX_PEER_ID_CHARS: Final = 128
"""Longest peer id text accepted in messages (an ed25519 one is 52 characters; room for
other key types without admitting junk), as in the canon log's handshake entries."""

CANON_ORIGIN_PREFIX: Final = "n3xus.net/canon/"
LEDGER_ORIGIN_PREFIX: Final = "n3xus.net/ledger/"


ORIGIN_CACHE_SIZE: Final = 4096
"""Origins and keys whose derived forms are kept: verifying a hello derives the key of two
origins and base58-encodes three keys (two thirds of its cost without the cache); 4096
covers a node's peers, two logs each."""


@lru_cache(maxsize=ORIGIN_CACHE_SIZE)
def peer_id_of(public_key: bytes) -> str:
    """The base58btc peer id of an ed25519 public key."""
    if len(public_key) != ED25519_KEY_BYTES:
        raise ValueError(f"an ed25519 public key has {ED25519_KEY_BYTES} bytes")
    return base58btc_encode(ED25519_PEER_ID_PREFIX + bytes(public_key))


def key_of_peer_id(peer_id: str) -> bytes:
    """The ed25519 public key inside a peer id; ValueError for any other kind of id."""
    if not isinstance(peer_id, str) or not 1 <= len(peer_id) <= MAX_PEER_ID_CHARS:
        raise ValueError("not a peer id")
    try:
        raw = base58btc_decode(peer_id)
    except CanonDecodeError as exc:
        raise ValueError(f"peer id {peer_id[:60]!r} is not base58btc") from exc
    if len(raw) != len(ED25519_PEER_ID_PREFIX) + ED25519_KEY_BYTES or not raw.startswith(
        ED25519_PEER_ID_PREFIX
    ):
        raise ValueError(f"peer id {peer_id[:60]!r} is not an ed25519 identity peer id")
    key = raw[len(ED25519_PEER_ID_PREFIX):]
    if peer_id_of(key) != peer_id:  # one text per key: refuse non-canonical spellings
        raise ValueError(f"peer id {peer_id[:60]!r} is not canonical base58btc")
    return key


def canon_origin(peer_id: str) -> str:
    return CANON_ORIGIN_PREFIX + peer_id


def ledger_origin(network: object, peer_id: str) -> str:
    return f"{LEDGER_ORIGIN_PREFIX}{network}/{peer_id}"


def peer_id_of_origin(origin: str) -> str:
    """The peer id a n3xus log origin ends with (canon or ledger); ValueError otherwise."""
    if origin.startswith(CANON_ORIGIN_PREFIX):
        peer_id = origin[len(CANON_ORIGIN_PREFIX):]
    elif origin.startswith(LEDGER_ORIGIN_PREFIX) and origin.count("/") == 3:
        peer_id = origin.rsplit("/", 1)[1]
    else:
        raise ValueError(f"{origin[:80]!r} is not a n3xus canon or ledger log origin")
    key_of_peer_id(peer_id)
    return peer_id


@lru_cache(maxsize=ORIGIN_CACHE_SIZE)
def origin_verifier(origin: str) -> NoteVerifier:
    """The note verifier of a n3xus log: key name = origin, key = the origin's peer id's."""
    return parse_vkey(make_vkey(origin, key_of_peer_id(peer_id_of_origin(origin))))
