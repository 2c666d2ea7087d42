"""The protocol test vectors of specs/vectors/*.json: how they are made, and how a frame is
checked against one. ``python tests/protocol_vectors.py --write`` regenerates the files
(deterministic: fixed keys, nonces and times); ``tests/test_protocol_vectors.py`` checks that
the implementation still produces exactly these bytes and decodes them to these values.

JSON form of DAG-CBOR values (as DAG-JSON): bytes are ``{"/": {"bytes": "<base64, no
padding>"}}``, links ``{"/": "<CID text>"}``; everything else is plain JSON.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from protocol_support import (  # noqa: E402
    NETWORK,
    NOW_MS,
    config,
    key,
    pair,
    peer,
    run,
    signed_checkpoint,
)

from n3xus.canon import merkle  # noqa: E402
from n3xus.canon.cid import CID, cid_of  # noqa: E402
from n3xus.canon.codec import decode, encode  # noqa: E402
from n3xus.protocol.blocks import (  # noqa: E402
    MAX_CONTROL_FRAME_BYTES,
    encode_blocks,
    encode_cid_list,
)
from n3xus.protocol.codes import ErrorCode  # noqa: E402
from n3xus.protocol.framing import (  # noqa: E402
    FrameDecoder,
    encode_error,
    encode_frame,
    encode_message,
)
from n3xus.protocol.hello import HELLO_SIGNATURE_TAG, MAX_HELLO_FRAME_BYTES  # noqa: E402
from n3xus.protocol.identity import canon_origin  # noqa: E402
from n3xus.protocol.witness import SplitViewProof, fork_path_from_proof  # noqa: E402

VECTORS_DIR = Path(__file__).resolve().parents[1] / "specs" / "vectors"
NONCES = (bytes([0x11]) * 32, bytes([0x22]) * 32)


def to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"/": {"bytes": base64.b64encode(value).decode().rstrip("=")}}
    if isinstance(value, CID):
        return {"/": str(value)}
    if isinstance(value, list):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"/"}:
        inner = value["/"]
        if isinstance(inner, str):
            return CID(inner)
        encoded = inner["bytes"]
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    if isinstance(value, list):
        return [from_json(item) for item in value]
    if isinstance(value, dict):
        return {k: from_json(v) for k, v in value.items()}
    return value


def split_frames(data: bytes, limit: int) -> list[bytes]:
    decoder = FrameDecoder(limit)
    decoder.receive_data(data, 0.0)
    decoder.receive_eof()
    bodies = []
    while (body := decoder.next_frame()) is not None:
        bodies.append(body)
    return bodies


def _frame_vector(name: str, data: bytes, limit: int, note: str = "") -> dict[str, Any]:
    """A valid vector: the bytes, and each frame's decoded value (payload frames as bytes)."""
    frames = []
    for body in split_frames(data, limit):
        try:
            frames.append({"message": to_json(decode(body))})
        except ValueError:
            frames.append({"payload": to_json(body)})
    return {"name": name, "hex": data.hex(), "frames": frames, **({"note": note} if note else {})}


def framing_vectors() -> dict[str, Any]:
    error = encode_error(ErrorCode.WRONG_NETWORK, "network bafyr4i... is not accepted")
    body_200 = encode({"type": "x", "pad": "a" * 186})
    return {
        "description": "Frames: varint(length) || body; message bodies are canonical DAG-CBOR maps "
                       "with a text 'type' (specs/protocol.md). 'limit' is the frame limit the "
                       "decoder was given.",
        "valid": [
            _frame_vector("error message", error, 1024),
            _frame_vector("a 200-byte body: two-byte prefix c8 01", encode_frame(body_200, 1024), 1024),
            _frame_vector("two frames back to back", error + encode_frame(body_200, 1024), 1024),
        ],
        "invalid": [
            {"name": "non-minimal prefix (80 00)", "hex": "8000", "limit": 1024, "code": "malformed"},
            {"name": "prefix over the limit, refused before the body", "hex": "810801", "limit": 1024,
             "code": "frame-too-large"},
            {"name": "prefix longer than 9 bytes", "hex": "80" * 9 + "01", "limit": 2**63 - 1,
             "code": "malformed"},
            {"name": "stream ends inside a frame", "hex": error[:-3].hex(), "limit": 1024,
             "code": "truncated"},
            {"name": "body is not canonical (keys out of order: 'type' before 'a')",
             "hex": encode_frame(bytes.fromhex("a264747970656178616101"), 1024).hex(),
             "limit": 1024, "code": "malformed"},
            {"name": "trailing bytes after the body's value",
             "hex": encode_frame(encode({"type": "x"}) + b"\x00", 1024).hex(), "limit": 1024,
             "code": "malformed"},
            {"name": "body is an array, not a map", "hex": encode_frame(encode(["error"]), 1024).hex(),
             "limit": 1024, "code": "malformed"},
            {"name": "a map without a type", "hex": encode_frame(encode({"code": 1}), 1024).hex(),
             "limit": 1024, "code": "malformed"},
        ],
    }


def hello_vectors() -> dict[str, Any]:
    initiator, responder = config(1), config(2)
    a, b = pair(initiator, responder, nonces=NONCES)
    frames = run(a, b)
    assert a.sent_hello is not None and b.sent_hello is not None
    tampered = decode(split_frames(frames[2], MAX_HELLO_FRAME_BYTES)[0])
    tampered["agent"] = "not what was signed"
    return {
        "description": "A complete /n3xus/hello/1.0.0 exchange between two keys (ed25519 seeds "
                       "0x01*32 initiator, 0x02*32 responder) at wall time time_ms with both "
                       "verifiers' clocks at time_ms (specs/protocol-hello.md).",
        "initiator": {"seed": (bytes([1]) * 32).hex(), "public_key": bytes(key(1).verify_key).hex(),
                      "peer_id": peer(1), "nonce": NONCES[0].hex()},
        "responder": {"seed": (bytes([2]) * 32).hex(), "public_key": bytes(key(2).verify_key).hex(),
                      "peer_id": peer(2), "nonce": NONCES[1].hex()},
        "network": str(NETWORK),
        "time_ms": NOW_MS,
        "signature_tag_hex": HELLO_SIGNATURE_TAG.hex(),
        "responder_signing_input_hex": b.sent_hello.signing_bytes().hex(),
        "initiator_signing_input_hex": a.sent_hello.signing_bytes().hex(),
        "exchange": [
            _frame_vector("1. initiator -> responder: hello-start", frames[0], MAX_HELLO_FRAME_BYTES),
            _frame_vector("2. responder -> initiator: hello", frames[1], MAX_HELLO_FRAME_BYTES),
            _frame_vector("3. initiator -> responder: hello", frames[2], MAX_HELLO_FRAME_BYTES),
            _frame_vector("4. responder -> initiator: hello-accept", frames[3], MAX_HELLO_FRAME_BYTES),
        ],
        "invalid": [
            {"name": "step 3 with the agent changed after signing",
             "hex": encode_message(tampered, MAX_HELLO_FRAME_BYTES).hex(), "code": "bad-signature",
             "note": "fed to the responder after step 1, in place of step 3"},
            {"name": "step 3 replayed on a connection with other nonces", "hex": frames[2].hex(),
             "code": "replayed",
             "note": "fed to a responder whose connection has nonces 0x33*32 (initiator) and 0x44*32"},
        ],
    }


def blocks_vectors() -> dict[str, Any]:
    hello, world = b"hello", b"world"
    c1, c2 = cid_of(hello, "raw"), cid_of(world, "raw")
    missing = cid_of(b"missing", "raw")
    batch = encode_blocks([(c1, hello), (c2, world)])
    bad_payload = encode_message({"type": "blocks", "cids": [c1], "sizes": [5]}, 1024) + encode_frame(b"HELLO", 16)
    return {
        "description": "/n3xus/blocks/1.0.0 messages (specs/protocol-blocks.md). The blocks are "
                       "the raw bytes 'hello' and 'world' under their raw BLAKE3 CIDs.",
        "valid": [
            _frame_vector("want-block", encode_cid_list("want-block", [c1, c2, missing]), MAX_CONTROL_FRAME_BYTES),
            _frame_vector("want-have", encode_cid_list("want-have", [c1]), MAX_CONTROL_FRAME_BYTES),
            _frame_vector("blocks message and its payload frame", batch, MAX_CONTROL_FRAME_BYTES,
                          "the second frame is the raw payload 'helloworld' (sizes 5 and 5)"),
            _frame_vector("dont-have", encode_cid_list("dont-have", [missing]), MAX_CONTROL_FRAME_BYTES),
            _frame_vector("have", encode_cid_list("have", [c1]), MAX_CONTROL_FRAME_BYTES),
            _frame_vector("cancel", encode_cid_list("cancel", [c2]), MAX_CONTROL_FRAME_BYTES),
        ],
        "invalid": [
            {"name": "a block whose bytes do not hash to its CID", "hex": bad_payload.hex(),
             "wanted": [str(c1)], "code": "block-mismatch"},
            {"name": "payload longer than its sizes", "hex": split_and_join(batch, extra=b"!").hex(), "wanted": [str(c1), str(c2)],
             "code": "frame-too-large"},
            {"name": "a block nobody wanted", "hex": batch.hex(), "wanted": [str(c1)],
             "code": "unexpected-block"},
            {"name": "an empty CID list", "hex": encode_message({"type": "dont-have", "cids": []}, 1024).hex(),
             "wanted": [], "code": "malformed"},
            {"name": "an unknown message type", "hex": encode_message({"type": "gimme", "cids": [c1]}, 1024).hex(),
             "wanted": [], "code": "unsupported"},
        ],
    }


def split_and_join(batch: bytes, extra: bytes) -> bytes:
    """The batch with ``extra`` appended to its payload frame (and its prefix adjusted)."""
    header, payload = split_frames(batch, MAX_CONTROL_FRAME_BYTES)
    return encode_frame(header, MAX_CONTROL_FRAME_BYTES) + encode_frame(payload + extra, 1 << 20)


def split_view_vectors() -> dict[str, Any]:
    same = SplitViewProof(signed_checkpoint(1, 5), signed_checkpoint(1, 5, salt=b"fork"))
    forked = merkle.MerkleTree(merkle.BLAKE3, [merkle.BLAKE3.leaf_hash(b"leaf %d" % i + b"fork")
                                               for i in range(9)])
    path = fork_path_from_proof(4, forked.consistency_proof(4, 9), forked.root(4))
    inconsistent = SplitViewProof(signed_checkpoint(1, 4), signed_checkpoint(1, 9, salt=b"fork"), tuple(path))
    return {
        "description": "Split-view proofs (n3xus/split-view/v1, specs/protocol-hello.md §6) of the "
                       "canon log of the key with seed 0x01*32. Leaves are BLAKE3 leaf hashes of "
                       "b'leaf <i>' (first history) or b'leaf <i>fork' (second).",
        "origin": canon_origin(peer(1)),
        "valid": [
            {"name": "same size, two roots", "kind": "same-size", "hex": same.to_bytes().hex()},
            {"name": "size 4 then size 9 of another history", "kind": "inconsistent",
             "hex": inconsistent.to_bytes().hex()},
        ],
        "invalid": [
            {"name": "one checkpoint twice", "hex": SplitViewProof(same.first, same.first).to_bytes().hex()},
            {"name": "an honest pair with its real consistency proof",
             "hex": SplitViewProof(signed_checkpoint(1, 4), signed_checkpoint(1, 9), tuple(
                 fork_path_from_proof(4, merkle.MerkleTree(merkle.BLAKE3, [
                     merkle.BLAKE3.leaf_hash(b"leaf %d" % i) for i in range(9)]).consistency_proof(4, 9),
                     merkle.MerkleTree(merkle.BLAKE3, [merkle.BLAKE3.leaf_hash(b"leaf %d" % i)
                                                       for i in range(4)]).root()))).to_bytes().hex()},
            {"name": "checkpoints of two logs",
             "hex": SplitViewProof(signed_checkpoint(1, 5), signed_checkpoint(2, 5)).to_bytes().hex()},
        ],
    }


ALL = {
    "protocol-framing.json": framing_vectors,
    "protocol-hello.json": hello_vectors,
    "protocol-blocks.json": blocks_vectors,
    "protocol-split-view.json": split_view_vectors,
}


def render(name: str) -> str:
    return json.dumps(ALL[name](), indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/protocol_vectors.py --write")
    VECTORS_DIR.mkdir(parents=True, exist_ok=True)
    for filename in ALL:
        (VECTORS_DIR / filename).write_text(render(filename), encoding="utf-8")
        print("wrote", VECTORS_DIR / filename)
