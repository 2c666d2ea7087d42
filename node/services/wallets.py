"""Wallet keys in the data dir, and the network's genesis file.

A wallet is an ed25519 account key in ``wallets/<name>.key`` (mode 0600, the same
one-line format as the node identity, with its own tag). Transactions are signed
by the CLI with these keys and submitted to the node as signed envelopes: the node
API never needs a wallet's secret, and a browser wallet (a later issue) submits the
same envelopes. The wallet named ``node`` is the node's own identity key (the issuer
and platform account of a development network).

``genesis.cbor`` holds the network's genesis block. ``node init`` creates a
development network whose only issuer and platform is the node's key, unless
``--genesis FILE`` names the genesis of an existing network to join.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from nacl.signing import SigningKey

from ..config import SECRET_FILE_MODE, DataDir, _create_secret_file, _read_secret_file
from ..errors import ConfigError

if TYPE_CHECKING:  # the ledger package is imported only where a genesis is read or made
    from n3xus.ledger.genesis import Genesis

WALLET_DIR = "wallets"
WALLET_TAG = "n3xus-wallet-v1 ed25519 "
NODE_WALLET = "node"
GENESIS_FILE = "genesis.cbor"
# Wallet names become file names: keep them to a safe, portable alphabet.
_WALLET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# The development network's supply cap: 10^15 smallest units (a billion coins of a
# million units each) is far from overflow and ample for testing.
DEV_SUPPLY_CAP = 10**15
DEV_NETWORK_PREFIX = "n3xus-dev-"


def _wallet_path(dd: DataDir, name: str) -> Path:
    if not _WALLET_NAME.fullmatch(name) or name == NODE_WALLET:
        raise ConfigError(f"invalid wallet name {name!r}: use 1-64 of A-Z a-z 0-9 _ . - "
                          f"(and not {NODE_WALLET!r}, the node's own key)")
    return dd.path / WALLET_DIR / f"{name}.key"


def create_wallet(dd: DataDir, name: str) -> bytes:
    """Create wallet ``name``; returns its account (public key). Refuses to overwrite."""
    path = _wallet_path(dd, name)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    seed = secrets.token_bytes(32)
    if not _create_secret_file(path, WALLET_TAG + base64.b64encode(seed).decode() + "\n"):
        raise ConfigError(f"wallet {name!r} already exists ({path})")
    return bytes(SigningKey(seed).verify_key)


def wallet_key(dd: DataDir, name: str) -> SigningKey:
    if name == NODE_WALLET:
        return SigningKey(dd.read_identity_seed())
    path = _wallet_path(dd, name)
    if not path.exists():
        raise ConfigError(f"no wallet named {name!r} (create it with `n3xus wallet new {name}`)")
    line = _read_secret_file(path, "wallet key").strip("\n")
    if not line.startswith(WALLET_TAG):
        raise ConfigError(f"wallet key {path} is corrupt")
    try:
        seed = base64.b64decode(line[len(WALLET_TAG):], validate=True)
    except ValueError:
        raise ConfigError(f"wallet key {path} is corrupt (bad base64)") from None
    if len(seed) != 32:
        raise ConfigError(f"wallet key {path} is corrupt ({len(seed)} bytes)")
    return SigningKey(seed)


def list_wallets(dd: DataDir) -> dict[str, bytes]:
    """name -> account for every wallet, the node's own first."""
    out = {NODE_WALLET: bytes(SigningKey(dd.read_identity_seed()).verify_key)}
    folder = dd.path / WALLET_DIR
    if folder.is_dir():
        for path in sorted(folder.glob("*.key")):
            out[path.stem] = bytes(wallet_key(dd, path.stem).verify_key)
    return out


def parse_account(dd: DataDir | None, text: str) -> bytes:
    """A 64-hex-digit account key, or the name of a local wallet."""
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    if dd is not None:
        return bytes(wallet_key(dd, text).verify_key)
    raise ConfigError(f"{text!r} is neither a 64-hex-digit account nor a wallet name")


# -- genesis ---------------------------------------------------------------------------
def genesis_path(dd: DataDir) -> Path:
    return dd.path / GENESIS_FILE


def ensure_genesis(dd: DataDir, join: Path | None = None) -> tuple[Genesis, bool]:
    """The data dir's genesis, creating it if missing: a copy of ``join`` (validated)
    or a development network of this node. Returns (genesis, created)."""
    path = genesis_path(dd)
    if path.exists():
        existing = load_genesis(dd)
        if join is not None and bytes(_read_genesis(join)) != bytes(existing):
            raise ConfigError(f"{path} already holds another network's genesis "
                              f"({existing.cid}); use a fresh data dir to join {join}")
        return existing, False
    if join is not None:
        genesis = _read_genesis(join)
    else:
        from n3xus.ledger.genesis import Genesis

        account = bytes(SigningKey(dd.read_identity_seed()).verify_key)
        genesis = Genesis.create(DEV_NETWORK_PREFIX + account.hex()[:16], [account],
                                 DEV_SUPPLY_CAP, account)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(bytes(genesis))
    os.replace(tmp, path)
    return genesis, True


def _read_genesis(path: Path) -> Genesis:
    from n3xus.ledger.errors import GenesisError
    from n3xus.ledger.genesis import Genesis

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read genesis file {path}: {exc.strerror}") from exc
    try:
        return Genesis.from_bytes(data)
    except GenesisError as exc:
        raise ConfigError(f"genesis file {path} is invalid: {exc}") from exc


def load_genesis(dd: DataDir) -> Genesis:
    path = genesis_path(dd)
    if not path.exists():
        raise ConfigError(f"{path} is missing; run `n3xus node init`")
    return _read_genesis(path)


__all__ = ["SECRET_FILE_MODE", "create_wallet", "ensure_genesis", "list_wallets",
           "load_genesis", "parse_account", "wallet_key"]
