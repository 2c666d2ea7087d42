"""The CLI against real node processes (issue 7 §2-§4): every data command takes
--json, names travel encoded (no wrong pin removed, no path normalised), errors
from the node say what happened, -o follows its rules, `peers connect` says when it
did not dial, `node start --json` prints one JSON line per event, and API-backed
commands import nothing heavy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from conftest import CliNode, n3xus_argv, run_cli, start_cli_node, wait_for
from n3xus.node.cli import app

# Modules an API-backed command must not import (each costs 20-1400 ms to import).
HEAVY = {"trio", "httpx", "libp2p", "rich", "cbor2", "starlette", "hypercorn", "lmdb",
         "prometheus_client", "jsonschema", "multiaddr"}


def _ok(*args: str) -> dict:  # type: ignore[type-arg]
    res = run_cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def _error(expect: str, *args: str) -> str:
    res = run_cli(*args)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert expect in lines[0], lines[0]
    return lines[0]


def _all_commands() -> list[tuple[str, click.Command]]:
    ctx = click.Context(app.cli)
    out: list[tuple[str, click.Command]] = []

    def walk(prefix: str, command: click.Command) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(f"{prefix} {name}".strip(), sub)
        else:
            out.append((prefix, command))

    walk("", app.cli)
    return out


def test_every_command_takes_json_and_the_lazy_help_matches() -> None:
    commands = _all_commands()
    assert len(commands) >= 45
    for name, command in commands:
        flags = {opt for p in command.params for opt in getattr(p, "opts", [])}
        assert "--json" in flags, f"`n3xus {name}` has no --json"
    ctx = click.Context(app.cli)
    for name, (_, _, text) in app.COMMANDS.items():
        command = app.cli.get_command(ctx, name)
        assert command is not None and (command.help or "").split("\n")[0] == text, name


def _imported(*args: str) -> set[str]:
    """Heavy modules a CLI run imported (the run itself must succeed)."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: sys.stderr.write('\\nMODULES ' + ' '.join(sorted(sys.modules)) + '\\n'))\n"
            "from n3xus.node.cli import main\nmain()\n")
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    modules = set(res.stderr.rsplit("MODULES ", 1)[1].split())
    return {m.split(".")[0] for m in modules} & HEAVY


def test_canon_world_and_ledger_through_the_cli(tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    d = ("--data-dir", str(a.data_dir))

    # Commands that only talk to the node import only what they need.
    assert _imported("--help") == set()
    for args in (("node", "status"), ("peers", "list"), ("ledger", "status"), ("canon", "pins"),
                 ("wallet", "balance"), ("id",), ("world", "list")):
        assert _imported(*args, *d) == set(), args

    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    cid = _ok("canon", "put", str(src), *d)["cid"]

    # Names travel percent-encoded: each unpin removes exactly its own pin.
    names = ["x", "A", "h", "x?y", "%41", "h#frag", "..", "a/b"]
    for name in names:
        _ok("canon", "pin", cid, "--name", name, *d)
    for name in ["x?y", "%41", "h#frag", "..", "a/b"]:
        assert _ok("canon", "unpin", name, *d) == {"name": name, "removed": True}
    left = {p["name"] for p in _ok("canon", "pins", *d)["pins"]}
    assert {"x", "A", "h", cid} <= left and not left & {"x?y", "%41", "h#frag", "..", "a/b"}
    _error("there is no pin named '..'", "canon", "unpin", "..", *d)

    _ok("world", "set", "w", "b", '"value of b"', *d)
    _ok("world", "set", "w", "a/../b", '"value of a/../b"', *d)
    assert _ok("world", "get", "w", "a/../b", *d)["value"] == "value of a/../b"
    # A value that is not JSON needs --string: never silently a string.
    _error("is not JSON", "world", "set", "w", "greeting", "hello", *d)
    assert "--string" in run_cli("world", "set", "--help").stdout
    _ok("world", "set", "w", "greeting", "hello", "--string", *d)
    assert _ok("world", "get", "w", "greeting", *d)["value"] == "hello"
    _ok("world", "set", "w", "n", "007", "--string", *d)
    assert _ok("world", "get", "w", "n", *d)["value"] == "007"

    # Errors say what happened.
    _error("error: zzz is not a CID", "canon", "get", "zzz", *d)
    missing = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    _error(f"not found: block {missing} is not stored on this node", "canon", "stat", missing, *d)
    _error("no world named 'nowhere'", "world", "get", "nowhere", "k", *d)

    # -o: a missing directory is one line; `-` is stdout; a symlink stays a symlink.
    for args in (("canon", "get", cid), ("canon", "export", "--car"), ("ledger", "export", "--car"),
                 ("ledger", "checkpoint"), ("ledger", "vkey"), ("canon", "checkpoint", "--sign")):
        flag = () if args[-1] == "--car" else ("-o",)
        _error("does not exist", *args, *flag, str(tmp_path / "no" / "such" / "dir" / "f"), *d)
    assert not (tmp_path / "no").exists()
    res = run_cli("canon", "get", cid, "-o", "-", *d)
    assert res.returncode == 0 and res.stdout == "hello\n"
    real = tmp_path / "real.txt"
    real.write_text("")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    assert _ok("canon", "get", cid, "-o", str(link), *d)["bytes"] == 6
    assert link.is_symlink() and real.read_text() == "hello\n"

    # The canon log: checkpoint and inclusion proof, as text, JSON or files.
    checkpoint = _ok("canon", "checkpoint", "--sign", *d)
    assert checkpoint["size"] == 4 and checkpoint["checkpoint"].startswith(checkpoint["origin"])
    proof_file = tmp_path / "entry1.proof"
    written = _ok("canon", "proof", "1", "-o", str(proof_file), *d)
    assert written == {"output": str(proof_file), "bytes": proof_file.stat().st_size, "index": 1}
    assert proof_file.read_text().startswith("c2sp.org/tlog-proof@v1")
    assert _ok("canon", "proof", "1", *d)["bundle"] == proof_file.read_text()
    _error("not found: the canon log has no entry 99", "canon", "proof", "99", *d)

    # Ledger transparency commands take --json too.
    vkey = _ok("ledger", "vkey", *d)["vkey"].strip()
    assert vkey.count("+") >= 2
    cp = _ok("ledger", "checkpoint", "--sign", *d)
    assert cp["size"] == 1 and "checkpoint" in cp
    tx = _ok("wallet", "issue", "node", "node", "25", *d)["id"]
    assert _ok("ledger", "proof", tx, *d)["tx"] == tx
    state = _ok("ledger", "state-proof", "node", *d)
    assert state["bundle"] and len(state["account"]) == 64
    assert _ok("ledger", "consistency", "1", *d)["old_size"] == 1
    bal = tmp_path / "bal.proof"
    _ok("ledger", "state-proof", "-o", str(bal), *d)
    vkey_file = tmp_path / "node.vkey"
    _ok("ledger", "vkey", "-o", str(vkey_file), *d)
    audit = _ok("audit", "verify", str(bal), "--key", str(vkey_file))
    assert audit["ok"] is True and audit["fact"]["balance"] == 25


def test_peers_connect_says_when_it_did_not_dial(tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    # One network: nodes of different genesis refuse each other's hello and disconnect.
    b = start_cli_node(tmp_path / "b", genesis=tmp_path / "a" / "genesis.cbor")
    cli_nodes.append(b)
    d = ("--data-dir", str(b.data_dir))
    first = _ok("peers", "connect", a.listen_addr, *d)
    assert first["already_connected"] is False and first["addrs"]
    nowhere = f"/ip4/127.0.0.1/tcp/1/p2p/{a.peer_id}"  # nothing listens on port 1
    res = run_cli("peers", "connect", nowhere, *d)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"already connected to {a.peer_id} via /ip4/127.0.0.1/tcp/")
    assert f"{nowhere} was not dialled" in res.stdout
    _error("malformed multiaddr", "peers", "connect", "/ip4/1.2.3/tcp/1", *d)


def test_peers_connect_dials_the_given_address_of_a_restarted_peer(
        tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    """A peer that restarted on a new port is reached at the address the operator gives,
    not at the stale one the peerstore still holds (libp2p dials one TCP address only)."""
    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    b = start_cli_node(tmp_path / "b", genesis=tmp_path / "a" / "genesis.cbor")
    cli_nodes.append(b)
    d = ("--data-dir", str(a.data_dir))
    assert _ok("peers", "connect", b.listen_addr, *d)["already_connected"] is False
    old_addr = b.listen_addr
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait()
    wait_for(lambda: not _ok("peers", "list", *d)["peers"], 30, "a sees b gone")
    b = start_cli_node(tmp_path / "b")
    cli_nodes.append(b)
    assert b.listen_addr != old_addr
    again = _ok("peers", "connect", b.listen_addr, *d)
    assert again["peer_id"] == b.peer_id and again["already_connected"] is False


def test_node_start_json_prints_one_line_per_event(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        n3xus_argv("node", "start", "--data-dir", str(tmp_path / "j"), "--json",
                   "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert proc.stdout is not None
        events = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [e["event"] for e in events] == ["initialised", "started"]
        started = events[1]
        assert started["peer_id"].startswith("12D3Koo") and started["api_url"].endswith("/api/v1")
        assert started["listen_addrs"] and started["token_path"].endswith("api.token")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = [json.loads(line) for line in out.splitlines()]  # every line is JSON
    assert [e["event"] for e in rest] == ["stopping", "stopped"]
    assert rest[0]["signal"] == "SIGTERM" and proc.returncode == 0, err
