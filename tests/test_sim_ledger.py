"""The deterministic simulation of ledger federation (protocol/sim) and the sync core it
drives (protocol/sync): small seeded networks with loss, duplication, reordering, a
partition and crashes converge to one root, equal to a ledger fed the union of all entries
(in memory and in LMDB); a seed replays exactly; without anti-entropy they do not converge
(so the check can fail); the sync messages decode strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sync_support import all_messages

from n3xus.ledger.store import LedgerStore
from n3xus.protocol.errors import MessageError
from n3xus.protocol.sim.__main__ import main as sim_main
from n3xus.protocol.sim.ledger import SimConfig, Simulation, simulate
from n3xus.protocol.sync import ledger as sync_ledger
from n3xus.protocol.sync.messages import Message, decode_message, encode_message

SMALL = {"nodes": 25, "users": 8, "transfers": 40, "double_spends": 2, "races": 1,
         "partitions": 1, "crashes": 3, "traffic_ms": 15_000, "settle_ms": 40_000}


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_small_networks_converge_despite_faults(seed: int) -> None:
    result = simulate(SimConfig(seed=seed, **SMALL))
    assert result.converged, result.summary()
    assert len(set(result.roots)) == 1 and result.roots[0] == result.reference_root
    stats = result.stats
    assert stats["lost"] > 0 and stats["duplicated"] > 0 and stats["cut"] > 0
    assert stats["to_down"] > 0 and stats["replays"] > 0  # crashes and late arrivals happened


def test_networks_with_more_accounts_than_one_listing_converge() -> None:
    """80 accounts: more than a listed range holds (16), so anti-entropy splits the root
    and queries sub-ranges (range reconciliation, ledger.md §14.3) under the same faults."""
    sim = Simulation(SimConfig(seed=7, **{**SMALL, "nodes": 16, "users": 80, "transfers": 120}))
    result = sim.run()
    assert result.converged, result.summary()
    assert sum(sync.counters["descents"] for sync in sim.syncs) > 0
    assert result.stats["lost"] > 0 and result.stats["to_down"] > 0


def test_conflicts_resolve_the_same_everywhere() -> None:
    sim = Simulation(SimConfig(seed=5, **SMALL))
    result = sim.run()
    assert result.converged, result.summary()
    assert result.stats["frozen"] >= 1  # a double spend was signed and caught everywhere
    owners = {bytes(v) for ledger in sim.ledgers for k, v in ledger.state.items() if k[:1] == b"O"}
    assert len(owners) >= 1
    # Every node has the same frozen accounts, owners and balances (the roots agree), and
    # supply equals the sum of balances on every node.
    for ledger in sim.ledgers:
        supply = int.from_bytes(ledger.state.get(b"S", b""), "big")
        assert supply == sum(int.from_bytes(v, "big") for k, v in ledger.state.items()
                             if k[:1] == b"B")


def test_a_seed_replays_exactly() -> None:
    first = simulate(SimConfig(seed=9, **SMALL))
    again = simulate(SimConfig(seed=9, **SMALL))
    other = simulate(SimConfig(seed=10, **SMALL))
    assert (first.trace, first.roots, first.stats) == (again.trace, again.roots, again.stats)
    assert other.trace != first.trace


def test_without_anti_entropy_lossy_networks_diverge(monkeypatch: pytest.MonkeyPatch) -> None:
    def tick_without_digest(self: sync_ledger.LedgerSync, now_ms: int) -> list[Any]:
        return self.announce() if self.ledger.release(now_ms) else []

    monkeypatch.setattr(sync_ledger.LedgerSync, "tick", tick_without_digest)
    result = simulate(SimConfig(seed=3, **{**SMALL, "partitions": 2}, loss=0.3))
    assert not result.converged


def test_the_union_in_lmdb_has_the_simulated_root(tmp_path: Path) -> None:
    sim = Simulation(SimConfig(seed=6, **SMALL))
    result = sim.run()
    assert result.converged
    env = lmdb.open(str(tmp_path / "union"), max_dbs=64, map_size=1 << 28)
    try:
        store = LedgerStore(env, sim.genesis)
        for ledger in sim.ledgers[:3]:  # three logs in three arrival orders
            for start in range(1, len(ledger.log), 7):
                store.ingest(ledger.log[start:start + 7])
        assert store.state_root() == result.reference_root
    finally:
        env.close()


def test_the_command_line_runs_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main(["--nodes", "8", "--seed", "4", "--settle-ms", "30000"]) == 0
    assert "converged=True" in capsys.readouterr().out


# --- messages ----------------------------------------------------------------------------

messages = all_messages


@given(messages)
def test_messages_round_trip(message: Message) -> None:
    assert decode_message(encode_message(message)) == message


@settings(max_examples=300)
@given(messages, st.data())
def test_damaged_messages_fail_cleanly(message: Message, data: st.DataObject) -> None:
    encoded = encode_message(message)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(MessageError):
        decode_message(encoded[:cut])
    position = data.draw(st.integers(0, len(encoded) - 1))
    flipped = bytearray(encoded)
    flipped[position] ^= 1 << data.draw(st.integers(0, 7))
    try:
        decoded = decode_message(bytes(flipped))
    except MessageError as exc:
        assert isinstance(exc, ValueError)
    else:
        assert encode_message(decoded) == bytes(flipped)  # what decodes is canonical


def test_messages_refuse_what_the_limits_forbid() -> None:
    for bad in (
        {"t": "digest", "b": [b"\x00" * 32] * 16},  # 1.0.0's, gone in 2.0.0
        {"t": "query", "r": []},
        {"t": "query", "r": [[b"\x01", 1, b"\x00" * 16]]},
        {"t": "pull", "a": b"\x01" * 31, "s": 0},
        {"t": "pull", "a": b"\x01" * 32, "s": -1},
        {"t": "gossip", "e": [b""]},
        {"t": "gossip", "e": [b"x"] * 257},  # MAX_GOSSIP_ENTRIES + 1
        {"t": "gossip", "e": []},
        {"t": "summary", "r": [{"p": b"", "d": 0, "a": [[b"\x01" * 32, b"\x02" * 32, 0]]}]},
        {"t": "summary", "r": [{"p": b"", "d": 0}]},
        {"t": "chain", "a": b"\x01" * 32, "e": [], "x": 1},
        {"t": "burn"},
        [1, 2],
    ):
        from n3xus.canon.codec import encode

        with pytest.raises(MessageError):
            decode_message(encode(bad))


def test_lmdb_stores_catch_up_through_anti_entropy_alone(tmp_path: Path) -> None:
    """The sync core over two real LedgerStores: the second was down while the first took
    300 transactions (longer than one chain message), and catches up by digests, summaries
    and pulls only (every message through its DAG-CBOR bytes)."""
    from ledger_support import account, key, make_genesis

    from n3xus.ledger.tx import AccountChain, Op
    from n3xus.protocol.sync.ledger import LedgerSync

    genesis = make_genesis()
    issuer = AccountChain(key("issuer"), genesis.cid)
    alice = AccountChain(key("alice"), genesis.cid)
    entries = [issuer.sign(Op.ISSUE, {"to": alice.account, "amount": 10**6}, time_ms=1)]
    entries += [alice.sign(Op.TRANSFER, {"to": account(f"r{n % 7}"), "amount": 1 + n},
                           time_ms=2 + n) for n in range(300)]
    envs = [lmdb.open(str(tmp_path / name), max_dbs=64, map_size=1 << 28) for name in "ab"]
    try:
        stores = [LedgerStore(env, genesis) for env in envs]
        stores[0].ingest(entries)
        syncs = [LedgerSync(store) for store in stores]
        syncs[0].add_peer(1)
        syncs[1].add_peer(0)
        queue: list[tuple[int, int, bytes]] = [(1, 0, encode_message(m)) for _, m in syncs[1].tick(0)]
        rounds = 0
        while queue and rounds < 10_000:
            source, target, data = queue.pop(0)
            rounds += 1
            for peer, reply in syncs[target].receive(source, decode_message(data)):
                queue.append((target, peer, encode_message(reply)))
            if not queue:  # a new anti-entropy round, as the node's timer would start
                queue = [(1, 0, encode_message(m)) for _, m in syncs[1].tick(0)]
                if syncs[0].digest() == syncs[1].digest():
                    break
        assert syncs[0].digest() == syncs[1].digest()
        assert stores[1].state_root() == stores[0].state_root()
        assert stores[1].balance(alice.account) == stores[0].balance(alice.account)
        assert syncs[1].counters["pulled"] >= 301 and rounds > 5
    finally:
        for env in envs:
            env.close()
