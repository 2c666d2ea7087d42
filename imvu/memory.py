"""Agent memory: conversation turns and facts as canon blocks (specs/imvu.md §5).

Each item is one DAG-CBOR block linking the previous item, so an agent's memory is a chain
whose head CID the agent's state block holds (registry.py): content-addressed, persistent
in the node's LMDB block store, and carried by any CAR export rooted at the agent.

Retrieval (:meth:`Memory.recall`) fits a token budget with *recent plus relevant*: the
last RECENT_ITEMS items first (newest first), then older items ranked by BM25 against the
request (lexical, over normalized words; ties go to the newer item), each taken while it
still fits. The chosen items are returned oldest first. It is deterministic, so the same
memory and request always give the same prompt.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from n3xus.canon.cid import CID
from n3xus.canon.codec import encode
from n3xus.canon.world import BlockSource

from ._schema import Checker
from .errors import DecisionError
from .manifest import normalize_text

MEMORY_TYPE: Final = "n3xus/imvu-memory/v1"
KINDS: Final = ("turn", "fact")
# One item is a request and its outcome, or one fact; longer text is the caller's to trim.
MAX_ITEM_CHARS: Final = 2000
MAX_WHO_CHARS: Final = 256
MAX_ITEM_BYTES: Final = 16 * 1024
# Items always offered first, newest first: the thread of the conversation.
RECENT_ITEMS: Final = 4
# Items a recall looks at, newest first: bounds the block reads of one turn. Older items
# stay in the chain (and in exports) but are no longer recalled.
MAX_RECALL_SCAN: Final = 256
# Decoded items kept per Memory handle (blocks are immutable, so the cache never goes stale).
MAX_CACHED_ITEMS: Final = 4096
# BM25's usual constants: term-frequency saturation and length normalization.
BM25_K1: Final = 1.2
BM25_B: Final = 0.75


@dataclass(frozen=True)
class MemoryItem:
    kind: str  # "turn" or "fact"
    text: str
    who: str  # who the item came from ("creator", "user:...", "agent:...", "self")
    time: int
    seq: int  # 0 for the first item of the chain
    prev: CID | None
    # The decision this item came from. Linking it keeps every decision's blocks (prompt,
    # output, state...) reachable from the agent's root: pinned, and in its CAR export.
    decision: CID | None = None

    def to_block(self) -> bytes:
        return encode({"type": MEMORY_TYPE, "kind": self.kind, "text": self.text, "who": self.who,
                       "time": self.time, "seq": self.seq, "prev": self.prev, "decision": self.decision})

    def line(self) -> str:
        """How the item appears in a prompt."""
        return f"- ({self.kind}, from {self.who}) {self.text}"


def decode_memory_item(data: bytes) -> MemoryItem:
    check = Checker(DecisionError, "memory item")
    raw = check.mapping(check.decode(data, MAX_ITEM_BYTES), ("type", "kind", "text", "who", "time", "seq", "prev", "decision"))
    check.require(raw["type"] == MEMORY_TYPE, f"type must be {MEMORY_TYPE!r}")
    check.require(raw["kind"] in KINDS, f"kind must be one of {list(KINDS)}")
    item = MemoryItem(raw["kind"], check.text(raw["text"], "text", MAX_ITEM_CHARS, 1),
                      check.text(raw["who"], "who", MAX_WHO_CHARS, 1),
                      check.integer(raw["time"], "time"), check.integer(raw["seq"], "seq"),
                      check.optional_link(raw["prev"], "prev"), check.optional_link(raw["decision"], "decision"))
    check.require((item.seq == 0) == (item.prev is None), "prev must be null exactly for seq 0")
    check.require(item.to_block() == bytes(data), "block is not canonical")
    return item


def _terms(text: str) -> list[str]:
    return normalize_text(text).split()


class Memory:
    """One agent's memory chain over a block store; ``head`` is the newest item or None.
    ``cache`` may be shared by every handle on one agent's chain (the runtime keeps one per
    agent): items are immutable blocks, so a cached item never goes stale, and a turn then
    decodes only the items written since the last."""

    def __init__(self, store: BlockSource, head: CID | None,
                 cache: OrderedDict[CID, MemoryItem] | None = None) -> None:
        self.store = store
        self.head = head
        self._cache: OrderedDict[CID, MemoryItem] = OrderedDict() if cache is None else cache

    def _item(self, cid: CID) -> MemoryItem:
        item = self._cache.get(cid)
        if item is None:
            item = decode_memory_item(self.store.get(cid))
            self._cache[cid] = item
            if len(self._cache) > MAX_CACHED_ITEMS:
                self._cache.popitem(last=False)
        return item

    def append(self, kind: str, text: str, who: str, time: int, decision: CID | None = None) -> CID:
        """Add an item (text trimmed to MAX_ITEM_CHARS); returns and becomes the new head."""
        if kind not in KINDS:
            raise ValueError(f"memory kind must be one of {KINDS}")
        seq = 0 if self.head is None else self._item(self.head).seq + 1
        item = MemoryItem(kind, text[:MAX_ITEM_CHARS] or "(empty)", who[:MAX_WHO_CHARS] or "?",
                          time, seq, self.head, decision)
        cid = self.store.put(item.to_block())
        self._cache[cid] = item
        self.head = cid
        return cid

    def items(self, limit: int = MAX_RECALL_SCAN) -> list[tuple[CID, MemoryItem]]:
        """Up to ``limit`` items, newest first."""
        out: list[tuple[CID, MemoryItem]] = []
        cid = self.head
        while cid is not None and len(out) < limit:
            item = self._item(cid)
            out.append((cid, item))
            cid = item.prev
        return out

    def recall(self, query: str, budget_tokens: int, count_tokens: Callable[[str], int]) -> list[MemoryItem]:
        """Recent plus relevant items that fit ``budget_tokens`` (module doc), oldest first."""
        if budget_tokens <= 0:
            return []  # nothing can fit: no need to read the chain
        scanned = [item for _, item in self.items()]
        chosen: list[MemoryItem] = []
        used = 0

        def take(item: MemoryItem) -> None:
            nonlocal used
            cost = count_tokens(item.line() + "\n")
            if used + cost <= budget_tokens:
                chosen.append(item)
                used += cost

        for item in scanned[:RECENT_ITEMS]:
            take(item)
        older = scanned[RECENT_ITEMS:]
        for _, item in sorted(((score, item) for score, item in zip(bm25_scores(query, [i.text for i in older]), older, strict=True) if score > 0),
                              key=lambda pair: (-pair[0], -pair[1].seq)):
            take(item)
        return sorted(chosen, key=lambda item: item.seq)


def bm25_scores(query: str, documents: list[str]) -> list[float]:
    """Okapi BM25 of each document against the query's distinct terms (IDF with +1 so it
    is never negative), over normalized words."""
    if not documents:
        return []
    docs = [Counter(_terms(doc)) for doc in documents]
    lengths = [sum(doc.values()) for doc in docs]
    average = (sum(lengths) / len(docs)) or 1.0
    scores = [0.0] * len(docs)
    for term in set(_terms(query)):
        having = sum(1 for doc in docs if term in doc)
        if not having:
            continue
        idf = math.log(1 + (len(docs) - having + 0.5) / (having + 0.5))
        for index, doc in enumerate(docs):
            frequency = doc.get(term, 0)
            if frequency:
                norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths[index] / average)
                scores[index] += idf * frequency * (BM25_K1 + 1) / (frequency + norm)
    return scores


def item_to_json(cid: CID, item: MemoryItem) -> dict[str, Any]:
    """A JSON view for the CLI and the HTTP API (``n3xus agent memory``)."""
    return {"cid": str(cid), "kind": item.kind, "text": item.text, "who": item.who,
            "time": item.time, "seq": item.seq,
            "decision": None if item.decision is None else str(item.decision)}
