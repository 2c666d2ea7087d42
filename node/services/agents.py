"""The node's IMVU agents (specs/imvu.md): registry, shared model, tools, telemetry, peers.

One :class:`AgentService` per node, started in the node's nursery (:meth:`AgentService.run`).
It owns:

* the :class:`~n3xus.imvu.registry.AgentRegistry` over the node's LMDB environment and block
  store (agents, manifest versions, memory heads, pending escalations);
* the agents' own keys, ``agents/<agent key hex>.key`` in the data dir (mode 0600, like
  wallets): the node hosts the agent, so it holds the key that signs the agent's ledger
  transactions, world commits and ``agent-decision`` log entries. The *creator* key never
  comes here: manifests and approvals are signed by the creator's wallet (the CLI, a browser)
  and arrive as signed blocks;
* the model: loaded lazily, in a worker thread, on the first agent start or ask (a node with
  no agents never pays ~100 MB of RAM and a second of loading); the GGUF file is the bundled
  SmolLM2 unless ``--model PATH`` / ``[agents] model`` names another. One
  :class:`~n3xus.imvu.scheduler.InferenceScheduler` serves every agent;
* :class:`NodeAgentTools`, the :class:`~n3xus.imvu.runtime.AgentTools` over the node's real
  ledger service, canon service (worlds) and other agents, here or on peers
  (``/n3xus/imvu/1.0.0``, node/p2p/imvu.py);
* per-agent Prometheus metrics in the node's registry (turns by verdict, tokens, spend,
  turn latency) and the inference backend for ``node status``.

Lifecycle changes of an agent (upgrade, rollback, start, stop) take the agent's turn lock,
so they never interleave with a turn's compare-and-swap of the agent state. A turn queued
before an upgrade is kept and runs under the version active when it gets the model (hot
swap, specs/imvu.md §2.3; imvu/runtime.py reads the active version then).

Agent keys made by ``POST /agents/keys`` that never became an agent (the creator never
signed or sent the manifest) are removed when the service starts once they are older than
UNUSED_AGENT_KEY_TTL_S: a key file is a secret, kept no longer than it can be of use.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio
from nacl.signing import SigningKey
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from n3xus.canon.cid import CID
from n3xus.canon.codec import decode
from n3xus.imvu.actions import action_from_map
from n3xus.imvu.approval import decode_approval
from n3xus.imvu.decision import DECISION_ENTRY_TYPE, decode_decision
from n3xus.imvu.errors import ApprovalError, QueueFullError, RegistryError
from n3xus.imvu.manifest import Manifest, ModelRef, decode_manifest
from n3xus.imvu.memory import Memory, item_to_json
from n3xus.imvu.prompt import Request
from n3xus.imvu.registry import AgentRegistry, AgentState
from n3xus.imvu.runtime import AccountHead, Agent, ToolError, TurnResult
from n3xus.imvu.wire import Answer, Ask, request_from_ask
from n3xus.ledger.errors import TxRejected

from ..config import DataDir, _create_secret_file, _read_secret_file
from ..errors import ConfigError
from ..logs import get_logger

if TYPE_CHECKING:
    from n3xus.imvu.scheduler import InferenceScheduler

    from .canon import CanonService
    from .ledger import LedgerService

log = get_logger("n3xus.agents")

AGENT_KEY_DIR: Final = "agents"
AGENT_KEY_TAG: Final = "n3xus-agent-v1 ed25519 "
DEFAULT_CONTEXT_TOKENS: Final = 2048
"""The loaded model's context (manifests may ask for less; a prompt that does not fit is an
inference error): SmolLM2 was trained with 8k, 2048 holds persona, memory and a request."""
MAX_LISTED_MEMORY: Final = 256
"""Memory items a listing returns at most (the recall scan's window, memory.py)."""
MAX_LISTED_DECISIONS: Final = 1000
MESSAGE_TIMEOUT_S: Final = 120.0
"""An agent's message to another agent on this node: a cycle (A asks B, which asks A, whose
turn lock is held) would otherwise wait forever; it fails as a tool error instead."""
ADDRESS_PATTERN: Final = re.compile(r"(?:(?P<peer>12D3Koo[1-9A-HJ-NP-Za-km-z]{40,60}|Qm[1-9A-HJ-NP-Za-km-z]{44})/)?"
                                    r"(?P<name>[a-z0-9][a-z0-9-]{0,63}|[0-9a-f]{64})")
"""A contact address (manifest ``contacts``): ``NAME`` (an agent of this node) or
``PEER_ID/NAME`` (an agent on the peer with that libp2p peer id); a name may be a key in hex."""
UNUSED_AGENT_KEY_TTL_S: Final = 7 * 24 * 3600
"""How long a key from ``POST /agents/keys`` may wait for its agent's manifest: a creator
signs one within minutes (``n3xus agent create`` within a second); a week leaves room for
a manifest signed offline, by hand, and then the key is removed at the next start."""
LATENCY_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
"""A turn is ~0.5-3 s on the bundled model on two cores; queued turns wait for others."""


class UnknownAgentError(RegistryError):
    """No agent of that name (or key) on this node."""


class AgentStoppedError(RegistryError):
    """The agent exists but is stopped."""


class ModelMismatchError(ValueError):
    """A manifest pins other weights than the node's model: its turns could not be audited
    (a decision names the manifest's model), so they are not run."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- agent keys ---------------------------------------------------------------------------


def _key_path(dd: DataDir, agent: bytes) -> Path:
    return dd.path / AGENT_KEY_DIR / f"{agent.hex()}.key"


def create_agent_key(dd: DataDir) -> bytes:
    """A fresh agent key held by this node; its public key (the agent's account)."""
    seed = secrets.token_bytes(32)
    agent = bytes(SigningKey(seed).verify_key)
    path = _key_path(dd, agent)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    if not _create_secret_file(path, AGENT_KEY_TAG + base64.b64encode(seed).decode() + "\n"):
        raise ConfigError(f"agent key {path} already exists")  # 2^-256: a broken RNG
    return agent


def agent_key(dd: DataDir, agent: bytes) -> SigningKey:
    path = _key_path(dd, agent)
    if not path.exists():
        raise ConfigError(f"this node does not hold the key of agent {agent.hex()} "
                          "(make one with POST /agents/keys, `n3xus agent create` does)")
    line = _read_secret_file(path, "agent key").strip("\n")
    try:
        seed = base64.b64decode(line.removeprefix(AGENT_KEY_TAG), validate=True)
    except ValueError:
        seed = b""
    if not line.startswith(AGENT_KEY_TAG) or len(seed) != 32:
        raise ConfigError(f"agent key {path} is corrupt")
    key = SigningKey(seed)
    if bytes(key.verify_key) != agent:
        raise ConfigError(f"agent key {path} is not the key of {agent.hex()}")
    return key


def prune_unused_agent_keys(dd: DataDir, registered: set[bytes], now_s: float,
                            ttl_s: float = UNUSED_AGENT_KEY_TTL_S) -> list[bytes]:
    """Remove agent key files older than ``ttl_s`` whose agent is not ``registered``
    (module doc); the agents whose keys were removed. Other files are left alone."""
    removed: list[bytes] = []
    folder = dd.path / AGENT_KEY_DIR
    if not folder.is_dir():
        return removed
    for path in sorted(folder.glob("*.key")):
        if not re.fullmatch(r"[0-9a-f]{64}", path.stem):
            continue
        agent = bytes.fromhex(path.stem)
        if agent in registered or now_s - path.stat().st_mtime < ttl_s:
            continue
        path.unlink(missing_ok=True)
        removed.append(agent)
    return removed


# -- views --------------------------------------------------------------------------------


def model_view(ref: ModelRef) -> dict[str, Any]:
    return {"cid": str(ref.cid), "name": ref.name, "size": ref.size}


def manifest_view(cid: CID, manifest: Manifest) -> dict[str, Any]:
    p = manifest.primitives
    return {
        "cid": str(cid), "name": manifest.name, "version": manifest.version,
        "persona": manifest.persona, "creator": manifest.creator.hex(),
        "agent": manifest.agent.hex(), "model": model_view(manifest.model),
        "generation": manifest.generation.to_map(), "tools": list(manifest.tools),
        "primitives": {
            "actions": list(p.actions), "payees": {k: v.hex() for k, v in p.payees.items()},
            "contacts": dict(p.contacts), "worlds": list(p.worlds),
            "spend_limit": p.spend_limit, "spend_period_ms": p.spend_period_ms,
            "escalate_above": p.escalate_above,
            "rates": [r.to_map() for r in p.rates], "refuse": [r.to_map() for r in p.refuse],
        },
        "previous": None if manifest.previous is None else str(manifest.previous),
        "time": manifest.time, "block": manifest.to_block().hex(),
    }


# -- tools --------------------------------------------------------------------------------


class NodeAgentTools:
    """:class:`~n3xus.imvu.runtime.AgentTools` over the node's services. Blocking LMDB work
    runs in worker threads; the trio loop only waits for it."""

    def __init__(self, service: AgentService) -> None:
        self.service = service

    @property
    def canon(self) -> CanonService:
        return self.service.canon

    @property
    def ledger(self) -> LedgerService:
        return self.service.ledger

    async def read_world(self, world: str, key: str) -> str | None:
        from .canon import WorldNotFoundError

        def read() -> str | None:
            try:
                value = self.canon.world(world).get(key)
            except WorldNotFoundError:
                return None
            return None if value is None else str(value)

        return await trio.to_thread.run_sync(read)

    async def world_edit(self, signer: SigningKey, world: str, key: str, value: str) -> str:
        from n3xus.canon.errors import CanonError

        try:
            write = await trio.to_thread.run_sync(
                lambda: self.canon.world_update(world, {key: value}, [], signer=signer))
        except (CanonError, ValueError) as exc:
            raise ToolError(f"world edit refused: {exc}") from exc
        return str(write.commit_cid)

    async def balance(self, account: bytes) -> int:
        return await trio.to_thread.run_sync(self.ledger.store.balance, account)

    async def account_head(self, account: bytes) -> AccountHead:
        head = await trio.to_thread.run_sync(self.ledger.store.head, account)
        if head is None:
            return AccountHead(self.ledger.genesis.cid, 0, None)
        return AccountHead(self.ledger.genesis.cid, head[0] + 1, head[1])

    async def submit_tx(self, envelope: bytes) -> str:
        try:
            accepted = await trio.to_thread.run_sync(self.ledger.submit, envelope)
        except (TxRejected, ValueError) as exc:
            raise ToolError(f"ledger refused: {exc}") from exc
        return str(accepted.cid)

    async def send_agent_message(self, sender: bytes, address: str, text: str) -> str:
        match = ADDRESS_PATTERN.fullmatch(address)
        if match is None:
            raise ToolError(f"{address!r} is not an agent address (NAME or PEER_ID/NAME)")
        peer, name = match.group("peer"), match.group("name")
        ask = Ask(name, sender, text)
        if peer is None or peer == self.service.peer_id:
            answer = await self.service.ask_locally(ask)
        else:
            answer = await self.service.ask_remote(peer, ask)
        return answer.result or f"{answer.verdict}: {answer.reason}"


# -- metrics ------------------------------------------------------------------------------


class AgentMetrics:
    """Per-agent telemetry (label ``agent`` = the agent's name) in the node's registry."""

    def __init__(self, registry: CollectorRegistry, service: AgentService) -> None:
        self.turns = Counter("n3xus_agent_turns", "Agent turns by verdict (allow, refuse, "
                             "escalate)", ["agent", "verdict"], registry=registry)
        self.refusals = Counter("n3xus_agent_refusals", "Agent turns refused, by the primitive "
                                "that decided", ["agent", "primitive"], registry=registry)
        self.executed = Counter("n3xus_agent_actions_executed", "Agent actions carried out, by "
                                "kind", ["agent", "kind"], registry=registry)
        self.tokens = Counter("n3xus_agent_tokens", "Tokens of agent turns (prompt, output)",
                              ["agent", "kind"], registry=registry)
        self.spend = Counter("n3xus_agent_spend", "Amount agents paid or tipped (smallest units)",
                             ["agent"], registry=registry)
        self.latency = Histogram("n3xus_agent_turn_seconds", "Agent turn latency, request to "
                                 "recorded decision", ["agent"], buckets=LATENCY_BUCKETS_S,
                                 registry=registry)
        self.inference = Counter("n3xus_agent_inference_seconds", "Worker time spent generating "
                                 "for each agent", ["agent"], registry=registry)
        self.queued = Gauge("n3xus_inference_queued", "Generation jobs waiting for the model",
                            registry=registry)
        self.queued.set_function(lambda: sum(service.queued().values()))
        self.loaded = Gauge("n3xus_inference_model_loaded", "1 once the agents' model is loaded",
                            registry=registry)
        self.loaded.set_function(lambda: 1.0 if service.scheduler is not None else 0.0)

    def observe(self, name: str, turn: TurnResult) -> None:
        d = turn.decision
        self.turns.labels(name, d.verdict.value).inc()
        if d.verdict.value == "refuse":
            self.refusals.labels(name, d.primitive).inc()
        if d.executed and turn.action is not None:
            self.executed.labels(name, turn.action.kind.value).inc()
            if turn.action.spends:
                self.spend.labels(name).inc(turn.action.amount)
        self.tokens.labels(name, "prompt").inc(d.prompt_tokens)
        self.tokens.labels(name, "output").inc(d.output_tokens)
        self.latency.labels(name).observe(d.total_us / 1e6)
        self.inference.labels(name).inc(d.inference_us / 1e6)


# -- the service --------------------------------------------------------------------------


class AgentService:
    """See the module doc. ``host``/``peerbook`` (for asks to peers) are set by the node
    once its libp2p host runs; ``peer_id`` names this node in contact addresses."""

    def __init__(self, data_dir: DataDir, env: Any, canon: CanonService, ledger: LedgerService,
                 *, model_path: Path | None = None, context_tokens: int = DEFAULT_CONTEXT_TOKENS,
                 threads: int | None = None, registry: CollectorRegistry | None = None,
                 max_queued_per_agent: int | None = None) -> None:
        self.data_dir = data_dir
        self.canon = canon
        self.ledger = ledger
        self.registry = AgentRegistry(env, canon.store)
        self._model_path = model_path
        self.context_tokens = context_tokens
        self.threads = threads
        # Queued turns per agent beyond which asks are refused as busy (None: the
        # scheduler's default); read when the model loads.
        self.max_queued_per_agent = max_queued_per_agent
        self.model: Any = None
        self._build_backend: dict[str, Any] | None = None
        self.scheduler: InferenceScheduler | None = None
        self.backend: dict[str, Any] | None = None
        self.tools = NodeAgentTools(self)
        self.host: Any = None
        self.peerbook: Any = None
        self.peer_id = ""
        self.server: Any = None  # the /n3xus/imvu/1.0.0 ImvuServer (node/p2p/imvu.py)
        self._agents: dict[bytes, Agent] = {}
        self._model_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self.metrics = AgentMetrics(registry or CollectorRegistry(), self)

    # -- task ---------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; then pin every agent, free the model."""
        try:
            registered = {state.agent for state in self.registry}
            removed = await trio.to_thread.run_sync(prune_unused_agent_keys, self.data_dir, registered, time.time())
            if removed:
                log.info("unused agent keys removed", count=len(removed), keys=[a.hex() for a in removed])
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._detect_build_backend)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self.registry.close()
            if self.model is not None:
                self.model.close()

    # -- the model ------------------------------------------------------------------------
    @property
    def model_path(self) -> Path:
        if self._model_path is None:
            from n3xus.imvu.inference import bundled_model_path

            self._model_path = bundled_model_path()
        return self._model_path

    async def model_ref(self) -> ModelRef:
        """The node model's reference for manifests (its BLAKE3 CID is cached per file)."""
        from n3xus.imvu.manifest import model_ref_of_file

        return await trio.to_thread.run_sync(model_ref_of_file, self.model_path)

    async def ensure_scheduler(self) -> InferenceScheduler:
        """Load the model (once, in a worker thread) and start the scheduler."""
        async with self._model_lock:
            if self.scheduler is not None:
                return self.scheduler
            if self._nursery is None:
                raise RegistryError("the agent service is not running")
            from n3xus.imvu.inference import ModelSettings, load_model
            from n3xus.imvu.scheduler import InferenceScheduler, backend_info

            path = self.model_path
            settings = ModelSettings(path, context_tokens=self.context_tokens,
                                     **({"threads": self.threads} if self.threads else {}))
            started = time.perf_counter()
            model = await trio.to_thread.run_sync(load_model, settings)
            self.model = model
            self.backend = backend_info(model, path).to_json()
            scheduler = InferenceScheduler(model, **({"max_queued_per_agent": self.max_queued_per_agent}
                                                     if self.max_queued_per_agent else {}))
            await self._nursery.start(scheduler.run)
            self.scheduler = scheduler
            log.info("agent model loaded", path=str(path), backend=self.backend["backend"],
                     seconds=round(time.perf_counter() - started, 2))
            return scheduler

    def queued(self) -> dict[str, int]:
        return {} if self.scheduler is None else self.scheduler.queued()

    async def _detect_build_backend(self) -> None:
        """What the llama.cpp build runs on (cpu or gpu), known without loading the model;
        found once at start, in a worker thread (importing llama.cpp takes a moment)."""
        from n3xus.imvu.inference import build_backend

        try:
            self._build_backend = await trio.to_thread.run_sync(build_backend)
        except (ImportError, OSError) as exc:  # no usable llama.cpp: agents cannot run
            self._build_backend = {"backend": "unavailable", "gpu_offload": False, "system_info": str(exc)}

    def status(self) -> dict[str, Any]:
        """For ``node status``: the inference backend (the build's before the model is
        loaded, then the loaded model's) and the agents."""
        agents = self.registry.agents()
        return {
            "agents": len(agents), "enabled": sum(a.enabled for a in agents),
            "model_path": str(self._model_path) if self._model_path else "bundled",
            "model_loaded": self.scheduler is not None,
            "backend": self.backend,
            "build_backend": self._build_backend,  # None for the moment after start
            "scheduler": None if self.scheduler is None else self.scheduler.stats(),
            "peer_asks": None if self.server is None else
            {"answered": self.server.asks_answered, "refused": self.server.asks_refused},
        }

    # -- lookups --------------------------------------------------------------------------
    def state(self, name: str) -> AgentState:
        """An agent by name, or by its key in hex."""
        try:
            if re.fullmatch(r"[0-9a-f]{64}", name):
                return self.registry.get(bytes.fromhex(name))
            return self.registry.by_name(name)
        except RegistryError as exc:
            raise UnknownAgentError(str(exc)) from None

    async def _agent(self, state: AgentState) -> Agent:
        agent = self._agents.get(state.agent)
        if agent is None:
            scheduler = await self.ensure_scheduler()
            key = await trio.to_thread.run_sync(agent_key, self.data_dir, state.agent)
            # Another task may have made it meanwhile: one Agent (one turn lock) per agent.
            agent = self._agents.setdefault(state.agent, Agent(
                registry=self.registry, key=key, log=self.canon.log, scheduler=scheduler,
                tools=self.tools))
        return agent

    @asynccontextmanager
    async def _exclusive(self, agent: bytes) -> Any:
        """Hold the agent's turn lock (module doc) while changing its lifecycle state."""
        running = self._agents.get(agent)
        if running is None:
            yield
            return
        async with running._lock:  # the runtime's per-agent lock (runtime.py, steps 4-7)
            yield

    def view(self, state: AgentState, *, full: bool = False) -> dict[str, Any]:
        cid, manifest = state.manifest, self.registry.manifest(state.manifest)
        view = {**state.to_json(), "version": manifest.version, "creator": manifest.creator.hex(),
                "account": state.agent.hex(), "model": model_view(manifest.model),
                "state": str(self.registry.state_cid(state.agent)),
                "queued": self.queued().get(state.agent.hex(), 0),
                "stats": dict(self._agents[state.agent].stats) if state.agent in self._agents else None}
        if full:
            view["manifest_view"] = manifest_view(cid, manifest)
            view["pending_actions"] = [self._pending_view(p) for p in state.pending]
        return view

    def _pending_view(self, decision_cid: CID) -> dict[str, Any]:
        decision = decode_decision(self.canon.store.get(decision_cid))
        action = None if decision.action is None else \
            action_from_map(decode(self.canon.store.get(decision.action))).to_map()
        return {"decision": str(decision_cid), "action_cid": str(decision.action),
                "action": action, "primitive": decision.primitive, "reason": decision.reason,
                "time": decision.time}

    def list_agents(self) -> list[dict[str, Any]]:
        return [self.view(state) for state in self.registry.agents()]

    # -- lifecycle ------------------------------------------------------------------------
    def new_key(self) -> bytes:
        return create_agent_key(self.data_dir)

    def _check_manifest(self, block: bytes) -> Manifest:
        manifest = decode_manifest(block)  # ManifestError (a ValueError) if invalid
        agent_key(self.data_dir, manifest.agent)  # ConfigError unless this node holds the key
        return manifest

    async def _check_model(self, manifest: Manifest) -> None:
        ours = await self.model_ref()
        if manifest.model.cid != ours.cid:
            raise ModelMismatchError(f"agent {manifest.name!r} v{manifest.version} pins model "
                                     f"{manifest.model.name} ({manifest.model.cid}); this node runs "
                                     f"{ours.name} ({ours.cid}): start it with --model for that file")

    async def create(self, block: bytes) -> AgentState:
        manifest = self._check_manifest(block)
        await self._check_model(manifest)
        state = await trio.to_thread.run_sync(self.registry.create, manifest)
        log.info("agent created", agent=manifest.name, account=manifest.agent.hex())
        return state

    async def upgrade(self, name: str, block: bytes) -> AgentState:
        state = self.state(name)
        manifest = self._check_manifest(block)
        if manifest.agent != state.agent:
            raise RegistryError(f"that manifest is of agent {manifest.agent.hex()}, not {name!r}")
        await self._check_model(manifest)
        async with self._exclusive(state.agent):
            new = await trio.to_thread.run_sync(self.registry.upgrade, manifest)
        log.info("agent upgraded", agent=new.name, version=manifest.version)
        return new

    async def rollback(self, name: str) -> AgentState:
        state = self.state(name)
        async with self._exclusive(state.agent):
            return await trio.to_thread.run_sync(self.registry.rollback, state.agent)

    async def set_enabled(self, name: str, enabled: bool) -> AgentState:
        state = self.state(name)
        if enabled:
            await self._agent(state)  # `agent start` loads the model (once)
        async with self._exclusive(state.agent):
            return await trio.to_thread.run_sync(self.registry.set_enabled, state.agent, enabled)

    # -- turns ----------------------------------------------------------------------------
    def _runnable(self, name: str) -> AgentState:
        state = self.state(name)
        if not state.enabled:
            raise AgentStoppedError(f"agent {state.name!r} is stopped (`n3xus agent start {state.name}`)")
        return state

    def check_ask(self, name: str) -> AgentState:
        """Refuse before streaming starts: unknown, stopped, or a full queue."""
        state = self._runnable(name)
        scheduler = self.scheduler
        if scheduler is not None and self.queued().get(state.agent.hex(), 0) >= scheduler.max_queued_per_agent:
            raise QueueFullError(f"agent {state.name!r} has {scheduler.max_queued_per_agent} "
                                 "requests queued; try again later")
        return state

    async def precheck(self, name: str) -> AgentState:
        """What an ask is refused for before it starts: unknown, stopped, busy, or an agent
        whose manifest pins other weights than this node's model."""
        state = self.check_ask(name)
        await self._check_model(self.registry.manifest(state.manifest))
        return state

    async def ask(self, name: str, request: Request,
                  tokens: trio.MemorySendChannel[str] | None = None) -> TurnResult:
        try:
            # The decision will name the manifest's model: the weights must be those.
            state = await self.precheck(name)
            agent = await self._agent(state)
        except BaseException:
            if tokens is not None:
                await tokens.aclose()
            raise
        turn = await agent.ask(request, tokens)
        self.metrics.observe(state.name, turn)
        return turn

    async def approve(self, name: str, block: bytes) -> TurnResult:
        state = self.state(name)
        approval = decode_approval(block)
        if approval.agent != state.agent:
            raise ApprovalError(f"that approval is for agent {approval.agent.hex()}, not {name!r}")
        await self._check_model(self.registry.manifest(state.manifest))
        agent = await self._agent(state)
        turn = await agent.approve(approval)
        self.metrics.observe(state.name, turn)
        return turn

    async def ask_locally(self, ask: Ask) -> Answer:
        """An agent-to-agent ask on this node (the tools' send_agent_message); every failure
        of the other agent's turn is a tool error of the asking one."""
        from n3xus.imvu.errors import ImvuError
        from n3xus.imvu.inference import InferenceError

        sender = f"agent:{ask.sender.hex()}"
        try:
            if self.state(ask.agent).agent == ask.sender:
                raise ToolError("an agent cannot message itself")
            with trio.fail_after(MESSAGE_TIMEOUT_S):
                turn = await self.ask(ask.agent, Request(sender, ask.text, now_ms(), ask.context))
        except trio.TooSlowError:
            raise ToolError(f"agent {ask.agent!r} did not answer within {MESSAGE_TIMEOUT_S:.0f} s") from None
        except ToolError:
            raise
        except (ImvuError, InferenceError, ValueError) as exc:
            raise ToolError(f"agent {ask.agent!r}: {exc}") from exc
        return turn.to_answer()

    async def ask_remote(self, peer_id: str, ask: Ask) -> Answer:
        from ..p2p.imvu import PeerAskError, ask_peer

        if self.host is None:
            raise ToolError("this node has no libp2p host")
        try:
            return await ask_peer(self.host, self.peerbook, peer_id, ask)
        except PeerAskError as exc:
            raise ToolError(str(exc)) from exc

    async def answer_peer(self, ask: Ask, peer_id: str,
                          tokens: trio.MemorySendChannel[str] | None) -> Answer:
        """The ``/n3xus/imvu/1.0.0`` answerer (node/p2p/imvu.py)."""
        from n3xus.protocol.codes import ErrorCode

        from ..p2p.imvu import AgentRefusal

        try:
            self.check_ask(ask.agent)
        except UnknownAgentError as exc:
            if tokens is not None:
                await tokens.aclose()
            raise AgentRefusal(ErrorCode.UNKNOWN_AGENT, str(exc)) from None
        except AgentStoppedError as exc:
            if tokens is not None:
                await tokens.aclose()
            raise AgentRefusal(ErrorCode.AGENT_STOPPED, str(exc)) from None
        except QueueFullError as exc:
            if tokens is not None:
                await tokens.aclose()
            raise AgentRefusal(ErrorCode.BUSY, str(exc)) from None
        from n3xus.imvu.errors import ImvuError
        from n3xus.imvu.inference import InferenceError

        try:
            turn = await self.ask(ask.agent, request_from_ask(ask, peer_id, now_ms()), tokens)
        except QueueFullError as exc:
            raise AgentRefusal(ErrorCode.BUSY, str(exc)) from None
        except (ImvuError, InferenceError, ValueError) as exc:  # never the asker's fault
            log.warning("an agent turn for a peer failed", agent=ask.agent, peer_id=peer_id,
                        error=str(exc))
            raise AgentRefusal(ErrorCode.INTERNAL, "the turn failed on the answering node") from None
        return turn.to_answer()

    # -- reading --------------------------------------------------------------------------
    def memory(self, name: str, limit: int) -> list[dict[str, Any]]:
        state = self.state(name)
        items = Memory(self.canon.store, state.memory).items(min(limit, MAX_LISTED_MEMORY))
        return [item_to_json(cid, item) for cid, item in items]

    def decisions(self, name: str, limit: int) -> list[dict[str, Any]]:
        """The agent's decisions, newest first, from the canon log (entries it signed)."""
        state = self.state(name)
        return list(self._decisions(state.agent, min(limit, MAX_LISTED_DECISIONS)))

    def _decisions(self, agent: bytes, limit: int) -> Iterator[dict[str, Any]]:
        log_ = self.canon.log
        found = 0
        for index in range(len(log_) - 1, -1, -1):
            if found >= limit:
                return
            entry = log_.entry(index)
            if entry.author != agent or entry.type != DECISION_ENTRY_TYPE:
                continue
            decision = decode_decision(self.canon.store.get(entry.payload))
            found += 1
            yield {"index": index, "entry": str(entry.cid), "decision": str(entry.payload),
                   **decision.to_json()}
