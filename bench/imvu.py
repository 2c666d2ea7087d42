"""IMVU agents: an agent turn against llama-cpp-python called directly.

Tokens per second of a turn (issue target: >= 0.90 of the ceiling; the headline ``ratio=``):
  ours     ``Agent.ask`` of TURNS requests on the shared ``InferenceScheduler`` in a trio
           run: request filter, prompt build, grammar-constrained greedy generation in the
           worker thread with pieces streamed to a channel, strict parse, policy, decision
           blocks, the signed canon-log entry, the memory turn and the agent state write
  ceiling  ``Llama.create_completion`` on the same loaded model with the exact prompt text
           the agent built, the same grammar (compiled once, as ours is cached), greedy
           (temperature 0), the same max_tokens, after ``reset()`` as ours does
  Both sides must produce the same output bytes (checked); the unit is generated tokens.
  The agent's manifest recalls no memory (memory_tokens 0), so every turn has the same
  prompt and the two sides do the same work.

Decision latency (printed): per turn, wall time from ``ask`` to the canon entry, median and
p95, and its non-inference part (wall minus the worker's inference time; issue target
< 5 ms), with the node's durable LMDB settings (sync on: every write transaction fsyncs)
and without (sync off); and the LMDB write transactions a durable turn commits (each
one an fsync: the turn's blocks, log entry and state pointer go in one).

The store step alone (printed, not in the headline): the last part of a durable turn (its
blocks, the signed log entry with its payload pin, the state pointer), replayed from a real
turn's own arguments: ours (one write transaction) and the previous three-step path (five
commits) each against one raw LMDB write transaction of the same bytes (the floor: one
fsync).

Four agents at once (printed, not in the headline): aggregate tokens/s of 4 agents each
asking TURNS requests concurrently against one agent asking 4 x TURNS alone. One model
decodes one request at a time, so the fair expectation is ~1.0 (no batching).

    python bench/imvu.py [--json] [--large] [--repeats N]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

import lmdb
import trio
from blake3 import blake3
from nacl.signing import SigningKey

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Pair, parser, report, run_pair  # noqa: E402
from n3xus.canon.blockstore import BlockStore  # noqa: E402
from n3xus.canon.log import CanonLog  # noqa: E402
from n3xus.imvu.inference import ModelSettings, bundled_model_path, load_model  # noqa: E402
from n3xus.imvu.manifest import Generation, make_primitives, model_ref_of_file, sign_manifest  # noqa: E402
from n3xus.imvu.prompt import Request  # noqa: E402
from n3xus.imvu.registry import AgentRegistry  # noqa: E402
from n3xus.imvu.runtime import AccountHead, Agent, ToolError, append_to_log  # noqa: E402
from n3xus.imvu.scheduler import GREEDY_SETTINGS, InferenceScheduler  # noqa: E402

# Turns per timed call (--large: more). Each is ~17 generated tokens on ~140 prompt tokens.
TURNS = 3
TURNS_LARGE = 10
AGENTS_AT_ONCE = 4
# A request the bundled model answers with a complete, valid action that needs no outside
# tool (write_memory), so every turn runs parse, policy and execution for real.
REQUEST = "Remember that the show starts at nine."
MAX_TOKENS = 32
TOKENS_TARGET = 0.90
NON_INFERENCE_TARGET_MS = 5.0
# Store steps per timed call: each is one fsync (or five on the previous path), ~ms each.
STORE_REPLAYS = 20
MAP_SIZE = 256 << 20
CONTEXT_TOKENS = 2048
THREADS = 2


def _key(name: str) -> SigningKey:
    return SigningKey(blake3(b"bench/imvu/" + name.encode()).digest())


class _NoTools:
    """The benchmark's agents only reply and remember (no outside tool); a call here would
    be a bug in the workload."""

    async def read_world(self, world: str, key: str) -> str | None:
        raise ToolError("no tools in the benchmark")

    async def world_edit(self, signer: SigningKey, world: str, key: str, value: str) -> str:
        raise ToolError("no tools in the benchmark")

    async def balance(self, account: bytes) -> int:
        raise ToolError("no tools in the benchmark")

    async def account_head(self, account: bytes) -> AccountHead:
        raise ToolError("no tools in the benchmark")

    async def submit_tx(self, envelope: bytes) -> str:
        raise ToolError("no tools in the benchmark")

    async def send_agent_message(self, sender: bytes, address: str, text: str) -> str:
        raise ToolError("no tools in the benchmark")


class Host:
    """A block store, canon log, registry and agents in one LMDB environment."""

    def __init__(self, model: Any, root: Path, name: str, sync: bool, agents: int) -> None:
        path = root / name
        path.mkdir(mode=0o700)
        self.env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=128, sync=sync)
        store = BlockStore(self.env)
        log = self.log = CanonLog(self.env, store, "n3xus.net/canon/bench")
        registry = self.registry = AgentRegistry(self.env, store)
        self.model = model
        self.scheduler = InferenceScheduler(model)
        self.clock = time.time_ns() // 1_000_000
        model_ref = model_ref_of_file(bundled_model_path())
        self.agents = []
        for index in range(agents):
            agent_key = _key(f"{name}-agent{index}")
            manifest = sign_manifest(
                _key("creator"), name=f"nova{index}", persona="You are Nova, a cheerful stage assistant.",
                agent=bytes(agent_key.verify_key), model=model_ref,
                generation=Generation(MAX_TOKENS, CONTEXT_TOKENS, 0), tools=["memory.write"],
                primitives=make_primitives(actions=["reply", "write_memory"]), time=self.clock)
            registry.create(manifest)
            self.agents.append(Agent(registry=registry, key=agent_key, log=log, scheduler=self.scheduler,
                                     tools=_NoTools()))

    def turns(self, per_agent: int, agents: int) -> list[tuple[float, Any]]:
        """Run ``per_agent`` turns on each of the first ``agents`` agents concurrently;
        (wall seconds, TurnResult) per turn."""
        results: list[tuple[float, Any]] = []
        # trio primitives belong to one trio.run: a fresh scheduler (and agent locks) per run.
        self.scheduler = InferenceScheduler(self.model)
        for agent in self.agents:
            agent.scheduler = self.scheduler
            agent._lock = trio.Lock()

        async def one_agent(agent: Agent) -> None:
            for _ in range(per_agent):
                send, receive = trio.open_memory_channel[str](MAX_TOKENS + 1)
                start = time.perf_counter()
                async with trio.open_nursery() as drain:
                    drain.start_soon(_drain, receive)
                    turn = await agent.ask(Request("user:bench", REQUEST, time.time_ns() // 1_000_000), send)
                results.append((time.perf_counter() - start, turn))

        async def run() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.scheduler.run)
                async with trio.open_nursery() as askers:
                    for agent in self.agents[:agents]:
                        askers.start_soon(one_agent, agent)
                nursery.cancel_scope.cancel()

        trio.run(run)
        return results


async def _drain(receive: trio.MemoryReceiveChannel[str]) -> None:
    async for _ in receive:
        pass


def build(args: Namespace) -> tuple[list[Pair], Any]:
    """The pairs, and a function giving the latency summary once they have run."""
    turns = TURNS_LARGE if args.large else TURNS
    model = load_model(ModelSettings(bundled_model_path(), context_tokens=CONTEXT_TOKENS, threads=THREADS))
    root = Path(tempfile.mkdtemp(prefix="n3xus-bench-imvu-"))
    import llama_cpp

    durable = Host(model, root, "durable", True, AGENTS_AT_ONCE)
    fast = Host(model, root, "fast", False, 1)
    # The exact prompt and schema the agent builds, from one warm-up turn, and the direct call.
    warm = fast.turns(1, 1)[0][1]
    prompt_block = fast.agents[0].store.get(warm.decision.prompt)
    from n3xus.imvu.prompt import decode_prompt

    prompt = decode_prompt(prompt_block)
    grammar = llama_cpp.LlamaGrammar.from_json_schema(prompt.schema, verbose=False)
    direct_kwargs = {k: v for k, v in GREEDY_SETTINGS.items() if k not in ("temp",)}
    direct_kwargs["temperature"] = 0.0

    def direct(_: Any) -> list[str]:
        outputs = []
        for _ in range(turns):
            model.reset()
            out = model.create_completion(prompt.text, max_tokens=prompt.max_tokens, grammar=grammar,
                                          **direct_kwargs)
            outputs.append(out["choices"][0]["text"])
        return outputs

    reference = direct(None)[0]
    if reference != warm.output:
        raise AssertionError(f"the agent and the direct call disagree: {warm.output!r} vs {reference!r}")
    if not warm.decision.executed:
        raise AssertionError(f"the workload's turn was not executed: {warm.output!r} {warm.decision.reason}")
    tokens = warm.decision.output_tokens * turns
    latencies: dict[str, list[tuple[float, int]]] = {"sync on": [], "sync off": []}

    def ours_fast(_: Any) -> None:
        for wall, turn in fast.turns(turns, 1):
            latencies["sync off"].append((wall, turn.decision.inference_us))

    commits: list[float] = []

    def ours_durable(_: Any) -> None:
        before = durable.env.info()["last_txnid"]
        done = durable.turns(turns, 1)
        commits.append((durable.env.info()["last_txnid"] - before) / len(done))
        for wall, turn in done:
            latencies["sync on"].append((wall, turn.decision.inference_us))

    # The store step of a durable turn, replayed with a real turn's arguments (module doc).
    stored: list[tuple[Any, ...]] = []
    agent = durable.agents[0]
    original_store = agent._store

    def spy(*args: Any) -> Any:
        stored.append(args)
        return original_store(*args)

    agent._store = spy  # type: ignore[method-assign]
    durable.turns(1, 1)
    agent._store = original_store  # type: ignore[method-assign]
    blocks, decision_block, time_ms, state, _ = stored[0]
    registry, env = durable.registry, durable.env
    raw_db = env.open_db(b"bench/raw")
    store_ms: dict[str, list[float]] = {"one transaction": [], "previous path": [], "raw LMDB txn": []}

    def timed(label: str, step: Any) -> None:
        for _ in range(STORE_REPLAYS):
            start = time.perf_counter()
            step()
            store_ms[label].append((time.perf_counter() - start) * 1000)

    def store_now(_: Any) -> None:
        timed("one transaction", lambda: agent._store(blocks, decision_block, time_ms, state,
                                                      registry.state_cid(agent.agent)))

    def previous_path() -> None:  # what _store did before: blocks, log append, pointer
        expected = registry.state_cid(agent.agent)
        registry.put_blocks(blocks)
        append_to_log(durable.log, agent.key, decision_block, time_ms)
        registry.update(state, expected, stored=True)

    def store_before(_: Any) -> None:
        timed("previous path", previous_path)

    def raw_txn() -> None:
        with env.begin(write=True) as txn:
            for data in (*blocks, decision_block):
                txn.put(blake3(data).digest(), data, db=raw_db)

    def store_floor(_: Any) -> None:
        timed("raw LMDB txn", raw_txn)

    def four_at_once(_: Any) -> None:
        durable.turns(turns, AGENTS_AT_ONCE)

    def one_alone(_: Any) -> None:
        durable.turns(turns * AGENTS_AT_ONCE, 1)

    pairs = [
        Pair("agent turn vs direct create_completion", tokens, "token", ours_fast, direct,
             target=TOKENS_TARGET, notes={"turns": turns, "tokens per turn": warm.decision.output_tokens,
                                          "prompt tokens": warm.decision.prompt_tokens}),
        Pair("agent turn (LMDB sync on) vs direct", tokens, "token", ours_durable, direct, headline=False),
        Pair("turn store step (sync on) vs 1 raw LMDB txn", STORE_REPLAYS, "store", store_now,
             store_floor, headline=False),
        Pair("previous 3-step store (sync on) vs 1 raw txn", STORE_REPLAYS, "store", store_before,
             store_floor, headline=False),
        Pair(f"{AGENTS_AT_ONCE} agents at once vs 1 agent alone", tokens * AGENTS_AT_ONCE, "token",
             four_at_once, one_alone, headline=False),
    ]
    def summarize() -> dict[str, Any]:
        extra: dict[str, Any] = {}
        for mode, samples in latencies.items():
            if not samples:
                continue
            walls = sorted(w * 1000 for w, _ in samples)
            rest = sorted(w * 1000 - us / 1000 for w, us in samples)
            extra[f"decision latency ({mode})"] = (
                f"median {statistics.median(walls):.1f} ms, p95 {_p95(walls):.1f} ms; non-inference "
                f"median {statistics.median(rest):.2f} ms, p95 {_p95(rest):.2f} ms "
                f"(target < {NON_INFERENCE_TARGET_MS} ms)")
        if store_ms["one transaction"]:
            extra["turn store step (sync on)"] = ", ".join(
                f"{label} median {statistics.median(values):.2f} ms" for label, values in store_ms.items())
        if commits:
            # LMDB write transactions committed per durable turn (each one an fsync).
            extra["LMDB commits per turn (sync on)"] = f"{statistics.median(commits):.1f}"
        extra["backend"] = "gpu" if llama_cpp.llama_supports_gpu_offload() else "cpu"
        shutil.rmtree(root, ignore_errors=True)
        return extra

    return pairs, summarize


def _p95(values: list[float]) -> float:
    return values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]


def run(argv: list[str] | None = None) -> None:
    args = parser("imvu agents benchmark").parse_args(argv)
    pairs, summarize = build(args)
    results = [run_pair(pair, args.repeats) for pair in pairs]
    report("imvu: agent turns vs llama-cpp-python", results, summarize(), args.json)


if __name__ == "__main__":
    run()
