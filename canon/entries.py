"""Typed payloads of canon log entries, and signed world commits.

Every canon log entry names a payload block by CID together with the payload's ``type`` and
``version``. :data:`PAYLOAD_SCHEMAS` holds one checker per (type, version); an entry whose pair
is not there is refused, as is a payload that does not match its schema exactly (no missing,
extra or mistyped fields). The schemas, all DAG-CBOR maps:

``world-commit`` v1 -- a signed world commit (:class:`WorldCommit`)::

    {"version": 1, "world": str, "author": bytes(32), "root": CID, "prev": CID | null,
     "time": int, "seq": int, "sig": bytes(64)}

    world   the world's name (world-key alphabet, at most MAX_WORLD_NAME_BYTES)
    author  ed25519 public key of the signer
    root    root CID of the world's Merkle search tree (see world.py)
    prev    CID of the previous commit of this world; null exactly when seq == 0
    time    milliseconds since the Unix epoch, never less than the previous commit's
    seq     0 for the first commit, previous seq + 1 after
    sig     ed25519 over COMMIT_SIGNATURE_TAG || DAG-CBOR(the map without "sig")

``handshake`` v1 -- a completed peer handshake::

    {"peer": str, "addresses": [str], "protocols": [str], "agent": str,
     "direction": "inbound" | "outbound", "time": int}

    peer       the peer's libp2p peer id as text (base58btc or CID form)
    addresses  multiaddrs (text, each starting with "/") the peer was seen at or announced
    protocols  protocol ids the peer announced, with their versions ("/n3xus/canon/1.0.0")
    agent      the peer's agent version string ("n3xus/0.1.0"), may be empty
    time       when the handshake completed, ms since the epoch

``handshake`` v2 -- a completed n3xus hello exchange (specs/protocol-hello.md §7)::

    the fields of v1, and  "hello": CID

    hello      the peer's signed hello message as a DAG-CBOR block (its exact bytes as
               received); it signs both peer ids and both nonces of the connection, so with
               this entry (signed by the log's key) a third party can check that the two
               nodes recognised each other

``agent-decision`` v1 -- one decision of an autonomous agent, for audit::

    {"agent": str, "model": str, "model_cid": CID | null, "prompt": CID, "output": CID,
     "action": str, "policy": [{"rule": str, "verdict": "allow" | "deny" | "flag",
     "reason": str}], "accepted": bool, "time": int}

    agent      the agent's id;  model: model name/quantisation ("smollm2-360m-q8_0")
    model_cid  CID of the weights file when known (raw codec), else null
    prompt     CID of the block holding the exact prompt given to the model
    output     CID of the block holding the model's raw output
    action     what the agent decided to do ("world.set", "reply", "none", ...)
    policy     the policy checks run on the output, in the order run
    accepted   whether the action was carried out; must be false if any verdict is "deny"
    time       when the decision was taken, ms since the epoch

``agent-decision`` v2 -- an IMVU agent's decision, re-checkable offline (specs/imvu.md §6)::

    {"agent": bytes(32), "manifest": CID, "model": bytes, "policy": int, "request": CID,
     "state": CID, "prompt": CID | null, "output": CID | null, "action": CID | null,
     "verdict": "allow" | "refuse" | "escalate", "primitive": str, "reason": str,
     "executed": bool, "result": str, "prompt_tokens": int, "output_tokens": int,
     "inference_us": int, "total_us": int, "time": int}

    Only the fields are checked here; imvu.decision re-checks the decision itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from .cid import CID, cid_of
from .codec import decode, encode
from .errors import CanonDecodeError, LimitExceededError, VerificationError
from .world import BlockSource, validate_key

# Domain separation for world-commit signatures, versioned with the commit format.
COMMIT_SIGNATURE_TAG = b"n3xus/world-commit/v1\x00"
COMMIT_FORMAT_VERSION = 1
ED25519_PUBLIC_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
# World names share the world-key alphabet; short, since every commit carries one.
MAX_WORLD_NAME_BYTES = 128
# Times are ms since the epoch; int64 keeps them portable to every implementation.
MAX_TIME_MS = (1 << 63) - 1
# Commits commit_history walks unless told otherwise: bounds work on a peer's history.
DEFAULT_MAX_HISTORY = 1_000_000
# Peer ids: base58btc of an identity multihash of an ed25519 key is 52 chars, a CIDv1 in
# base32 about 63; 128 leaves room for other key types without admitting junk.
MAX_PEER_ID_CHARS = 128
# Addresses and protocol ids as libp2p identify carries them; more is not a handshake
# worth recording, and the caps bound a log entry's size.
MAX_ADDRESSES = 32
MAX_PROTOCOLS = 64
MAX_NAME_CHARS = 256
MAX_POLICY_RESULTS = 64
MAX_REASON_CHARS = 1024

Value = Any


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise CanonDecodeError(message)


def _require_map(value: Value, fields: set[str], what: str) -> dict[str, Value]:
    _require(isinstance(value, dict), f"{what} must be a map")
    missing, extra = sorted(fields - set(value)), sorted(set(value) - fields)
    _require(not missing, f"{what}: missing fields {missing}")
    _require(not extra, f"{what}: unknown fields {extra}")
    return value


def _require_int(value: Value, what: str, maximum: int = MAX_TIME_MS) -> int:
    _require(type(value) is int and 0 <= value <= maximum, f"{what} must be an integer in [0, {maximum}]")
    return int(value)


def _require_text(value: Value, what: str, maximum: int = MAX_NAME_CHARS, minimum: int = 1) -> str:
    _require(isinstance(value, str) and minimum <= len(value) <= maximum, f"{what} must be a string of {minimum}..{maximum} characters")
    return str(value)


def _require_texts(value: Value, what: str, max_items: int) -> list[str]:
    _require(isinstance(value, list), f"{what} must be a list")
    if len(value) > max_items:
        raise LimitExceededError(f"{what} has {len(value)} items (max {max_items})")
    for item in value:
        _require_text(item, f"an item of {what}")
        _require(item.startswith("/"), f"items of {what} start with '/'")
    return list(value)


def _require_bytes(value: Value, what: str, size: int) -> bytes:
    _require(isinstance(value, bytes) and len(value) == size, f"{what} must be {size} bytes")
    return bytes(value)


def _require_link(value: Value, what: str) -> CID:
    _require(isinstance(value, CID), f"{what} must be a CID")
    return value


def _optional_link(value: Value, what: str) -> CID | None:
    _require(value is None or isinstance(value, CID), f"{what} must be a CID or null")
    return value


def validate_world_name(name: str) -> str:
    if not isinstance(name, str) or len(name) > MAX_WORLD_NAME_BYTES:
        raise CanonDecodeError(f"world name must be a string of at most {MAX_WORLD_NAME_BYTES} bytes")
    try:
        validate_key(name)
    except ValueError as exc:
        raise CanonDecodeError(f"bad world name: {exc}") from exc
    return name


@dataclass(frozen=True)
class WorldCommit:
    """A signed statement by ``author`` that world ``world`` has root ``root``."""

    world: str
    author: bytes
    root: CID
    prev: CID | None
    time: int
    seq: int
    signature: bytes = field(repr=False)

    def unsigned_map(self) -> dict[str, Value]:
        return {
            "version": COMMIT_FORMAT_VERSION, "world": self.world, "author": self.author,
            "root": self.root, "prev": self.prev, "time": self.time, "seq": self.seq,
        }

    def signing_bytes(self) -> bytes:
        return COMMIT_SIGNATURE_TAG + encode(self.unsigned_map())

    def to_block(self) -> bytes:
        return encode({**self.unsigned_map(), "sig": self.signature})

    @property
    def cid(self) -> CID:
        return cid_of(self.to_block())

    @classmethod
    def from_block(cls, data: bytes) -> WorldCommit:
        """Parse a commit block strictly (fields and types; not the signature)."""
        raw = _require_map(decode(data), {"version", "world", "author", "root", "prev", "time", "seq", "sig"}, "world commit")
        _require(raw["version"] == COMMIT_FORMAT_VERSION and type(raw["version"]) is int, "unknown world commit version")
        commit = cls(
            world=validate_world_name(raw["world"]),
            author=_require_bytes(raw["author"], "commit author", ED25519_PUBLIC_KEY_BYTES),
            root=_require_link(raw["root"], "commit root"),
            prev=_optional_link(raw["prev"], "commit prev"),
            time=_require_int(raw["time"], "commit time"),
            seq=_require_int(raw["seq"], "commit seq"),
            signature=_require_bytes(raw["sig"], "commit signature", ED25519_SIGNATURE_BYTES),
        )
        _require((commit.seq == 0) == (commit.prev is None), "commit prev must be null exactly when seq is 0")
        if commit.to_block() != data:
            raise CanonDecodeError("world commit block is not canonical")
        return commit

    def verify(self) -> None:
        """Raise VerificationError unless ``signature`` is the author's over this commit."""
        _verify_ed25519(self.author, self.signing_bytes(), self.signature, "world commit")


def _verify_ed25519(public_key: bytes, message: bytes, signature: bytes, what: str) -> None:
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError) as exc:
        raise VerificationError(f"{what}: bad signature") from exc


def sign_commit(
    key: SigningKey, *, world: str, root: CID, time: int, previous: WorldCommit | None = None
) -> WorldCommit:
    """Sign the next commit of ``world``: the first if ``previous`` is None, else its successor."""
    validate_world_name(world)
    _require_int(time, "commit time")
    if previous is not None:
        if previous.world != world:
            raise ValueError(f"previous commit is of world {previous.world!r}, not {world!r}")
        if time < previous.time:
            raise ValueError("commit time goes backwards")
    unsigned = WorldCommit(
        world=world, author=bytes(key.verify_key), root=root,
        prev=None if previous is None else previous.cid,
        time=time, seq=0 if previous is None else previous.seq + 1, signature=b"",
    )
    signature = key.sign(unsigned.signing_bytes()).signature
    return WorldCommit(**{**unsigned.__dict__, "signature": signature})


def load_commit(store: BlockSource, cid: CID) -> WorldCommit:
    """Fetch, parse and verify one commit."""
    commit = WorldCommit.from_block(store.get(cid))
    commit.verify()
    return commit


def commit_history(store: BlockSource, head: CID, *, max_commits: int = DEFAULT_MAX_HISTORY) -> Iterator[WorldCommit]:
    """Yield the commits from ``head`` back to the first, verifying each signature and each
    link (same world, seq down by one, time not increasing backwards, chain ends at seq 0)."""
    later: WorldCommit | None = None
    cid: CID | None = head
    for _ in range(max_commits):
        if cid is None:
            return
        commit = load_commit(store, cid)
        if later is not None and (commit.world != later.world or commit.seq + 1 != later.seq or commit.time > later.time):
            raise VerificationError(f"world commit {cid} does not precede its successor")
        yield commit
        later, cid = commit, commit.prev
    if cid is not None:
        raise LimitExceededError(f"world history longer than {max_commits} commits")


# -- payloads of the canon log ------------------------------------------------------------


def _check_world_commit(data: bytes) -> Value:
    commit = WorldCommit.from_block(data)
    commit.verify()
    return commit


def _check_handshake(data: bytes) -> Value:
    raw = _require_map(decode(data), {"peer", "addresses", "protocols", "agent", "direction", "time"}, "handshake")
    peer = _require_text(raw["peer"], "handshake peer", MAX_PEER_ID_CHARS)
    _require(peer.isascii() and peer.isalnum(), "handshake peer id must be base58/base32 text")
    _require_texts(raw["addresses"], "handshake addresses", MAX_ADDRESSES)
    _require_texts(raw["protocols"], "handshake protocols", MAX_PROTOCOLS)
    _require_text(raw["agent"], "handshake agent", minimum=0)
    _require(raw["direction"] in ("inbound", "outbound"), "handshake direction must be inbound or outbound")
    _require_int(raw["time"], "handshake time")
    return raw


def _check_handshake_v2(data: bytes) -> Value:
    raw = decode(data)
    _require(isinstance(raw, dict) and "hello" in raw, "handshake v2 needs a 'hello' link")
    hello = _require_link(raw["hello"], "handshake hello")
    _require(hello.codec_name == "dag-cbor", "handshake hello must be a dag-cbor block")
    _check_handshake(encode({k: v for k, v in raw.items() if k != "hello"}))
    return raw


def _check_agent_decision(data: bytes) -> Value:
    fields = {"agent", "model", "model_cid", "prompt", "output", "action", "policy", "accepted", "time"}
    raw = _require_map(decode(data), fields, "agent decision")
    _require_text(raw["agent"], "agent id", MAX_PEER_ID_CHARS)
    _require_text(raw["model"], "agent model")
    _optional_link(raw["model_cid"], "model_cid")
    _require_link(raw["prompt"], "prompt")
    _require_link(raw["output"], "output")
    _require_text(raw["action"], "agent action")
    _require(isinstance(raw["policy"], list), "policy must be a list")
    if len(raw["policy"]) > MAX_POLICY_RESULTS:
        raise LimitExceededError(f"{len(raw['policy'])} policy results (max {MAX_POLICY_RESULTS})")
    denied = False
    for result in raw["policy"]:
        _require_map(result, {"rule", "verdict", "reason"}, "policy result")
        _require_text(result["rule"], "policy rule")
        _require(result["verdict"] in ("allow", "deny", "flag"), "policy verdict must be allow, deny or flag")
        _require_text(result["reason"], "policy reason", MAX_REASON_CHARS, minimum=0)
        denied = denied or result["verdict"] == "deny"
    _require(type(raw["accepted"]) is bool, "accepted must be a boolean")
    _require(not (denied and raw["accepted"]), "a decision denied by policy cannot be accepted")
    _require_int(raw["time"], "decision time")
    return raw


# agent-decision v2 (specs/imvu.md §6): texts the record carries.
DECISION_VERDICTS = ("allow", "refuse", "escalate")
MAX_PRIMITIVE_CHARS = 32
MAX_RESULT_CHARS = 256
# A binary CID of a model file (CIDv1 raw, a 32-byte digest) is 36 bytes.
MAX_MODEL_CID_BYTES = 64
_DECISION_V2_FIELDS = {
    "agent", "manifest", "model", "policy", "request", "state", "prompt", "output", "action",
    "verdict", "primitive", "reason", "executed", "result", "prompt_tokens", "output_tokens",
    "inference_us", "total_us", "time",
}


def _check_agent_decision_v2(data: bytes) -> Value:
    raw = _require_map(decode(data), _DECISION_V2_FIELDS, "agent decision")
    _require_bytes(raw["agent"], "agent key", ED25519_PUBLIC_KEY_BYTES)
    _require(isinstance(raw["model"], bytes) and 0 < len(raw["model"]) <= MAX_MODEL_CID_BYTES,
             "model must be the bytes of a binary CID")
    for name in ("manifest", "request", "state"):
        _require_link(raw[name], name)
    for name in ("prompt", "output", "action"):
        _optional_link(raw[name], name)
    _require_int(raw["policy"], "policy version")
    _require(raw["policy"] >= 1, "policy version starts at 1")
    _require(raw["verdict"] in DECISION_VERDICTS, "verdict must be allow, refuse or escalate")
    _require_text(raw["primitive"], "primitive", MAX_PRIMITIVE_CHARS, minimum=0)
    _require_text(raw["reason"], "reason", MAX_REASON_CHARS, minimum=0)
    _require(type(raw["executed"]) is bool, "executed must be a boolean")
    _require_text(raw["result"], "result", MAX_RESULT_CHARS, minimum=0)
    for name in ("prompt_tokens", "output_tokens", "inference_us", "total_us", "time"):
        _require_int(raw[name], name)
    _require((raw["prompt"] is None) == (raw["output"] is None), "prompt and output are null together")
    _require(raw["action"] is not None or raw["verdict"] == "refuse", "a decision without an action is a refusal")
    _require(raw["executed"] is False or raw["verdict"] == "allow", "only an allowed action is executed")
    _require((raw["verdict"] == "allow") == (raw["primitive"] in ("", "approval")),
             "an allowed decision names no primitive (or approval); others name theirs")
    return raw


# recording v1 (specs/live.md §4): a live performance's manifest, logged by the node for
# the performer. The manifest block itself is the payload.
RECORDING_TYPE = "n3xus/recording/v1"
_RECORDING_FIELDS = {"type", "room", "started", "codec", "container", "segments"}
_SEGMENT_FIELDS = {"cid", "start_ms", "duration_ms", "frames", "width", "height", "bytes"}
# A segment entry is ~70 bytes, so a 1 MiB manifest block holds fewer than this many.
MAX_RECORDING_SEGMENTS = 16_384
MAX_ROOM_NAME_CHARS = 63


def _check_recording(data: bytes) -> Value:
    raw = _require_map(decode(data), _RECORDING_FIELDS, "recording")
    _require(raw["type"] == RECORDING_TYPE, f"recording type must be {RECORDING_TYPE!r}")
    _require_text(raw["room"], "recording room", MAX_ROOM_NAME_CHARS)
    _require_int(raw["started"], "recording start")
    _require(raw["codec"] == "VP8" and raw["container"] == "webm",
             "a recording is VP8 in WebM")
    segments = raw["segments"]
    _require(isinstance(segments, list), "recording segments must be a list")
    if len(segments) > MAX_RECORDING_SEGMENTS:
        raise LimitExceededError(f"{len(segments)} segments (max {MAX_RECORDING_SEGMENTS})")
    for segment in segments:
        fields = _require_map(segment, _SEGMENT_FIELDS, "recording segment")
        _require_link(fields["cid"], "segment cid")
        for name in sorted(_SEGMENT_FIELDS - {"cid"}):
            _require_int(fields[name], f"segment {name}")
    return raw


# (type, version) -> checker taking the payload block's bytes, returning the parsed payload.
# Versions are never reused: a changed schema gets a new version and a new checker.
PAYLOAD_SCHEMAS: Mapping[tuple[str, int], Callable[[bytes], Value]] = {
    ("world-commit", 1): _check_world_commit,
    ("handshake", 1): _check_handshake,
    ("handshake", 2): _check_handshake_v2,
    ("agent-decision", 1): _check_agent_decision,
    ("agent-decision", 2): _check_agent_decision_v2,
    ("recording", 1): _check_recording,
}


def check_payload(entry_type: str, version: int, data: bytes) -> Value:
    """Parse ``data`` as a payload of (``entry_type``, ``version``); raise CanonDecodeError
    (unknown pair, schema mismatch) or VerificationError (a commit's bad signature)."""
    checker = PAYLOAD_SCHEMAS.get((entry_type, version))
    if checker is None:
        raise CanonDecodeError(f"unknown log entry type {entry_type!r} version {version!r}")
    return checker(data)
