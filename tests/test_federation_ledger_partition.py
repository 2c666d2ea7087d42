"""Five CLI nodes of one network: random traffic on all of them, a partition (every link
between {n0, n1} and {n2, n3, n4} cut with ``n3xus peers ban``), a node killed and
restarted inside it, more traffic, then the partition healed (``peers unban`` and
``peers connect``): every state root agrees afterwards, and it equals none of the two
sides' roots during the partition (both sides' transactions are in it)."""

from __future__ import annotations

import random
import signal
from pathlib import Path

from test_federation_ledger_cli import (
    CONVERGE_S,
    cli,
    same_state,
    start_network,
    status,
    wait_for,
)

from conftest import CliNode, run_cli, start_cli_node

SEED = 9
FUNDS = 10_000
BAN_S = "600"


def traffic(rng: random.Random, nodes: list[CliNode], wallets: dict[int, str], rounds: int) -> None:
    """``rounds`` transfers from each node's wallet to random accounts: small ones are
    accepted, the overdrafts (``FUNDS * 2``) refused by the submitting node."""
    accounts = list(wallets.values())
    for _ in range(rounds):
        for index, node in enumerate(nodes):
            amount = rng.choice([1, 7, 50, 300, FUNDS * 2])
            done = run_cli("wallet", "send", f"w{index}", rng.choice(accounts), str(amount),
                           "--data-dir", str(node.data_dir), "--json")
            if amount > FUNDS:
                assert done.returncode != 0 and "overdraft" in done.stderr, done.stderr
            else:
                assert done.returncode == 0, done.stderr


def link(a: CliNode, b: CliNode) -> None:
    cli(a, "peers", "connect", b.listen_addr)


def test_five_nodes_partition_restart_and_heal_to_one_state_root(
        tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    rng = random.Random(SEED)
    nodes = start_network(tmp_path, cli_nodes, 5)
    link(nodes[1], nodes[2])
    link(nodes[2], nodes[3])
    link(nodes[3], nodes[4])
    wallets = {i: cli(node, "wallet", "new", f"w{i}")["account"] for i, node in enumerate(nodes)}
    for account in wallets.values():
        cli(nodes[0], "wallet", "issue", "node", account, str(FUNDS))
    wait_for(lambda: same_state(nodes), CONVERGE_S, "funding on every node")
    traffic(rng, nodes, wallets, 1)

    # Partition: ban every cross link, both ways.
    left, right = nodes[:2], nodes[2:]
    for x in left:
        for y in right:
            cli(x, "peers", "ban", y.peer_id, "--for", BAN_S)
            cli(y, "peers", "ban", x.peer_id, "--for", BAN_S)
    wait_for(lambda: not any(p["peer_id"] in {y.peer_id for y in right}
                             for x in left for p in x.api_get("/peers")["peers"]), 30,
             "no link across the partition")
    traffic(rng, nodes, wallets, 2)
    # n4 crashes and comes back inside its side of the partition.
    nodes[4].proc.send_signal(signal.SIGKILL)
    nodes[4].proc.wait()
    traffic(rng, nodes[:4], wallets, 1)
    nodes[4] = start_cli_node(tmp_path / "n4", "--bootstrap", nodes[3].listen_addr)
    cli_nodes.append(nodes[4])
    wait_for(lambda: same_state(left) and same_state(nodes[2:]), CONVERGE_S,
             "each side agrees within itself")
    roots = {status(left[0])["state_root"], status(right[0])["state_root"]}
    assert len(roots) == 2, "the partition did not separate the two sides"

    # Heal.
    for x in left:
        for y in right:
            cli(x, "peers", "unban", y.peer_id)
            cli(y, "peers", "unban", x.peer_id)
    link(nodes[1], nodes[2])
    link(nodes[0], nodes[4])
    healed = wait_for(lambda: same_state(nodes), CONVERGE_S, "one state root after healing")
    final = {status(n)["state_root"] for n in nodes}
    sizes = {status(n)["log_size"] for n in nodes}
    print(f"\nhealed in {healed:.2f} s: {len(final)} root, log sizes {sorted(sizes)}")
    assert len(final) == 1 and not final & roots
