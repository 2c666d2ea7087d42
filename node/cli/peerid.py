"""The node's libp2p peer ID from its ed25519 seed, without importing libp2p.

Importing py-libp2p takes over a second; ``n3xus id`` and ``n3xus node init`` need
only the ID, which the libp2p peer-ID spec defines exactly: the public key in its
protobuf envelope (``PublicKey { KeyType Type = 1; bytes Data = 2; }`` with
``Ed25519 = 1``), wrapped in an *identity* multihash (it is at most 42 bytes long),
written in base58btc. ``tests/test_cli_peerid.py`` checks it equals libp2p's.
"""

from __future__ import annotations

_PROTOBUF_ED25519_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])  # Type = Ed25519, Data = 32 bytes
_IDENTITY_MULTIHASH = 0x00
_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58btc(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rest = divmod(number, 58)
        digits.append(_BASE58_ALPHABET[rest])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def public_key_of(seed: bytes) -> bytes:
    from nacl.signing import SigningKey  # only when the key must be derived here

    return bytes(SigningKey(seed).verify_key)


def peer_id_from_public_key(public_key: bytes) -> str:
    if len(public_key) != 32:
        raise ValueError("an ed25519 public key has 32 bytes")
    envelope = _PROTOBUF_ED25519_PREFIX + public_key
    return base58btc(bytes([_IDENTITY_MULTIHASH, len(envelope)]) + envelope)


def peer_id_from_seed(seed: bytes) -> str:
    return peer_id_from_public_key(public_key_of(seed))
