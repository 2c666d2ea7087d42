"""The vectors of specs/vectors/protocol-ledger-gossip.json: the data of messages on the
gossipsub topic ``/n3xus/ledger/<network id>`` (specs/protocol-ledger-sync.md §1), their
message ids, and data a receiver must refuse as ``malformed``. ``python
tests/ledger_gossip_vectors.py --write`` regenerates the file (deterministic: fixed keys and
times); ``tests/test_federation_ledger_wire.py`` checks it.

A vector too large to list as hex (the limits are 256 entries and 256 KiB) is given as
``runs``: ``[count, size, fill byte]`` triples, the entries being ``count`` entries of
``size`` bytes ``fill`` each, in order; the message is ``{"t": "gossip", "e": entries}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from blake3 import blake3
from nacl.signing import SigningKey

from n3xus.canon.codec import encode
from n3xus.ledger.genesis import Genesis
from n3xus.ledger.tx import AccountChain, Op
from n3xus.protocol.sync.messages import (
    MAX_ENTRY_BYTES,
    MAX_GOSSIP_BYTES,
    MAX_GOSSIP_ENTRIES,
    Gossip,
    encode_message,
)

FILE = "protocol-ledger-gossip.json"
VECTORS_DIR = Path(__file__).resolve().parents[1] / "specs" / "vectors"
MESSAGE_ID_BYTES = 20


def _transfers() -> tuple[Genesis, list[bytes]]:
    issuer = SigningKey(b"\x31" * 32)
    genesis = Genesis.create("vectors", [bytes(issuer.verify_key)], 10**9,
                             bytes(SigningKey(b"\x32" * 32).verify_key))
    funding = AccountChain(issuer, genesis.cid)
    return genesis, [funding.sign(Op.ISSUE, {"to": bytes([n]) * 32, "amount": 10 + n},
                                  time_ms=1_700_000_000_000 + n) for n in range(3)]


def runs_to_entries(runs: list[list[int]]) -> list[bytes]:
    return [bytes([fill]) * size for count, size, fill in runs for _ in range(count)]


def runs_data(runs: list[list[int]]) -> bytes:
    return encode({"t": "gossip", "e": runs_to_entries(runs)})


def vectors() -> dict[str, Any]:
    genesis, txs = _transfers()
    valid = []
    for name, entries in (("one transaction", txs[:1]), ("three transactions", txs)):
        data = encode_message(Gossip(tuple(entries)))
        valid.append({"name": name, "hex": data.hex(),
                      "message id": blake3(data).digest()[:MESSAGE_ID_BYTES].hex()})
    at_limit = [[[MAX_GOSSIP_ENTRIES, 1, 0xAB]],
                [[MAX_GOSSIP_BYTES // MAX_ENTRY_BYTES, MAX_ENTRY_BYTES, 0xCD],
                 [1, MAX_GOSSIP_BYTES % MAX_ENTRY_BYTES, 0xEF]]]
    for runs, name in zip(at_limit, (f"{MAX_GOSSIP_ENTRIES} entries (the most)",
                                     f"{MAX_GOSSIP_BYTES} entry bytes (the most)"), strict=True):
        valid.append({"name": name, "runs": runs,
                      "message id": blake3(runs_data(runs)).digest()[:MESSAGE_ID_BYTES].hex()})
    one = txs[0]
    invalid: list[dict[str, Any]] = [
        {"name": "no entries", "hex": encode({"t": "gossip", "e": []}).hex()},
        {"name": "an empty entry", "hex": encode({"t": "gossip", "e": [one, b""]}).hex()},
        {"name": "an entry that is not bytes", "hex": encode({"t": "gossip", "e": [1]}).hex()},
        {"name": "an extra key", "hex": encode({"t": "gossip", "e": [one], "x": 0}).hex()},
        {"name": "entries not a list", "hex": encode({"t": "gossip", "e": one}).hex()},
        {"name": "not canonical DAG-CBOR (indefinite-length list)",
         "hex": "a261659f" + encode(one).hex() + "ff" + "6174" + encode("gossip").hex()},
        {"name": f"{MAX_GOSSIP_ENTRIES + 1} entries",
         "runs": [[MAX_GOSSIP_ENTRIES + 1, 1, 0xAB]]},
        {"name": f"{MAX_GOSSIP_BYTES + 1} entry bytes",
         "runs": [[MAX_GOSSIP_BYTES // MAX_ENTRY_BYTES, MAX_ENTRY_BYTES, 0xCD],
                  [1, MAX_GOSSIP_BYTES % MAX_ENTRY_BYTES + 1, 0xEF]]},
        {"name": f"an entry of {MAX_ENTRY_BYTES + 1} bytes",
         "runs": [[1, MAX_ENTRY_BYTES + 1, 0x01]]},
    ]
    for vector in invalid:
        vector["code"] = "malformed"
    return {"description": "data of gossip messages on /n3xus/ledger/<network id> "
                           "(specs/protocol-ledger-sync.md §1); message id = first 20 bytes "
                           "of BLAKE3(data)",
            "network": str(genesis.cid), "topic": f"/n3xus/ledger/{genesis.cid}",
            "valid": valid, "invalid": invalid}


def render() -> str:
    return json.dumps(vectors(), indent=1) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        (VECTORS_DIR / FILE).write_text(render(), encoding="utf-8")
    else:
        sys.stdout.write(render())
