"""The agent registry: which agents this node hosts, their manifest history, memory head,
recent actions and pending escalations (specs/imvu.md §2.3, §10).

Each agent has one *state block* (``n3xus/imvu-agent/v1``, DAG-CBOR) naming its active
manifest, every manifest version it has run, its memory head, the events its policy windows
count and the escalated decisions waiting for approval. Everything the agent is and did
(manifests, memory, every decision's prompt and output, linked from memory) is reachable from
it, so it is one CAR export away (:func:`export_roots`). LMDB holds the pointers::

    imvu/agents   agent key (32 bytes) -> binary CID of the agent's state block
    imvu/names    agent name (UTF-8)   -> agent key

A pointer is updated by compare-and-swap on the previous state CID, so two writers cannot
lose each other's update. A turn's update goes in the turn's own write transaction, with its
blocks and its canon-log entry (:meth:`AgentRegistry.commit_turn_in`, runtime.py).

Garbage collection. A recursive pin walks the whole DAG it covers, and an agent's DAG grows
with every turn; re-pinning after each turn would cost O(history) per turn. Instead the
registry holds one block-store *session* (a lease: rule 2 of canon/blockstore.py) for its
lifetime: every block of a turn is put through it, so the latest state block, and with it the
whole DAG, is protected from GC while the process runs. The recursive pin
``imvu/agent/<agent key hex>`` is renewed on every lifecycle change (create, upgrade,
rollback, start/stop), every REPIN_EVERY turns, at :meth:`close`, and at open for every agent
whose pin lags its pointer (a crash): so after a restart everything is pinned again before
the node can run a GC, and a bare put survives the first GC anyway (rule 3).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Final

import lmdb

from n3xus.canon.blockstore import BlockStore
from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import encode

from ._schema import Checker
from .actions import Kind
from .errors import DecisionError, RegistryError
from .manifest import Manifest, decode_manifest
from .policy import MAX_SNAPSHOT_EVENTS, Event

AGENT_STATE_TYPE: Final = "n3xus/imvu-agent/v1"
PIN_PREFIX: Final = "imvu/agent/"
_DB_AGENTS: Final = b"imvu/agents"
_DB_NAMES: Final = b"imvu/names"
# Versions an agent keeps in its state block; upgrades are rare, 1000 is years of them.
MAX_VERSIONS: Final = 1000
# Escalations waiting for their creator at once; more means the creator is not answering
# and new escalations are refused rather than queued forever.
MAX_PENDING: Final = 64
MAX_STATE_BLOCK_BYTES: Final = 512 * 1024
# Turns between recursive re-pins of an agent: amortizes the O(history) walk of a pin to
# 1/64 of a walk per turn; the lease protects what was written in between.
REPIN_EVERY: Final = 64
# Blocks the lease may hold before the registry pins every agent and starts a fresh lease
# (the lease's set lives in memory: ~50 bytes a block).
MAX_LEASED_BLOCKS: Final = 100_000


@dataclass(frozen=True)
class AgentState:
    agent: bytes
    name: str
    manifest: CID  # the active version
    versions: tuple[CID, ...]  # every version activated, in order of first activation
    memory: CID | None
    events: tuple[Event, ...]
    pending: tuple[CID, ...]  # escalated decisions (payload CIDs) awaiting approval
    enabled: bool
    turns: int

    def to_block(self) -> bytes:
        return encode({
            "type": AGENT_STATE_TYPE, "agent": self.agent, "name": self.name,
            "manifest": self.manifest, "versions": list(self.versions), "memory": self.memory,
            "events": [[e.time, e.kind, e.amount] for e in self.events],
            "pending": list(self.pending), "enabled": self.enabled, "turns": self.turns,
        })

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent.hex(), "name": self.name, "manifest": str(self.manifest),
                "versions": [str(v) for v in self.versions],
                "memory": None if self.memory is None else str(self.memory),
                "pending": [str(p) for p in self.pending], "enabled": self.enabled,
                "turns": self.turns}


def decode_agent_state(data: bytes) -> AgentState:
    check = Checker(DecisionError, "agent state")
    raw = check.mapping(check.decode(data, MAX_STATE_BLOCK_BYTES),
                        ("type", "agent", "name", "manifest", "versions", "memory", "events",
                         "pending", "enabled", "turns"))
    check.require(raw["type"] == AGENT_STATE_TYPE, f"type must be {AGENT_STATE_TYPE!r}")
    events = []
    for item in check.array(raw["events"], "events", MAX_SNAPSHOT_EVENTS):
        check.require(type(item) is list and len(item) == 3 and item[1] in Kind.__members__.values(),
                      "an event is [time, kind, amount]")
        events.append(Event(check.integer(item[0], "event time"), item[1], check.integer(item[2], "event amount")))
    state = AgentState(
        agent=check.blob(raw["agent"], "agent", 32), name=check.text(raw["name"], "name", 64, 1),
        manifest=check.link(raw["manifest"], "manifest"),
        versions=tuple(check.link(v, "version") for v in check.array(raw["versions"], "versions", MAX_VERSIONS)),
        memory=check.optional_link(raw["memory"], "memory"), events=tuple(events),
        pending=tuple(check.link(p, "pending") for p in check.array(raw["pending"], "pending", MAX_PENDING)),
        enabled=check.boolean(raw["enabled"], "enabled"), turns=check.integer(raw["turns"], "turns"),
    )
    check.require(state.to_block() == bytes(data), "block is not canonical")
    return state


class AgentRegistry:
    """Agents hosted by this node, over the node's LMDB environment and block store."""

    def __init__(self, env: lmdb.Environment, store: BlockStore) -> None:
        self.env = env
        self.store = store
        self._agents = env.open_db(_DB_AGENTS)
        self._names = env.open_db(_DB_NAMES)
        self._manifests: dict[CID, Manifest] = {}
        self._lease = store.session()
        self._leased = 0
        self._unpinned_turns: dict[bytes, int] = {}
        self._repin()

    # -- reading ------------------------------------------------------------------------------

    def _pointer(self, agent: bytes) -> CID | None:
        with self.env.begin(db=self._agents) as txn:
            raw = txn.get(agent)
        return None if raw is None else CID(bytes(raw))

    def get(self, agent: bytes) -> AgentState:
        cid = self._pointer(agent)
        if cid is None:
            raise RegistryError(f"no agent {agent.hex()}")
        return decode_agent_state(self.store.get(cid))

    def state_cid(self, agent: bytes) -> CID:
        cid = self._pointer(agent)
        if cid is None:
            raise RegistryError(f"no agent {agent.hex()}")
        return cid

    def by_name(self, name: str) -> AgentState:
        with self.env.begin(db=self._names) as txn:
            agent = txn.get(name.encode("utf-8"))
        if agent is None:
            raise RegistryError(f"no agent named {name!r}")
        return self.get(bytes(agent))

    def __iter__(self) -> Iterator[AgentState]:
        with self.env.begin(db=self._agents) as txn:
            keys = [bytes(key) for key in txn.cursor().iternext(values=False)]
        for key in keys:
            yield self.get(key)

    def agents(self) -> list[AgentState]:
        """Every agent, by name."""
        return sorted(self, key=lambda state: state.name)

    def manifest(self, cid: CID) -> Manifest:
        """A manifest version by CID, verified once and then cached (blocks are immutable)."""
        manifest = self._manifests.get(cid)
        if manifest is None:
            manifest = self._manifests[cid] = decode_manifest(self.store.get(cid))
        return manifest

    def active_manifest(self, agent: bytes) -> tuple[CID, Manifest]:
        cid = self.get(agent).manifest
        return cid, self.manifest(cid)

    def history(self, agent: bytes) -> list[tuple[CID, Manifest]]:
        """Every version the agent has run, in order of first activation."""
        return [(cid, self.manifest(cid)) for cid in self.get(agent).versions]

    # -- lifecycle ----------------------------------------------------------------------------

    def create(self, manifest: Manifest) -> AgentState:
        """Register a new agent at version 1 of its manifest."""
        decode_manifest(manifest.to_block())  # verified again: callers may build their own
        if manifest.version != 1:
            raise RegistryError("a new agent starts at manifest version 1")
        cid = self.store.put(manifest.to_block())
        state = AgentState(manifest.agent, manifest.name, cid, (cid,), None, (), (), True, 0)
        with self.env.begin(write=True) as txn:
            if txn.get(manifest.agent, db=self._agents) is not None:
                raise RegistryError(f"agent {manifest.agent.hex()} already exists")
            if txn.get(manifest.name.encode(), db=self._names) is not None:
                raise RegistryError(f"an agent named {manifest.name!r} already exists")
            txn.put(manifest.name.encode(), manifest.agent, db=self._names)
        return self._write(state, None)

    def upgrade(self, manifest: Manifest) -> AgentState:
        """Activate the next version: its ``previous`` must be the active version. Queued
        turns pick it up when they run (the runtime reads the active version per turn)."""
        decode_manifest(manifest.to_block())
        state = self.get(manifest.agent)
        if manifest.previous != state.manifest:
            raise RegistryError("the upgrade's previous version is not the active version")
        if manifest.name != state.name:
            raise RegistryError("an upgrade keeps the agent's name")
        cid = self.store.put(manifest.to_block())
        versions = state.versions if cid in state.versions else (*state.versions, cid)[-MAX_VERSIONS:]
        return self._write(replace(state, manifest=cid, versions=versions), self.state_cid(manifest.agent))

    def rollback(self, agent: bytes) -> AgentState:
        """Make the active version's ``previous`` active again (its history is kept)."""
        state = self.get(agent)
        previous = self.manifest(state.manifest).previous
        if previous is None:
            raise RegistryError("the active version is the first: there is nothing to roll back to")
        return self._write(replace(state, manifest=previous), self.state_cid(agent))

    def set_enabled(self, agent: bytes, enabled: bool) -> AgentState:
        """``n3xus agent start|stop``: a stopped agent takes no new turns."""
        state = self.get(agent)
        return self._write(replace(state, enabled=enabled), self.state_cid(agent))

    def update(self, state: AgentState, expected: CID, *, stored: bool = False) -> AgentState:
        """Write ``state`` if the agent's state is still ``expected`` (compare-and-swap);
        a turn's update, pinned every REPIN_EVERY turns (module doc). ``stored``: its block
        was already written with :meth:`put_blocks` (one write transaction fewer)."""
        return self._write(state, expected, pin=False, stored=stored)

    def put_blocks(self, blocks: list[bytes]) -> list[CID]:
        """Store a turn's DAG-CBOR blocks in one write transaction, under the lease."""
        self._leased += len(blocks)
        return self._lease.put_many(blocks)

    def commit_turn_in(self, txn: lmdb.Transaction, blocks: list[bytes], state: AgentState,
                       expected: CID) -> None:
        """A turn's writes inside the caller's write transaction (one durable commit with
        the turn's log entry, runtime.py): its blocks under the lease (``state``'s block
        among them), the pointer's compare-and-swap to ``state``, and every REPIN_EVERY
        turns the agent's recursive pin, which walks everything ``state`` reaches: blocks it
        links that are not in ``blocks`` (the turn's decision, stored by the log) must be
        written earlier in ``txn``. Call :meth:`after_commit` once it committed."""
        self._leased += len(blocks)
        self._lease.put_many_in(txn, blocks)
        cid = cid_of(state.to_block())
        self._swap(txn, state.agent, cid, expected)
        turns = self._unpinned_turns.get(state.agent, 0) + 1
        if turns >= REPIN_EVERY:
            self._lease.pin_in(txn, cid, PIN_PREFIX + state.agent.hex())
            turns = 0
        self._unpinned_turns[state.agent] = turns

    def after_commit(self) -> None:
        """Start a fresh lease if this one holds too many blocks (outside any write
        transaction: it pins every agent in transactions of its own)."""
        if self._leased > MAX_LEASED_BLOCKS:
            self._pin_all()
            self._lease.close()
            self._lease, self._leased = self.store.session(), 0

    def close(self) -> None:
        """Pin every agent and end the lease (the node calls this at shutdown)."""
        self._pin_all()
        self._lease.close()

    # -- storage ------------------------------------------------------------------------------

    def _write(self, state: AgentState, expected: CID | None, pin: bool = True,
               stored: bool = False) -> AgentState:
        block = state.to_block()
        if stored:
            cid = cid_of(block)
        else:
            cid = self._lease.put(block)
            self._leased += 1
        with self.env.begin(write=True) as txn:
            self._swap(txn, state.agent, cid, expected)
        turns = self._unpinned_turns.get(state.agent, 0) + 1
        if pin or turns >= REPIN_EVERY:
            self._lease.pin(cid, PIN_PREFIX + state.agent.hex())
            turns = 0
        self._unpinned_turns[state.agent] = turns
        self.after_commit()
        return state

    def _swap(self, txn: lmdb.Transaction, agent: bytes, cid: CID, expected: CID | None) -> None:
        """The pointer's compare-and-swap (module doc), in a write transaction."""
        current = txn.get(agent, db=self._agents)
        if (None if current is None else CID(bytes(current))) != expected:
            raise RegistryError(f"agent {agent.hex()} changed concurrently; retry")
        txn.put(agent, bytes(cid), db=self._agents)

    def _pin_all(self) -> None:
        with self.env.begin(db=self._agents) as txn:
            pointers = [(bytes(k), CID(bytes(v))) for k, v in txn.cursor()]
        for agent, cid in pointers:
            if self._unpinned_turns.get(agent):
                self._lease.pin(cid, PIN_PREFIX + agent.hex())
                self._unpinned_turns[agent] = 0

    def _repin(self) -> None:
        pins = {pin.name: pin.cid for pin in self.store.pins() if pin.name.startswith(PIN_PREFIX)}
        with self.env.begin(db=self._agents) as txn:
            pointers = [(bytes(k), CID(bytes(v))) for k, v in txn.cursor()]
        for agent, cid in pointers:
            name = PIN_PREFIX + agent.hex()
            if pins.get(name) != cid:
                self.store.pin(cid, name, allow_missing=True)


def export_roots(registry: AgentRegistry, agent: bytes) -> list[CID]:
    """CAR roots that carry the agent whole: its state block (manifests, memory, and through
    memory every decision with its prompt, output, state and action blocks)."""
    return [registry.state_cid(agent)]
