"""The ledger through the node: wallets sign, the node validates, balances move."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio
from nacl.signing import SigningKey

from conftest import CliNode, run_cli, start_cli_node
from n3xus.canon.cid import CID
from n3xus.ledger.tx import AccountChain, Op
from n3xus.node.config import DataDir, NodeConfig
from n3xus.node.runtime import Node
from n3xus.node.services.wallets import ensure_genesis


def _ok(*args: str) -> dict:  # type: ignore[type-arg]
    res = run_cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def _fails(expect: str, *args: str) -> None:
    res = run_cli(*args)
    assert res.returncode != 0 and expect in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_sale_with_royalties_through_the_cli(tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    node = start_cli_node(tmp_path / "n")
    cli_nodes.append(node)
    d = ("--data-dir", str(node.data_dir))
    for name in ("creator", "buyer", "collector"):
        _ok("wallet", "new", name, *d)
    _fails("already exists", "wallet", "new", "creator", *d)
    _ok("wallet", "issue", "node", "buyer", "10000", *d)
    _ok("wallet", "issue", "node", "collector", "300", *d)
    artifact = str(CID("bafkr4ieojr6bxgo37viopkkrqx7k2xxbish2sbfc7xlxr2xv6ln72yu2te"))
    minted = _ok("asset", "mint", "creator", artifact, "--editions", "1", "--royalty-bps", "1000", *d)
    asset = minted["id"]
    _ok("asset", "transfer", "creator", asset, "1", "collector", *d)
    _ok("asset", "list", "collector", asset, "1", "2000", *d)
    _fails("price-mismatch", "asset", "buy", "buyer", asset, "1", "--price", "1999", *d)
    before = {w: _ok("wallet", "balance", w, *d)["balance"] for w in ("creator", "buyer", "collector", "node")}
    _ok("asset", "buy", "buyer", asset, "1", *d)
    after = {w: _ok("wallet", "balance", w, *d)["balance"] for w in ("creator", "buyer", "collector", "node")}
    # price 2000, royalty 10% = 200, split 80/20: creator 160, platform 40, seller 1800.
    assert after["buyer"] - before["buyer"] == -2000
    assert after["collector"] - before["collector"] == 1800
    assert after["creator"] - before["creator"] == 160
    assert after["node"] - before["node"] == 40
    owner = _ok("asset", "show", asset, *d)["editions"][0]["owner"]
    assert owner == _ok("wallet", "list", *d)["wallets"]["buyer"]

    _fails("overdraft", "wallet", "send", "collector", "buyer", "999999", *d)
    _fails("not-issuer", "wallet", "issue", "buyer", "buyer", "5", *d)
    _fails("unknown-asset", "asset", "list", "buyer", str(CID(minted["id"]).to_v1())[:-4] + "aaaa", "1", "5", *d)
    status = _ok("ledger", "status", *d)
    assert status["supply"] == 10300 and status["frozen_accounts"] == []
    log = _ok("ledger", "log", *d)
    assert [e["kind"] for e in log["entries"]][0] == "genesis"
    assert [e.get("op") for e in log["entries"][1:]] == [
        "issue", "issue", "mint", "transfer-asset", "list", "buy"]
    assert _ok("ledger", "tx", asset, *d)["op"] == "mint"


async def test_api_rejections_keep_state_and_equivocation_freezes(tmp_path: Path) -> None:
    dd = DataDir(tmp_path / "n")
    dd.init()
    genesis, _ = ensure_genesis(dd)
    node = Node(dd, NodeConfig(listen=("/ip4/127.0.0.1/tcp/0",), api_port=0, map_size_mib=128))
    issuer = AccountChain(SigningKey(dd.read_identity_seed()), genesis.cid)
    alice_key = SigningKey(bytes(range(32)))
    alice = AccountChain(alice_key, genesis.cid)
    bob = bytes(SigningKey(bytes(range(1, 33))).verify_key)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        headers = {"Authorization": f"Bearer {dd.read_token()}"}
        async with httpx.AsyncClient(base_url=node.api_url + "/api/v1", headers=headers) as c:
            async def submit(envelope: bytes) -> httpx.Response:
                return await c.post("/ledger/txs", content=envelope)

            ok = await submit(issuer.sign(Op.ISSUE, {"to": alice.account, "amount": 100}, time_ms=1))
            assert ok.status_code == 200, ok.text
            root_before = (await c.get("/ledger/status")).json()["state_root"]
            # A forged signature, garbage, an oversized body: each a clear 4xx, nothing changes.
            forged = bytearray(alice.sign_at(0, None, Op.TRANSFER, {"to": bob, "amount": 1}, time_ms=2))
            forged[-1] ^= 1
            r = await submit(bytes(forged))
            assert r.status_code == 422 and r.json()["error"]["code"] == "bad-signature"
            assert (await submit(b"\xa1garbage")).status_code in (400, 422)
            assert (await submit(b"x" * 20000)).status_code == 413
            assert (await c.get("/ledger/status")).json()["state_root"] == root_before
            # Equivocation: two different signed txs at the same (account, seq).
            first = alice.sign_at(0, None, Op.TRANSFER, {"to": bob, "amount": 10}, time_ms=3)
            second = alice.sign_at(0, None, Op.TRANSFER, {"to": bob, "amount": 20}, time_ms=3)
            assert (await submit(first)).status_code == 200
            r = await submit(second)
            assert r.status_code == 422 and r.json()["error"]["code"] == "equivocation"
            account = (await c.get(f"/ledger/accounts/{alice.account.hex()}")).json()
            # Ledger v2 freezes the account from the equivocated seq on: the transfer
            # at seq 0 is rolled back with it (ledger/engine.py).
            assert account["frozen"] is True and account["balance"] == 100
            proof = await c.get(f"/ledger/fraud-proofs/{alice.account.hex()}")
            assert proof.status_code == 200 and len(proof.content) > 128
            from n3xus.ledger.fraud import verify_fraud_proof

            assert verify_fraud_proof(proof.content).account == alice.account  # type: ignore[attr-defined]
            genesis_cbor = (await c.get("/ledger/genesis", params={"format": "cbor"})).content
            assert genesis_cbor == bytes(genesis)
        nursery.cancel_scope.cancel()


def test_auditor_verifies_node_proofs_offline(tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    import os
    import subprocess
    import sys

    node = start_cli_node(tmp_path / "n")
    cli_nodes.append(node)
    d = ("--data-dir", str(node.data_dir))
    _ok("wallet", "new", "ann", *d)
    _ok("wallet", "issue", "node", "ann", "500", *d)
    vkey = tmp_path / "vkey"
    vkey.write_text(run_cli("ledger", "vkey", *d).stdout)
    old = tmp_path / "old.note"
    assert run_cli("ledger", "checkpoint", "--sign", "-o", str(old), *d).returncode == 0
    tx = _ok("wallet", "send", "ann", "node", "123", *d)["id"]
    for args, out in ((("proof", tx), "tx.proof"), (("state-proof", "ann"), "ann.proof"),
                      (("consistency", old.read_text().splitlines()[1]), "cons.bundle")):
        res = run_cli("ledger", *args, "-o", str(tmp_path / out), *d)
        assert res.returncode == 0, res.stderr
    assert _ok("ledger", "export", "--car", str(tmp_path / "ledger.car"), *d)["bytes"] > 0

    # The auditor: no node, no data dir, an empty environment, another directory.
    def audit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "from n3xus.node.cli import main; main()",
                               "audit", *args, "--key", str(vkey)], capture_output=True, text=True,
                              cwd=tmp_path, env={"PATH": os.environ.get("PATH", "")}, timeout=120)

    res = audit("verify", str(tmp_path / "tx.proof"), "--json")
    assert res.returncode == 0, res.stderr
    assert tx in res.stdout
    res = audit("verify", str(tmp_path / "ann.proof"), "--json")
    assert res.returncode == 0 and "377" in res.stdout  # 500 - 123
    assert audit("consistency", str(old), str(tmp_path / "cons.bundle")).returncode == 0
    assert audit("replay", str(tmp_path / "ledger.car")).returncode == 0
    # One changed byte anywhere is detected and named, never accepted.
    for name in ("tx.proof", "ledger.car"):
        data = bytearray((tmp_path / name).read_bytes())
        data[len(data) // 2] ^= 0x04
        (tmp_path / ("bad-" + name)).write_bytes(bytes(data))
    bad = audit("verify", str(tmp_path / "bad-tx.proof"))
    assert bad.returncode != 0 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    bad = audit("replay", str(tmp_path / "bad-ledger.car"))
    assert bad.returncode != 0 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
