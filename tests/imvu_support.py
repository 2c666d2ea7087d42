"""Shared pieces of the IMVU tests and bench: real LMDB, a real ledger, real signed worlds,
and an AgentTools over them (what the node will implement), plus manifest builders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmdb
from blake3 import blake3
from nacl.signing import SigningKey

from n3xus.canon.blockstore import BlockStore
from n3xus.canon.cid import CID
from n3xus.canon.entries import WorldCommit, sign_commit
from n3xus.canon.log import CanonLog
from n3xus.canon.world import World
from n3xus.imvu.manifest import (
    Generation,
    Manifest,
    ModelRef,
    Primitives,
    RateLimit,
    make_primitives,
    model_ref_of_file,
    sign_manifest,
)
from n3xus.imvu.registry import AgentRegistry
from n3xus.imvu.runtime import AccountHead, Agent, ToolError
from n3xus.imvu.wire import AgentExchange, Answer, Ask, Role, request_from_ask
from n3xus.ledger.errors import TxRejected
from n3xus.ledger.genesis import Genesis
from n3xus.ledger.store import LedgerStore
from n3xus.ledger.tx import AccountChain, Op

T0 = 1_760_000_000_000  # a fixed "now" (ms) for deterministic snapshots
SUPPLY_CAP = 10**9
STARTING_FUNDS = 1_000
WORLD = "stage"
PEER_B = "12D3KooWBmwkafWE2fqfzS96VoTZLq3GVAAbqFgsXHYc8QvT5hcP"  # the answering node's peer id


def key(name: str) -> SigningKey:
    return SigningKey(blake3(b"n3xus-imvu-test/" + name.encode()).digest())


def account(name: str) -> bytes:
    return bytes(key(name).verify_key)


def open_env(path: Path) -> lmdb.Environment:
    path.mkdir(parents=True, exist_ok=True)
    return lmdb.open(str(path), map_size=256 * 1024 * 1024, max_dbs=128, sync=False)


class Clock:
    """A manual clock in ms: deterministic snapshots and spend windows."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1
        return self.now


class NodeTools:
    """AgentTools over a real LedgerStore, real signed worlds in the block store, and other
    in-process agents: the node's job, done here with the same parts."""

    def __init__(self, store: BlockStore, ledger: LedgerStore, clock: Clock) -> None:
        self.store = store
        self.ledger = ledger
        self.clock = clock
        self.heads: dict[str, WorldCommit] = {}
        self.agents: dict[str, Agent] = {}
        self.calls: list[tuple[str, Any]] = []

    async def read_world(self, world: str, key: str) -> str | None:
        self.calls.append(("read_world", (world, key)))
        head = self.heads.get(world)
        value = None if head is None else World(self.store, head.root).get(key)
        return None if value is None else str(value)

    def set_world(self, signer: SigningKey, world: str, key: str, value: str) -> WorldCommit:
        head = self.heads.get(world)
        tree = World(self.store, None if head is None else head.root).set(key, value)
        commit = sign_commit(signer, world=world, root=tree.root, time=self.clock(), previous=head)
        self.store.put(commit.to_block())
        self.heads[world] = commit
        return commit

    async def world_edit(self, signer: SigningKey, world: str, key: str, value: str) -> str:
        self.calls.append(("world_edit", (world, key, value)))
        return str(self.set_world(signer, world, key, value).cid)

    async def balance(self, account: bytes) -> int:
        self.calls.append(("balance", account))
        return self.ledger.balance(account)

    async def account_head(self, account: bytes) -> AccountHead:
        head = self.ledger.head(account)
        if head is None:
            return AccountHead(self.ledger.genesis.cid, 0, None)
        return AccountHead(self.ledger.genesis.cid, head[0] + 1, head[1])

    async def submit_tx(self, envelope: bytes) -> str:
        self.calls.append(("submit_tx", envelope))
        try:
            accepted = self.ledger.submit(envelope)
        except TxRejected as exc:
            raise ToolError(f"ledger refused: {exc}") from exc
        assert accepted.tx is not None
        return str(accepted.tx.cid)

    async def send_agent_message(self, sender: bytes, address: str, text: str) -> str:
        """Through /n3xus/imvu/1.0.0 for real: the ask and the answer cross as frames
        between an asker and an answerer exchange (only the libp2p stream is left out)."""
        self.calls.append(("send_agent_message", (address, text)))
        other = self.agents.get(address)
        if other is None:
            raise ToolError(f"no agent at {address!r}")
        asker, answerer = AgentExchange(Role.ASKER), AgentExchange(Role.ANSWERER)
        (ask,) = answerer.receive_data(asker.send(Ask(address, sender, text)), 0.0)
        assert isinstance(ask, Ask)
        turn = await other.ask(request_from_ask(ask, PEER_B, self.clock()))
        (answer,) = asker.receive_data(answerer.send(turn.to_answer()), 0.0)
        assert isinstance(answer, Answer)
        return answer.result or f"{answer.verdict}: {answer.reason}"


class Node:
    """The parts a node gives its agents, in one LMDB environment."""

    def __init__(self, path: Path) -> None:
        self.env = open_env(path)
        self.store = BlockStore(self.env)
        self.log = CanonLog(self.env, self.store, "n3xus.net/canon/test")
        self.genesis = Genesis.create("imvu-test", [account("issuer")], SUPPLY_CAP, account("platform"))
        self.ledger = LedgerStore(self.env, self.genesis)
        self.clock = Clock()
        self.tools = NodeTools(self.store, self.ledger, self.clock)
        self.registry = AgentRegistry(self.env, self.store)
        self._issuer = AccountChain(key("issuer"), self.genesis.cid)

    def fund(self, who: bytes, amount: int) -> None:
        self.ledger.submit(self._issuer.sign(Op.ISSUE, {"to": who, "amount": amount}, time_ms=self.clock()))

    def close(self) -> None:
        self.env.close()


def fake_model_ref() -> ModelRef:
    """A model reference for tests that never load the model."""
    return ModelRef(CID.from_digest("raw", "blake3", bytes(32)), "test-model.gguf", 1)


def primitives(**overrides: Any) -> Primitives:
    settings: dict[str, Any] = {
        "actions": ["reply", "tip", "pay", "read_balance", "write_memory", "read_world",
                    "propose_world_edit", "message_agent"],
        "payees": {"alice": account("alice"), "bob": account("bob")},
        "contacts": {"echo": "echo"},
        "worlds": [WORLD],
        "spend_limit": 50,
        "spend_period_ms": 3_600_000,
        "escalate_above": 20,
        "rates": [RateLimit(("message_agent",), 3, 60_000)],
    }
    settings.update(overrides)
    return make_primitives(**settings)


ALL_TOOLS = ["agent.message", "ledger.balance", "ledger.pay", "memory.write", "world.edit", "world.read"]


def manifest(creator: str = "creator", agent: str = "nova", *, model: ModelRef | None = None,
             persona: str = "You are Nova, a cheerful stage assistant at a live music venue.",
             tools: list[str] | None = None, prims: Primitives | None = None,
             previous: Manifest | None = None, max_tokens: int = 48, time: int = T0) -> Manifest:
    return sign_manifest(
        key(creator), name=agent, persona=persona, agent=account(agent),
        model=model or fake_model_ref(), generation=Generation(max_tokens, 2048, 256),
        tools=ALL_TOOLS if tools is None else tools, primitives=prims or primitives(),
        time=time, previous=previous)


def bundled_manifest(**kwargs: Any) -> Manifest:
    from n3xus.imvu.inference import bundled_model_path

    return manifest(model=model_ref_of_file(bundled_model_path()), **kwargs)
