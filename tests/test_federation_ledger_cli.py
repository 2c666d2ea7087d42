"""Ledger federation between real CLI nodes (``n3xus node start``, one process each, on
127.0.0.1; B and C join A's network with ``node init --genesis``): a transfer made on A
reaches B and C with the same balances and state root within a second; an asset bought on
C pays its creator and the platform, visible with ``wallet balance`` on A; C killed while
transactions are made catches up after its restart by itself; a double spend submitted to
A and B at the same moment ends the same way everywhere (both void, the account frozen),
and ``n3xus audit verify`` checks the proofs of two nodes offline."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from conftest import CliNode, run_cli, start_cli_node
from conftest import wait_for as wait_for_every
from n3xus.ledger.rules import sale_payout

POLL_S = 0.02
CONVERGE_S = 60.0
PROPAGATION_TARGET_S = 1.0


def cli(node: CliNode, *args: str) -> Any:
    done = run_cli(*args, "--data-dir", str(node.data_dir), "--json")
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return json.loads(done.stdout)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Seconds until ``condition`` held, checked every :data:`POLL_S` (propagation is timed)."""
    return wait_for_every(condition, seconds, what, poll_s=POLL_S)


def status(node: CliNode) -> dict[str, Any]:
    return dict(node.api_get("/ledger/status"))


def same_state(nodes: list[CliNode]) -> bool:
    views = [status(n) for n in nodes]
    return len({(v["state_root"], v["supply"]) for v in views}) == 1


def balance(node: CliNode, account: str) -> int:
    return int(node.api_get(f"/ledger/accounts/{account}")["balance"])


def start_network(tmp_path: Path, cli_nodes: list[CliNode], count: int) -> list[CliNode]:
    first = start_cli_node(tmp_path / "n0")
    cli_nodes.append(first)
    nodes = [first]
    for index in range(1, count):
        node = start_cli_node(tmp_path / f"n{index}", "--bootstrap", first.listen_addr,
                              genesis=first.data_dir / "genesis.cbor")
        cli_nodes.append(node)
        nodes.append(node)
    wait_for(lambda: all(len(n.api_get("/peers")["peers"]) >= 1 for n in nodes), 30,
             "every node has a peer")
    return nodes


def test_transfer_royalties_and_catch_up_across_three_cli_nodes(
        tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    a, b, c = start_network(tmp_path, cli_nodes, 3)
    alice = cli(a, "wallet", "new", "alice")["account"]
    bob = cli(b, "wallet", "new", "bob")["account"]
    cli(a, "wallet", "issue", "node", "alice", "1000000")
    wait_for(lambda: same_state([a, b, c]), CONVERGE_S, "the issue on every node")

    # 1. A transfer on A: the same balances and state root on B and C within a second.
    sent = cli(a, "wallet", "send", "alice", bob, "250")
    root_a = status(a)["state_root"]
    started = time.monotonic()
    elapsed = wait_for(lambda: all(status(n)["state_root"] == root_a for n in (b, c)), 10,
                       "the transfer's state root on B and C")
    print(f"\ntransfer {sent['id']}: same state root on B and C {elapsed * 1000:.0f} ms after "
          "the submit returned on A")
    assert elapsed < PROPAGATION_TARGET_S, f"took {elapsed:.3f} s"
    assert time.monotonic() - started < 10
    for node in (a, b, c):
        assert balance(node, bob) == 250 and balance(node, alice) == 1_000_000 - 250

    # 2. An asset minted and listed on A, bought on C, resold on C: the creator's royalty
    #    and the platform's fee show with `wallet balance` on A.
    carol = cli(a, "wallet", "new", "carol")["account"]
    dave = cli(c, "wallet", "new", "dave")["account"]
    erin = cli(c, "wallet", "new", "erin")["account"]
    cli(a, "wallet", "issue", "node", dave, "10000")
    cli(a, "wallet", "issue", "node", erin, "10000")
    asset = cli(a, "asset", "mint", "carol", sent["id"], "--editions", "1", "--royalty-bps",
                "1000", "--creator-bps", "8000")["asset"]
    cli(a, "asset", "list", "carol", asset, "1", "1000")
    wait_for(lambda: same_state([a, b, c]), CONVERGE_S, "the listing on C")
    platform_before = int(cli(a, "wallet", "balance", "node")["balance"])
    cli(c, "asset", "buy", "dave", asset, "1")
    cli(c, "asset", "list", "dave", asset, "1", "2000")
    cli(c, "asset", "buy", "erin", asset, "1")
    wait_for(lambda: same_state([a, b, c]), CONVERGE_S, "the sales on every node")
    first, resale = sale_payout(1000, 1000, 2000), sale_payout(2000, 1000, 2000)
    carol_expected = first.seller + first.creator + resale.creator
    assert int(cli(a, "wallet", "balance", carol)["balance"]) == carol_expected
    assert int(cli(a, "wallet", "balance", "node")["balance"]) == \
        platform_before + first.platform + resale.platform
    assert int(cli(a, "wallet", "balance", dave)["balance"]) == 10000 - 1000 + resale.seller
    assert a.api_get(f"/ledger/assets/{asset}")["editions"][0]["owner"] == erin
    print(f"royalties on A: carol {carol_expected}, platform +{first.platform + resale.platform}")

    # 3. C is killed; transactions are made on A and B meanwhile; C restarted catches up.
    c.proc.send_signal(signal.SIGKILL)
    c.proc.wait()
    cli(a, "wallet", "send", "alice", bob, "10")
    cli(a, "wallet", "send", "alice", carol, "20")
    cli(b, "wallet", "send", "bob", alice, "5")
    wait_for(lambda: same_state([a, b]), CONVERGE_S, "A and B agree while C is down")
    c = start_cli_node(tmp_path / "n2", "--bootstrap", a.listen_addr)
    cli_nodes.append(c)
    caught = wait_for(lambda: same_state([a, b, c]), CONVERGE_S, "C caught up after restart")
    print(f"C caught up {caught:.2f} s after its restart")
    assert balance(c, bob) == 250 + 10 - 5 and status(c)["log_size"] == status(a)["log_size"]
    # A node with gossip streams open still stops cleanly and promptly.
    code, seconds, stderr = a.stop(signal.SIGTERM)
    assert code == 0 and seconds < 5.0 and "Traceback" not in stderr, stderr[-2000:]


def test_double_spend_on_two_nodes_freezes_everywhere_and_audits_offline(
        tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    from nacl.signing import SigningKey

    from n3xus.canon.cid import CID
    from n3xus.ledger.tx import AccountChain, Op
    from n3xus.node.config import DataDir
    from n3xus.node.services.wallets import wallet_key

    a, b, c = start_network(tmp_path, cli_nodes, 3)
    mallory = cli(a, "wallet", "new", "mallory")["account"]
    # The same key on A and B: its owner submits to both.
    (b.data_dir / "wallets").mkdir(mode=0o700, exist_ok=True)
    shutil.copy2(a.data_dir / "wallets" / "mallory.key", b.data_dir / "wallets" / "mallory.key")
    bob = cli(b, "wallet", "new", "bob")["account"]
    carol = cli(c, "wallet", "new", "carol")["account"]
    cli(a, "wallet", "issue", "node", "mallory", "1000")
    wait_for(lambda: same_state([a, b, c]), CONVERGE_S, "mallory funded everywhere")

    key: SigningKey = wallet_key(DataDir(a.data_dir), "mallory")
    state = a.api_get(f"/ledger/accounts/{mallory}")
    network = CID(a.api_get("/ledger/genesis")["cid"])

    def envelope(to: str) -> bytes:
        chain = AccountChain(key, network, seq=state["next_seq"],
                             prev=CID(state["prev"]) if state["prev"] else None)
        return chain.sign(Op.TRANSFER, {"to": bytes.fromhex(to), "amount": 800},
                          time_ms=time.time_ns() // 1_000_000)

    spends = {a.api_url: envelope(bob), b.api_url: envelope(carol)}
    answers: dict[str, int] = {}
    gate = threading.Barrier(2)

    def submit(node: CliNode) -> None:
        gate.wait()
        response = httpx.post(f"{node.api_url}/api/v1/ledger/txs", content=spends[node.api_url],
                              headers={"Authorization": f"Bearer {node.api_token}",
                                       "Content-Type": "application/vnd.ipld.dag-cbor"},
                              timeout=10)
        answers[node.api_url] = response.status_code

    threads = [threading.Thread(target=submit, args=(n,)) for n in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"\ndouble spend answers: {sorted(answers.values())}")
    wait_for(lambda: all(mallory in status(n)["frozen_accounts"] for n in (a, b, c))
             and same_state([a, b, c]), CONVERGE_S, "mallory frozen everywhere, same state")
    for node in (a, b, c):  # spec v2 §9: both conflicting transactions are void
        assert balance(node, mallory) == 1000
        assert balance(node, bob) == 0 and balance(node, carol) == 0

    # Offline audit of bundles from different nodes, each against its node's key.
    bundles: list[tuple[CliNode, list[str]]] = [
        (a, ["ledger", "state-proof", mallory]),
        (b, ["ledger", "state-proof", carol]),
        (c, ["ledger", "state-proof", bob]),
    ]
    for node, ids in ((a, [_tx_id(spends[a.api_url])]), (b, [_tx_id(spends[b.api_url])])):
        bundles += [(node, ["ledger", "proof", tx]) for tx in ids]
    for index, (node, command) in enumerate(bundles):
        vkey = tmp_path / f"vkey{index}"
        bundle = tmp_path / f"bundle{index}"
        fetched = run_cli("ledger", "vkey", "-o", str(vkey), "--data-dir", str(node.data_dir))
        assert fetched.returncode == 0, fetched.stderr
        made = run_cli(*command, "-o", str(bundle), "--data-dir", str(node.data_dir))
        assert made.returncode == 0, made.stderr
        checked = run_cli("audit", "verify", str(bundle), "--key", str(vkey), "--json")
        assert checked.returncode == 0, f"{command}: {checked.stdout} {checked.stderr}"
        print(f"audit verify {' '.join(command[:2])} from {node.data_dir.name}: ok")


def _tx_id(envelope: bytes) -> str:
    from n3xus.ledger.tx import decode_tx

    return str(decode_tx(envelope).cid)
