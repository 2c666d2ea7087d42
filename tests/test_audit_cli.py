"""``n3xus audit verify | consistency | replay``: offline, no node and no data dir; what
was proved on stdout (``--json``: one document), and any damaged file as one line
``error: <part>...`` with exit 1."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest
from ledger_support import account
from tlog_support import LOG_KEY, OTHER_KEY, LedgerNet, build_history, flips, open_env

import n3xus.node.cli.audit  # noqa: F401 - registers the `audit` group on the CLI
from n3xus.canon.note import make_vkey
from n3xus.ledger.audit import open_checkpoint
from n3xus.ledger.export import export_ledger
from n3xus.node.cli import main

# The audit commands must work on a machine with no node: this interpreter line imports
# only the CLI (as the lead's entry point will) and never touches a data dir.
AUDIT_ARGV = [sys.executable, "-c",
              "import n3xus.node.cli.audit; from n3xus.node.cli import main; main()", "audit"]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[lmdb.Environment]:
    environment = open_env(tmp_path / "ledger")
    yield environment
    environment.close()


@pytest.fixture
def files(env: lmdb.Environment, tmp_path: Path) -> dict[str, Path]:
    """A ledger with history, and every kind of file an auditor gets, written to disk."""
    net = LedgerNet(env)
    history = build_history(net)
    old = net.tlog.checkpoint(LOG_KEY)
    old_size = open_checkpoint(old, net.vkey).size
    net.fund("zed", 77)
    new = net.tlog.checkpoint(LOG_KEY)
    out = tmp_path / "out"
    out.mkdir()
    contents = {
        "vkey": net.vkey + "\n",
        "old.checkpoint": old,
        "new.checkpoint": new,
        "tx.tlog-proof": net.tlog.inclusion_bundle(history.transfer_id),
        "balance.proof": net.tlog.state_proof_bundle(account("zed")),
        "zero.proof": net.tlog.state_proof_bundle(account("nobody")),
        "owner.proof": net.tlog.state_proof_bundle((history.asset, 2)),
        "consistency.proof": net.tlog.consistency_bundle(old_size),
        "hashes.txt": "".join(base64.b64encode(h).decode() + "\n"
                              for h in net.tlog.consistency_proof(old_size)),
    }
    paths = {name: out / name for name in contents}
    for name, text in contents.items():
        paths[name].write_text(text, encoding="utf-8")
    with open(out / "ledger.car", "wb") as stream:
        export_ledger(net.store, net.tlog, stream, extra_checkpoints=[old], page_entries=8)
    paths["ledger.car"] = out / "ledger.car"
    files_meta = {"transfer": str(history.transfer_id), "asset": str(history.asset)}
    (out / "meta.json").write_text(json.dumps(files_meta))
    paths["meta.json"] = out / "meta.json"
    return paths


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(["audit", *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_verify_a_transaction_bundle(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    meta = json.loads(files["meta.json"].read_text())
    key = files["vkey"].read_text().strip()
    code, out, err = run(capsys, "verify", str(files["tx.tlog-proof"]), "--key", key)
    assert (code, err) == (0, "")
    assert f"OK  transaction {meta['transfer']}" in out
    assert f"to: {account('bob').hex()}" in out and "amount: 250" in out
    code, out, _ = run(capsys, "verify", str(files["tx.tlog-proof"]), "--key",
                       str(files["vkey"]), "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["proof"] == "inclusion"
    assert data["entry"]["tx"]["id"] == meta["transfer"]
    assert data["entry"]["tx"]["args"] == {"to": account("bob").hex(), "amount": 250}
    assert data["checkpoint"]["signature_checked"] is True


def test_verify_state_bundles(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    key = str(files["vkey"])
    code, out, _ = run(capsys, "verify", str(files["balance.proof"]), "--key", key)
    assert code == 0 and f"OK  balance of {account('zed').hex()} is 77 at checkpoint" in out
    code, out, _ = run(capsys, "verify", str(files["zero.proof"]), "--key", key, "--json")
    assert json.loads(out)["fact"] == {"kind": "balance", "account": account("nobody").hex(),
                                       "balance": 0}
    code, out, _ = run(capsys, "verify", str(files["owner.proof"]), "--key", key)
    assert code == 0 and f"is owned by {account('dave').hex()}" in out


def test_consistency_with_a_bundle_or_a_separate_proof(files: dict[str, Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    key = str(files["vkey"])
    code, out, err = run(capsys, "consistency", str(files["old.checkpoint"]),
                         str(files["consistency.proof"]), "--key", key)
    assert (code, err) == (0, "") and "OK  the log of size" in out
    code, out, _ = run(capsys, "consistency", str(files["old.checkpoint"]),
                       str(files["new.checkpoint"]), "--key", key, "--proof",
                       str(files["hashes.txt"]), "--json")
    data = json.loads(out)
    assert code == 0 and data["new"]["size"] == data["old"]["size"] + 1
    code, out, err = run(capsys, "consistency", str(files["old.checkpoint"]),
                         str(files["new.checkpoint"]), "--key", key)
    assert code == 1 and out == "" and err.startswith("error: consistency: a consistency proof")
    assert err.count("\n") == 1


def test_replay_an_export(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "replay", str(files["ledger.car"]), "--key", str(files["vkey"]),
                         "--json")
    data = json.loads(out)
    assert (code, err) == (0, "") and data["ok"] is True
    assert [c["signature_checked"] for c in data["checkpoints"]] == [True, True]
    assert data["state_root"] == data["checkpoints"][-1]["state_root"]
    code, out, _ = run(capsys, "replay", str(files["ledger.car"]))
    assert code == 0 and "signatures were NOT checked" in out


def test_damaged_files_give_one_line_errors_naming_the_part(files: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    key = str(files["vkey"])
    damaged = tmp_path / "damaged"
    for name, command in (("tx.tlog-proof", "verify"), ("balance.proof", "verify"),
                          ("ledger.car", "replay")):
        data = files[name].read_bytes()
        for position, changed in flips(data, step=max(1, len(data) // 40)):
            damaged.write_bytes(changed)
            code, out, err = run(capsys, command, str(damaged), "--key", key)
            assert code == 1 and out == "", (name, position)
            assert err.startswith("error: ") and err.count("\n") == 1, err
            assert err.split(":")[1].strip().split(" ")[0] in {
                "format", "note-signature", "checkpoint", "proof-path", "entry", "entry-signature",
                "state-proof", "car-frame", "block-hash", "manifest"}, err


def test_usage_errors(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "verify", str(files["tx.tlog-proof"]))
    assert code == 2 and "--key" in err
    code, _, err = run(capsys, "verify", str(files["tx.tlog-proof"]), "--key", "not-a-key")
    assert code == 2 and "--key" in err
    wrong = make_vkey(open_checkpoint(files["new.checkpoint"].read_text(), None).checkpoint.origin,
                      OTHER_KEY.verify_key)
    code, _, err = run(capsys, "verify", str(files["tx.tlog-proof"]), "--key", wrong)
    assert code == 1 and err.startswith("error: note-signature")
    code, _, err = run(capsys, "verify", str(files["vkey"].parent / "missing"), "--key", wrong)
    assert code == 1 and err.startswith("error: cannot read")


def test_works_without_a_node_or_a_data_dir(files: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "empty-home"
    home.mkdir()
    environ = {k: v for k, v in os.environ.items() if k != "N3XUS_HOME"}
    environ.update(HOME=str(home), N3XUS_HOME=str(home / "no-such-data-dir"))
    result = subprocess.run([*AUDIT_ARGV, "verify", str(files["owner.proof"]), "--key",
                             str(files["vkey"]), "--json"], capture_output=True, text=True,
                            env=environ, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["fact"]["owner"] == account("dave").hex()
    assert list(home.iterdir()) == []  # nothing created: no data dir, no config


def test_a_key_name_with_a_lone_surrogate_is_a_clean_error(capsys: pytest.CaptureFixture[str],
                                                           files: dict[str, Path]) -> None:
    """Regression: parse_vkey raised UnicodeEncodeError on a name holding a lone surrogate
    (what an undecodable argv byte becomes), and load_verifier a plain ValueError."""
    from n3xus.canon.errors import CanonDecodeError
    from n3xus.canon.note import parse_vkey
    from n3xus.ledger.audit import load_verifier
    from n3xus.ledger.errors import AuditError, AuditPart

    key = "origin\udc80+01234567+" + base64.b64encode(bytes([1]) + bytes(32)).decode()
    with pytest.raises(CanonDecodeError, match="invalid key name"):
        parse_vkey(key)
    with pytest.raises(AuditError) as caught:
        load_verifier(key)
    assert caught.value.part is AuditPart.FORMAT
    with pytest.raises(AuditError):
        load_verifier("not-a-key")
    code, _, err = run(capsys, "verify", str(files["tx.tlog-proof"]), "--key", key)
    assert code == 2 and "--key" in err and "Traceback" not in err
