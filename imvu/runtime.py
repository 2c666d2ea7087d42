"""The agent runtime: one turn from request to canon-log decision (specs/imvu.md §10).

``Agent.ask`` runs a turn:

1. screen the request with the manifest's request rules (a match is refused before any
   inference, and recorded);
2. queue on the shared scheduler; when the turn gets the model, read the agent's *active*
   manifest version again (hot swap: a turn queued before an upgrade runs under the new
   version, specs/imvu.md §2.3), screen again under it, and build the prompt (persona,
   recalled memory, the request; manifest.py, memory.py, prompt.py) and the action schema
   of what that version allows;
3. generate, grammar-constrained, streaming pieces to the asker;
4. parse the output strictly (a malformed output is refused: primitive ``schema``);
5. decide with the pure policy over a state snapshot taken now;
6. execute an allowed action through :class:`AgentTools` (what the node implements), hold
   an escalated one for the creator's approval, execute nothing else;
7. record the ``agent-decision`` v2 entry in the canon log, signed by the agent's key, and
   the turn in the agent's memory (linking the decision).

Steps 4–7 run under a per-agent lock with the agent's state re-read inside it, so two
concurrent turns of one agent cannot both spend the same budget. Step 7 is one LMDB write
transaction (one durable commit) when the log and the registry share an environment, as
on a node: the turn's blocks, the log entry with its payload pin, and the state pointer.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

import trio
from nacl.signing import SigningKey

from n3xus.canon.cid import CID, cid_of
from n3xus.canon.errors import VerificationError
from n3xus.canon.log import CanonLog, LogEntry
from n3xus.ledger.tx import AccountChain, Op

from .actions import Action, Kind, parse_action
from .approval import Approval
from .decision import DECISION_ENTRY_TYPE, DECISION_VERSION, Decision, OutputBlock, expected_schema
from .errors import ActionError, ApprovalError, ImvuError, RegistryError
from .manifest import Manifest
from .memory import Memory, MemoryItem
from .policy import (
    MAX_SNAPSHOT_EVENTS,
    Event,
    Outcome,
    Primitive,
    StateSnapshot,
    Verdict,
    decide,
    screen_request,
)
from .prompt import PromptBlock, Request, build_prompt, check_request
from .registry import MAX_PENDING, AgentRegistry, AgentState
from .scheduler import GenerationRequest, GenerationResult, InferenceScheduler
from .wire import MAX_RESULT_CHARS as MAX_ANSWER_CHARS
from .wire import Answer

# How much of a request and of an outcome a memory turn keeps (the decision has it all).
MEMORY_EXCERPT_CHARS: Final = 300


class ToolError(ImvuError):
    """A tool could not do what an allowed action asked (the ledger refused the
    transaction, the world refused the edit, the other agent did not answer)."""


@dataclass(frozen=True)
class AccountHead:
    network: CID  # the ledger's genesis CID
    seq: int  # the account's next transaction sequence number
    prev: CID | None  # the account's last transaction id


class AgentTools(Protocol):
    """What an agent may touch outside itself; the node implements it."""

    async def read_world(self, world: str, key: str) -> str | None: ...

    async def world_edit(self, signer: SigningKey, world: str, key: str, value: str) -> str:
        """Set ``key`` in ``world`` as a world commit signed by ``signer``; the commit CID."""
        ...

    async def balance(self, account: bytes) -> int: ...

    async def account_head(self, account: bytes) -> AccountHead: ...

    async def submit_tx(self, envelope: bytes) -> str:
        """Submit a signed ledger transaction; its id text. ToolError if refused."""
        ...

    async def send_agent_message(self, sender: bytes, address: str, text: str) -> str:
        """Ask the agent at ``address`` (this node or a peer, /n3xus/imvu/1.0.0); its answer."""
        ...


@dataclass(frozen=True)
class TurnResult:
    decision: Decision
    decision_cid: CID
    entry: CID  # the canon log entry
    action: Action | None
    result: str  # the reply text, or what the tool returned, or why nothing was done
    output: str  # the model's raw output ("" when refused before inference)

    @property
    def verdict(self) -> Outcome:
        return self.decision.verdict

    def to_answer(self) -> Answer:
        """The ``/n3xus/imvu/1.0.0`` answer for this turn (imvu/wire.py)."""
        return Answer(self.decision.verdict.value, self.decision.primitive, self.decision.reason[:MAX_ANSWER_CHARS],
                      "" if self.action is None else self.action.kind.value,
                      self.result[:MAX_ANSWER_CHARS] if self.decision.executed else "", self.decision_cid)

    def to_json(self) -> dict[str, Any]:
        return {"decision": str(self.decision_cid), "entry": str(self.entry),
                "verdict": self.decision.verdict.value, "primitive": self.decision.primitive,
                "reason": self.decision.reason, "executed": self.decision.executed,
                "action": None if self.action is None else self.action.to_map(),
                "result": self.result, "output": self.output}


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Agent:
    """One hosted agent (see the module doc). Several Agent objects share one scheduler."""

    def __init__(self, *, registry: AgentRegistry, key: SigningKey, log: CanonLog,
                 scheduler: InferenceScheduler, tools: AgentTools,
                 count_tokens: Callable[[str], int] | None = None,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.registry = registry
        self.key = key
        self.agent = bytes(key.verify_key)
        self.id = self.agent.hex()
        self.log = log
        self.scheduler = scheduler
        self.tools = tools
        self.clock = clock
        self.count_tokens = count_tokens or scheduler_token_counter(scheduler)
        self._lock = trio.Lock()
        # Decoded memory items of this agent's chain, shared by its turns (memory.py).
        self._memory_items: OrderedDict[CID, MemoryItem] = OrderedDict()
        # Telemetry since this object was made, for the node's Prometheus metrics
        # (per agent: turns by verdict, executed actions, tokens, spend, latency).
        self.stats: dict[str, int] = {
            "turns": 0, "allowed": 0, "refused": 0, "escalated": 0, "executed": 0,
            "prompt_tokens": 0, "output_tokens": 0, "spent": 0, "inference_us": 0, "total_us": 0,
        }
        registry.get(self.agent)  # fail now if the key is not a registered agent

    @property
    def store(self) -> Any:
        return self.registry.store

    # -- a turn -------------------------------------------------------------------------------

    async def ask(self, request: Request, tokens: trio.MemorySendChannel[str] | None = None) -> TurnResult:
        """Run one turn (module doc). ``tokens`` receives the output as it is generated and
        is closed when the turn ends. Cancelling the caller cancels the generation; a turn
        cancelled before its decision records nothing."""
        started = time.perf_counter()
        try:
            check_request(request, ValueError)
            state = self.registry.get(self.agent)
            if not state.enabled:
                raise RegistryError(f"agent {state.name!r} is stopped")
            manifest_cid = state.manifest
            manifest = self.registry.manifest(manifest_cid)
            request_cid = cid_of(request.to_block())  # stored with the turn's other blocks
            screened = screen_request(manifest, request.texts())
            if not screened.allowed:
                async with self._lock:
                    return await self._record(manifest_cid, manifest, request, request_cid, None, None,
                                              None, screened, started)
            turn = _PreparedTurn(self, request)
            generated = await self.scheduler.generate_when_ready(self.id, turn.prepare, tokens)
            assert turn.manifest_cid is not None and turn.manifest is not None  # prepare() ran
            async with self._lock:
                if generated is None or turn.prompt is None:  # refused under the version it ran
                    return await self._record(turn.manifest_cid, turn.manifest, request, request_cid,
                                              None, None, None, turn.screened, started)
                return await self._conclude(turn.manifest_cid, turn.manifest, request, request_cid,
                                            turn.prompt, generated, started)
        finally:
            if tokens is not None:
                await tokens.aclose()

    async def _conclude(self, manifest_cid: CID, manifest: Manifest, request: Request, request_cid: CID,
                        prompt: PromptBlock, generated: GenerationResult, started: float) -> TurnResult:
        try:
            action: Action | None = parse_action(generated.output.decode("utf-8"))
        except (ActionError, UnicodeDecodeError) as exc:
            action = None
            verdict = Verdict(Outcome.REFUSE, Primitive.SCHEMA, f"malformed action: {exc}")
        state = self.registry.get(self.agent)
        snapshot = StateSnapshot(self.clock(), state.events)
        if action is not None:
            verdict = decide(manifest, snapshot, action, manifest_cid=manifest_cid)
            if verdict.outcome is Outcome.ESCALATE and len(state.pending) >= MAX_PENDING:
                verdict = Verdict(Outcome.REFUSE, verdict.primitive, f"{verdict.reason}; too many escalations pending")
        return await self._finish(manifest_cid, manifest, request, request_cid, prompt, generated,
                                  action, snapshot, verdict, started)

    async def _finish(self, manifest_cid: CID, manifest: Manifest, request: Request, request_cid: CID,
                      prompt: PromptBlock, generated: GenerationResult, action: Action | None,
                      snapshot: StateSnapshot, verdict: Verdict, started: float,
                      approved_from: CID | None = None) -> TurnResult:
        executed, result = False, verdict.reason
        if verdict.allowed and action is not None:
            try:
                result = await self._execute(action, manifest)
                executed = True
            except ToolError as exc:
                result = f"tool failed: {exc}"
        output = OutputBlock(generated.output, generated.finish, generated.output_tokens)
        return await self._record(manifest_cid, manifest, request, request_cid, prompt, output, action,
                            verdict, started, snapshot=snapshot, executed=executed, result=result,
                            generated=generated, approved_from=approved_from)

    async def _record(self, manifest_cid: CID, manifest: Manifest, request: Request, request_cid: CID,
                prompt: PromptBlock | None, output: OutputBlock | None, action: Action | None,
                verdict: Verdict, started: float, *, snapshot: StateSnapshot | None = None,
                executed: bool = False, result: str = "", generated: GenerationResult | None = None,
                approved_from: CID | None = None) -> TurnResult:
        """Write the decision's blocks, its log entry, the memory turn and the agent state:
        the turn's blocks in one write transaction, then the log entry, then the pointer, in
        a worker thread (a durable LMDB commit waits for an fsync: milliseconds the trio loop,
        and the scheduler's dispatch with it, must not be blocked for)."""
        batch = _Batch(self.store)
        state = self.registry.get(self.agent)
        expected = self.registry.state_cid(self.agent)
        snapshot = snapshot or StateSnapshot(self.clock(), state.events)
        if batch.put(request.to_block()) != request_cid:
            raise ImvuError("the request changed during its turn")  # frozen: cannot happen
        decision = Decision(
            agent=self.agent, manifest=manifest_cid, model=manifest.model.cid, request=request_cid,
            state=batch.put(snapshot.to_block()),
            prompt=None if prompt is None else batch.put(prompt.to_block()),
            output=None if output is None else batch.put(output.to_block()),
            action=None if action is None else batch.put(action.to_block()),
            verdict=verdict.outcome, primitive=verdict.primitive.value, reason=verdict.reason,
            executed=executed, result=result if executed else "",
            prompt_tokens=0 if generated is None else generated.prompt_tokens,
            output_tokens=0 if generated is None else generated.output_tokens,
            inference_us=0 if generated is None or approved_from else generated.inference_us,
            total_us=int((time.perf_counter() - started) * 1_000_000), time=snapshot.time,
        )
        block = decision.to_block()
        decision_cid = cid_of(block)
        memory = Memory(batch, state.memory, self._memory_items)
        outcome = result if executed else f"{verdict.outcome.value}: {verdict.reason}"
        memory.append("turn", f"{request.sender} asked: {request.text[:MEMORY_EXCERPT_CHARS]} | "
                      f"outcome: {outcome[:MEMORY_EXCERPT_CHARS]}", request.sender, snapshot.time, decision_cid)
        if executed and action is not None and action.kind is Kind.WRITE_MEMORY:
            memory.append("fact", action.text, request.sender, snapshot.time, decision_cid)
        events = state.events
        if executed and action is not None:
            events = (*events, Event(snapshot.time, action.kind.value, action.amount if action.spends else 0))
        pending = tuple(p for p in state.pending if p != approved_from)
        if verdict.outcome is Outcome.ESCALATE:
            pending = (*pending, decision_cid)
        new_state = replace(state, memory=memory.head, events=_trim(events, manifest, snapshot.time),
                            pending=pending, turns=state.turns + 1)
        batch.put(new_state.to_block())
        entry = await trio.to_thread.run_sync(self._store, list(batch.blocks.values()), block,
                                              snapshot.time, new_state, expected)
        self._count(decision, action)
        return TurnResult(decision, decision_cid, entry.cid, action, result,
                          "" if output is None else output.output.decode("utf-8", "replace"))

    def _store(self, blocks: list[bytes], decision_block: bytes, time_ms: int, state: AgentState,
               expected: CID) -> LogEntry:
        registry, log = self.registry, self.log
        if log.env is not registry.env:  # separate environments: three commits, in order
            registry.put_blocks(blocks)
            entry = append_to_log(log, self.key, decision_block, time_ms)
            registry.update(state, expected, stored=True)
            return entry
        # One write transaction, so one durable commit (an fsync with the node's settings)
        # per turn: everything of the turn is written, or nothing is. LMDB's writer lock,
        # held from here to the commit, orders it with every other append to the log.
        # The entry (with the decision block) goes first: the state reaches the decision
        # through memory, and the registry's periodic recursive re-pin walks it.
        with registry.env.begin(write=True) as txn:
            head = log.head_in(txn)
            entry = log.append_in(txn, self.key, DECISION_ENTRY_TYPE, decision_block,
                                  version=DECISION_VERSION, time=max(time_ms, head.time))
            registry.commit_turn_in(txn, blocks, state, expected)
        registry.after_commit()
        return entry

    def _count(self, decision: Decision, action: Action | None) -> None:
        stats = self.stats
        stats["turns"] += 1
        stats[{Outcome.ALLOW: "allowed", Outcome.REFUSE: "refused", Outcome.ESCALATE: "escalated"}[decision.verdict]] += 1
        stats["executed"] += decision.executed
        stats["prompt_tokens"] += decision.prompt_tokens
        stats["output_tokens"] += decision.output_tokens
        stats["inference_us"] += decision.inference_us
        stats["total_us"] += decision.total_us
        if decision.executed and action is not None and action.spends:
            stats["spent"] += action.amount

    async def _execute(self, action: Action, manifest: Manifest) -> str:
        """Carry out an allowed action under the manifest version that decided it (payees
        and contacts are that version's, even if another became active since)."""
        tools = self.tools
        if action.kind is Kind.REPLY:
            return action.text
        if action.kind in (Kind.TIP, Kind.PAY):
            head = await tools.account_head(self.agent)
            chain = AccountChain(self.key, head.network, head.seq, head.prev)
            payee = manifest.primitives.payees[action.to]
            if action.kind is Kind.TIP:
                envelope = chain.sign(Op.TIP, {"to": payee, "ref": None, "amount": action.amount}, time_ms=self.clock())
            else:
                envelope = chain.sign(Op.TRANSFER, {"to": payee, "amount": action.amount}, time_ms=self.clock())
            return await tools.submit_tx(envelope)
        if action.kind is Kind.READ_WORLD:
            value = await tools.read_world(action.world, action.key)
            return "(not set)" if value is None else value
        if action.kind is Kind.PROPOSE_WORLD_EDIT:
            return await tools.world_edit(self.key, action.world, action.key, action.value)
        if action.kind is Kind.READ_BALANCE:
            return str(await tools.balance(self.agent))
        if action.kind is Kind.WRITE_MEMORY:
            return "remembered"
        if action.kind is Kind.MESSAGE_AGENT:
            return await tools.send_agent_message(self.agent, manifest.primitives.contacts[action.to], action.text)
        raise ToolError(f"no tool for {action.kind}")  # unreachable: Kind is closed

    # -- escalations --------------------------------------------------------------------------

    async def approve(self, approval: Approval) -> TurnResult:
        """Carry out an escalated action the creator approved: the policy runs again with
        the approval in the snapshot, and a new decision records the outcome."""
        from .decision import decode_decision, decode_output
        from .prompt import decode_prompt, decode_request

        async with self._lock:
            started = time.perf_counter()
            state = self.registry.get(self.agent)
            if approval.decision not in state.pending:
                raise ApprovalError("that decision is not waiting for approval")
            escalated = decode_decision(self.store.get(approval.decision))
            if escalated.manifest != state.manifest:
                raise ApprovalError("the agent's manifest changed since the escalation; ask again")
            assert escalated.prompt is not None and escalated.output is not None and escalated.action is not None
            manifest = self.registry.manifest(state.manifest)
            request = decode_request(self.store.get(escalated.request))
            prompt = decode_prompt(self.store.get(escalated.prompt))
            output = decode_output(self.store.get(escalated.output))
            action = parse_action(output.output.decode("utf-8"))
            snapshot = StateSnapshot(self.clock(), state.events, approval)
            verdict = decide(manifest, snapshot, action, manifest_cid=state.manifest)
            if not verdict.allowed:
                raise ApprovalError(f"the approval does not lift the escalation: {verdict.reason}")
            generated = GenerationResult(output.output, escalated.prompt_tokens, output.tokens, output.finish, 0)
            return await self._finish(state.manifest, manifest, request, escalated.request, prompt,
                                      generated, action, snapshot, verdict, started,
                                      approved_from=approval.decision)


# Attempts at a canon-log append when another writer moved the head in between (a node
# appends world commits and other agents' decisions from other threads too).
LOG_APPEND_ATTEMPTS: Final = 5
_LOG_LOCKS: weakref.WeakKeyDictionary[CanonLog, threading.Lock] = weakref.WeakKeyDictionary()
_LOG_LOCKS_LOCK = threading.Lock()


def append_to_log(log: CanonLog, key: SigningKey, decision_block: bytes, time_ms: int) -> LogEntry:
    """Append an agent-decision v2 entry signed by ``key``; serialized per log in this
    process, and retried if a writer outside this module moved the head meanwhile."""
    with _LOG_LOCKS_LOCK:
        lock = _LOG_LOCKS.setdefault(log, threading.Lock())
    with lock:
        for attempt in range(LOG_APPEND_ATTEMPTS):
            head = log.head()
            try:
                return log.append(key, DECISION_ENTRY_TYPE, decision_block, version=DECISION_VERSION,
                                  time=max(time_ms, head.time))
            except VerificationError:
                if attempt + 1 == LOG_APPEND_ATTEMPTS or log.head() == head:
                    raise  # not a race: the entry itself is wrong
    raise AssertionError("unreachable")


class _PreparedTurn:
    """Step 2 of a turn, run by the scheduler in its worker thread when the turn gets the
    model: reads the active manifest version then (hot swap), screens the request under
    it, recalls memory and builds the prompt. What it read is kept for the decision."""

    def __init__(self, agent: Agent, request: Request) -> None:
        self.agent = agent
        self.request = request
        self.manifest_cid: CID | None = None
        self.manifest: Manifest | None = None
        self.screened = Verdict(Outcome.ALLOW, Primitive.NONE, "")
        self.prompt: PromptBlock | None = None

    def prepare(self) -> GenerationRequest | None:
        agent, request = self.agent, self.request
        state = agent.registry.get(agent.agent)
        self.manifest_cid = state.manifest
        manifest = self.manifest = agent.registry.manifest(state.manifest)
        self.screened = screen_request(manifest, request.texts())
        if not self.screened.allowed:
            return None  # the version now active refuses it: recorded without inference
        memory = Memory(agent.store, state.memory, agent._memory_items).recall(
            request.text, manifest.generation.memory_tokens, agent.count_tokens)
        prompt = self.prompt = PromptBlock(build_prompt(manifest, request, memory), expected_schema(manifest),
                                           manifest.generation.max_tokens)
        return GenerationRequest(prompt.text, prompt.schema, prompt.max_tokens)


class _Batch:
    """Collects a turn's blocks (named as the store would name them) so they are written
    in one transaction; reads fall through to the store."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.blocks: dict[CID, bytes] = {}

    def put(self, data: bytes) -> CID:
        cid = cid_of(data)
        self.blocks[cid] = data
        return cid

    def get(self, cid: CID) -> bytes:
        data = self.blocks.get(cid)
        return self.store.get(cid) if data is None else data

    def has(self, cid: CID) -> bool:
        return cid in self.blocks or bool(self.store.has(cid))


def _trim(events: tuple[Event, ...], manifest: Manifest, now: int) -> tuple[Event, ...]:
    """Keep the events any window of the manifest can still count (bounded)."""
    p = manifest.primitives
    horizon = max([p.spend_period_ms, *(r.period_ms for r in p.rates)])
    return tuple(e for e in events if e.time > now - horizon)[-MAX_SNAPSHOT_EVENTS:]


def scheduler_token_counter(scheduler: InferenceScheduler) -> Callable[[str], int]:
    """Token counts from the scheduler's model tokenizer (read-only vocabulary lookups,
    safe beside a running decode)."""
    model = scheduler.model

    def count(text: str) -> int:
        return len(model.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    return count
