"""Agent manifests: what an agent is, signed by its creator (specs/imvu.md §2).

A manifest is one strict DAG-CBOR block; its CID names that version of the agent. A change
is a new version whose ``previous`` links the version it replaces (the registry keeps the
history). The creator signs ``MANIFEST_SIGNATURE_TAG || DAG-CBOR(the map without "sig")``.

The model is pinned by the CID of its GGUF file: CIDv1, raw codec, BLAKE3-256 of the whole
file. It is carried as the CID's *bytes*, not as a link: the file is no block (it is far
over the 1 MiB block limit) and a CAR export must not try to follow it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import blake3
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import encode
from n3xus.canon.errors import CanonError

from ._schema import MAX_U63, Checker
from .actions import MAX_AMOUNT, NAME_PATTERN, WORLD_KEY_PATTERN, Kind, Tool
from .errors import ManifestError

MANIFEST_TYPE: Final = "n3xus/imvu-manifest/v1"
MANIFEST_SIGNATURE_TAG: Final = b"n3xus/imvu-manifest/v1\x00"
KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
# A manifest is a few KiB of persona and rules; 64 KiB bounds what decoding one costs.
MAX_MANIFEST_BYTES: Final = 64 * 1024
AGENT_NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
MAX_AGENT_NAME_CHARS: Final = 64
# The persona goes into every prompt; 2000 characters is ~500 tokens, a quarter of the
# default 2048-token context.
MAX_PERSONA_CHARS: Final = 2000
MAX_MODEL_NAME_CHARS: Final = 128
# A binary CIDv1 raw BLAKE3-256 is 36 bytes; other hashes of the same family are no longer.
MAX_MODEL_CID_BYTES: Final = 64
# Output of one action: a JSON object of a few fields; 512 tokens is generous.
MAX_OUTPUT_TOKENS: Final = 512
MIN_CONTEXT_TOKENS: Final = 256
MAX_CONTEXT_TOKENS: Final = 32_768
# Periods (spend, rates) are at most a year: longer windows would make the state snapshot
# of every decision carry a year of events.
MAX_PERIOD_MS: Final = 366 * 24 * 3600 * 1000
MAX_RATE_RULES: Final = 16
# A rate rule counts at most this many actions per period; the state snapshot a decision
# records holds at most MAX_SNAPSHOT_EVENTS events, so counts above it could not be checked.
MAX_RATE_COUNT: Final = 1000
MAX_PAYEES: Final = 64
MAX_CONTACTS: Final = 64
MAX_WORLDS: Final = 64
MAX_ADDRESS_CHARS: Final = 256
MAX_REFUSE_RULES: Final = 64
MAX_PHRASES_PER_RULE: Final = 32
MAX_PHRASE_CHARS: Final = 64
RULE_ID_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
SCOPES: Final = ("request", "output", "both")

_FIELDS: Final = ("type", "name", "persona", "creator", "agent", "model", "generation", "tools",
                  "primitives", "previous", "version", "time", "sig")
_PRIMITIVE_FIELDS: Final = ("actions", "payees", "contacts", "worlds", "spend_limit",
                            "spend_period_ms", "escalate_above", "rates", "refuse")
_PHRASE_WORD: Final = re.compile(r"[^\W_]+")


def normalize_text(text: str) -> str:
    """Lower-case words joined by single spaces: what refuse rules are matched against.

    Case-folded, every run of characters that are not letters or digits becomes one space
    (so "Creator-KEY!" and "creator key" match alike)."""
    return " ".join(_PHRASE_WORD.findall(text.casefold()))


@dataclass(frozen=True)
class ModelRef:
    cid: CID  # CIDv1 raw BLAKE3-256 of the GGUF file
    name: str
    size: int

    def to_map(self) -> dict[str, Any]:
        return {"cid": bytes(self.cid), "name": self.name, "size": self.size}


@dataclass(frozen=True)
class Generation:
    max_tokens: int = 64
    context_tokens: int = 2048
    memory_tokens: int = 512

    def to_map(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "context_tokens": self.context_tokens,
                "memory_tokens": self.memory_tokens}


@dataclass(frozen=True)
class RateLimit:
    kinds: tuple[str, ...]  # sorted action kinds counted together
    count: int  # at most this many of them ...
    period_ms: int  # ... in any window of this length ending now

    def to_map(self) -> dict[str, Any]:
        return {"kinds": list(self.kinds), "count": self.count, "period_ms": self.period_ms}


@dataclass(frozen=True)
class RefuseRule:
    id: str
    phrases: tuple[str, ...]  # normalized phrases (normalize_text)
    scope: str  # "request", "output" or "both"

    def to_map(self) -> dict[str, Any]:
        return {"id": self.id, "phrases": list(self.phrases), "scope": self.scope}


@dataclass(frozen=True)
class Primitives:
    """The behavioral primitives: the policy's whole input from the manifest."""

    actions: tuple[str, ...] = (Kind.REPLY.value,)
    payees: Mapping[str, bytes] = field(default_factory=dict)  # name -> account key
    contacts: Mapping[str, str] = field(default_factory=dict)  # name -> agent address
    worlds: tuple[str, ...] = ()  # worlds it may read and propose edits to
    spend_limit: int = 0  # total of tips and payments per spend period
    spend_period_ms: int = 24 * 3600 * 1000
    escalate_above: int = 0  # a single payment over this waits for the creator
    rates: tuple[RateLimit, ...] = ()
    refuse: tuple[RefuseRule, ...] = ()

    def to_map(self) -> dict[str, Any]:
        return {
            "actions": list(self.actions), "payees": dict(self.payees),
            "contacts": dict(self.contacts), "worlds": list(self.worlds),
            "spend_limit": self.spend_limit, "spend_period_ms": self.spend_period_ms,
            "escalate_above": self.escalate_above,
            "rates": [rate.to_map() for rate in self.rates],
            "refuse": [rule.to_map() for rule in self.refuse],
        }


# Refusals every agent should carry unless its creator removes them: requests for secrets,
# and the classic instruction-override phrasing. Offered by make_primitives(), never implied:
# the policy enforces only what the signed manifest says.
DEFAULT_REFUSALS: Final = (
    RefuseRule("secrets", ("creator key", "private key", "secret key", "seed phrase",
                           "signing key", "api token", "password"), "both"),
    RefuseRule("override", ("ignore previous instructions", "ignore all instructions",
                            "ignore your instructions", "disregard your rules"), "request"),
)


def make_primitives(*, actions: Iterable[str], payees: Mapping[str, bytes] | None = None,
                    contacts: Mapping[str, str] | None = None, worlds: Iterable[str] = (),
                    spend_limit: int = 0, spend_period_ms: int = 24 * 3600 * 1000,
                    escalate_above: int | None = None, rates: Iterable[RateLimit] = (),
                    refuse: Iterable[RefuseRule] = DEFAULT_REFUSALS) -> Primitives:
    """Primitives in canonical form (sorted lists), checked as a decoder would."""
    primitives = Primitives(
        actions=tuple(sorted(set(actions))), payees=dict(sorted((payees or {}).items())),
        contacts=dict(sorted((contacts or {}).items())), worlds=tuple(sorted(set(worlds))),
        spend_limit=spend_limit, spend_period_ms=spend_period_ms,
        escalate_above=spend_limit if escalate_above is None else escalate_above,
        rates=tuple(RateLimit(tuple(sorted(set(r.kinds))), r.count, r.period_ms) for r in rates),
        refuse=tuple(refuse),
    )
    _check_primitives(primitives.to_map(), Checker(ManifestError, "manifest primitives"))
    return primitives


@dataclass(frozen=True)
class Manifest:
    name: str
    persona: str
    creator: bytes
    agent: bytes
    model: ModelRef
    generation: Generation
    tools: tuple[str, ...]
    primitives: Primitives
    previous: CID | None
    version: int
    time: int
    signature: bytes = field(repr=False)

    def unsigned_map(self) -> dict[str, Any]:
        return {
            "type": MANIFEST_TYPE, "name": self.name, "persona": self.persona,
            "creator": self.creator, "agent": self.agent, "model": self.model.to_map(),
            "generation": self.generation.to_map(), "tools": list(self.tools),
            "primitives": self.primitives.to_map(), "previous": self.previous,
            "version": self.version, "time": self.time,
        }

    def signing_bytes(self) -> bytes:
        return MANIFEST_SIGNATURE_TAG + encode(self.unsigned_map())

    def to_block(self) -> bytes:
        return encode({**self.unsigned_map(), "sig": self.signature})

    @property
    def cid(self) -> CID:
        return cid_of(self.to_block())

    def verify(self) -> None:
        try:
            VerifyKey(self.creator).verify(self.signing_bytes(), self.signature)
        except (BadSignatureError, ValueError, TypeError) as exc:
            raise ManifestError(f"manifest {self.name!r} v{self.version}: bad creator signature") from exc

    def allows_tool(self, tool: str | None) -> bool:
        return tool is None or tool in self.tools


def _check_primitives(raw: Any, check: Checker) -> Primitives:
    check.mapping(raw, _PRIMITIVE_FIELDS, "primitives")
    actions = check.sorted_unique_texts(raw["actions"], "actions", len(Kind), 32,
                                        allowed=[k.value for k in Kind])
    payees: dict[str, bytes] = {}
    check.require(type(raw["payees"]) is dict and len(raw["payees"]) <= MAX_PAYEES,
                  f"payees must be a map of at most {MAX_PAYEES} names")
    for name, key in raw["payees"].items():
        check.text(name, "payee name", 32, 1, NAME_PATTERN)
        payees[name] = check.blob(key, f"payee {name!r}", KEY_BYTES)
    contacts: dict[str, str] = {}
    check.require(type(raw["contacts"]) is dict and len(raw["contacts"]) <= MAX_CONTACTS,
                  f"contacts must be a map of at most {MAX_CONTACTS} names")
    for name, address in raw["contacts"].items():
        check.text(name, "contact name", 32, 1, NAME_PATTERN)
        contacts[name] = check.text(address, f"contact {name!r}", MAX_ADDRESS_CHARS, 1)
    worlds = check.sorted_unique_texts(raw["worlds"], "worlds", MAX_WORLDS, 128,
                                       pattern=WORLD_KEY_PATTERN)
    spend_limit = check.integer(raw["spend_limit"], "spend_limit", 0, MAX_AMOUNT)
    period = check.integer(raw["spend_period_ms"], "spend_period_ms", 1, MAX_PERIOD_MS)
    escalate = check.integer(raw["escalate_above"], "escalate_above", 0, MAX_AMOUNT)
    rates = []
    for item in check.array(raw["rates"], "rates", MAX_RATE_RULES):
        check.mapping(item, ("kinds", "count", "period_ms"), "a rate rule")
        kinds = check.sorted_unique_texts(item["kinds"], "rate kinds", len(Kind), 32,
                                          allowed=[k.value for k in Kind])
        check.require(bool(kinds), "a rate rule names at least one kind")
        rates.append(RateLimit(kinds, check.integer(item["count"], "rate count", 1, MAX_RATE_COUNT),
                               check.integer(item["period_ms"], "rate period_ms", 1, MAX_PERIOD_MS)))
    rules, ids = [], set()
    for item in check.array(raw["refuse"], "refuse", MAX_REFUSE_RULES):
        check.mapping(item, ("id", "phrases", "scope"), "a refuse rule")
        rule_id = check.text(item["id"], "rule id", 32, 1, RULE_ID_PATTERN)
        check.require(rule_id not in ids, f"duplicate refuse rule id {rule_id!r}")
        ids.add(rule_id)
        phrases = tuple(check.text(p, "phrase", MAX_PHRASE_CHARS, 1) for p in
                        check.array(item["phrases"], "phrases", MAX_PHRASES_PER_RULE))
        check.require(bool(phrases), f"refuse rule {rule_id!r} has no phrases")
        for phrase in phrases:
            check.require(phrase == normalize_text(phrase),
                          f"phrase {phrase!r} is not normalized (lower-case words, single spaces)")
        check.require(item["scope"] in SCOPES, f"scope must be one of {list(SCOPES)}")
        rules.append(RefuseRule(rule_id, phrases, item["scope"]))
    return Primitives(actions, payees, contacts, worlds, spend_limit, period, escalate,
                      tuple(rates), tuple(rules))


def decode_manifest(data: bytes) -> Manifest:
    """Decode a manifest block strictly and verify its creator signature."""
    check = Checker(ManifestError, "manifest")
    raw = check.mapping(check.decode(data, MAX_MANIFEST_BYTES), _FIELDS, "manifest")
    check.require(raw["type"] == MANIFEST_TYPE, f"type must be {MANIFEST_TYPE!r}")
    model = check.mapping(raw["model"], ("cid", "name", "size"), "model")
    check.require(type(model["cid"]) is bytes and len(model["cid"]) <= MAX_MODEL_CID_BYTES,
                  "model cid must be the bytes of a binary CID")
    try:
        model_cid = CID(model["cid"])
    except CanonError as exc:
        check.fail(f"model cid: {exc}")
    check.require(model_cid.version == 1 and model_cid.codec_name == "raw",
                  "model cid must be a CIDv1 with the raw codec")
    generation = check.mapping(raw["generation"], ("max_tokens", "context_tokens", "memory_tokens"), "generation")
    context = check.integer(generation["context_tokens"], "context_tokens", MIN_CONTEXT_TOKENS, MAX_CONTEXT_TOKENS)
    previous = check.optional_link(raw["previous"], "previous")
    version = check.integer(raw["version"], "version", 1, MAX_U63)
    check.require((version == 1) == (previous is None), "previous must be null exactly for version 1")
    manifest = Manifest(
        name=check.text(raw["name"], "name", MAX_AGENT_NAME_CHARS, 1, AGENT_NAME_PATTERN),
        persona=check.text(raw["persona"], "persona", MAX_PERSONA_CHARS),
        creator=check.blob(raw["creator"], "creator", KEY_BYTES),
        agent=check.blob(raw["agent"], "agent", KEY_BYTES),
        model=ModelRef(model_cid, check.text(model["name"], "model name", MAX_MODEL_NAME_CHARS, 1),
                       check.integer(model["size"], "model size")),
        generation=Generation(
            check.integer(generation["max_tokens"], "max_tokens", 1, MAX_OUTPUT_TOKENS), context,
            check.integer(generation["memory_tokens"], "memory_tokens", 0, context // 2)),
        tools=check.sorted_unique_texts(raw["tools"], "tools", len(Tool), 32,
                                        allowed=[t.value for t in Tool]),
        primitives=_check_primitives(raw["primitives"], check),
        previous=previous, version=version, time=check.integer(raw["time"], "time"),
        signature=check.blob(raw["sig"], "sig", SIGNATURE_BYTES),
    )
    check.require(manifest.creator != manifest.agent, "the agent key must not be the creator key")
    check.require(manifest.to_block() == bytes(data), "block is not canonical")
    manifest.verify()
    return manifest


def sign_manifest(creator: SigningKey, *, name: str, persona: str, agent: bytes, model: ModelRef,
                  generation: Generation, tools: Iterable[str], primitives: Primitives,
                  time: int, previous: Manifest | None = None) -> Manifest:
    """Sign version 1 (``previous`` None) or the successor of ``previous``; the result is
    checked by :func:`decode_manifest`, so no invalid manifest is ever handed out."""
    if previous is not None and (previous.creator != bytes(creator.verify_key) or previous.agent != agent):
        raise ManifestError("an upgrade keeps the creator and the agent key of its previous version")
    unsigned = Manifest(
        name=name, persona=persona, creator=bytes(creator.verify_key), agent=agent, model=model,
        generation=generation, tools=tuple(sorted(set(tools))), primitives=primitives,
        previous=None if previous is None else previous.cid,
        version=1 if previous is None else previous.version + 1, time=time, signature=b"",
    )
    signed = Manifest(**{**unsigned.__dict__, "signature": creator.sign(unsigned.signing_bytes()).signature})
    return decode_manifest(signed.to_block())


# -- the model file's CID ---------------------------------------------------------------------

# (resolved path, size, mtime in ns) -> CID. Hashing the 100 MB bundled model takes a
# fraction of a second with BLAKE3's threads, but every agent load and every audit re-run
# would repeat it; a changed file changes size or mtime and is hashed again.
_MODEL_CID_CACHE: dict[tuple[str, int, int], CID] = {}
_MODEL_CID_LOCK = threading.Lock()


def model_cid_of_file(path: str | os.PathLike[str]) -> CID:
    """CIDv1 raw BLAKE3-256 of a model file, computed once per (path, size, mtime)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    with _MODEL_CID_LOCK:
        cached = _MODEL_CID_CACHE.get(key)
    if cached is not None:
        return cached
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    hasher.update_mmap(str(resolved))
    cid = CID.from_digest("raw", "blake3", hasher.digest())
    with _MODEL_CID_LOCK:
        _MODEL_CID_CACHE[key] = cid
    return cid


def model_ref_of_file(path: str | os.PathLike[str], name: str | None = None) -> ModelRef:
    resolved = Path(path).resolve()
    return ModelRef(model_cid_of_file(resolved), name or resolved.name[:MAX_MODEL_NAME_CHARS],
                    resolved.stat().st_size)
