"""``n3xus canon`` and ``n3xus world`` against real node processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import CliNode, run_cli, start_cli_node


def _ok(*args: str) -> dict:  # type: ignore[type-arg]
    res = run_cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def test_canon_and_world_commands(tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    b = start_cli_node(tmp_path / "b")
    cli_nodes.append(b)
    da, db = ("--data-dir", str(a.data_dir)), ("--data-dir", str(b.data_dir))

    payload = os.urandom(700_000)
    src = tmp_path / "in.bin"
    src.write_bytes(payload)
    put = _ok("canon", "put", str(src), *da)
    root = put["cid"]
    assert put["size"] == len(payload) and put["pinned"] is True
    out = tmp_path / "out.bin"
    got = _ok("canon", "get", root, "-o", str(out), *da)
    assert got == {"cid": root, "output": str(out), "bytes": len(payload), "file": True}
    assert out.read_bytes() == payload
    stat = _ok("canon", "stat", root, *da)
    assert stat["file"]["size"] == len(payload) and root in stat["pins"]

    first = _ok("world", "set", "plaza", "greeting", '"hi"', *da)
    second = _ok("world", "set", "plaza", "poster", json.dumps({"/": root}), *da)
    assert second["seq"] == first["seq"] + 1
    assert _ok("world", "get", "plaza", "poster", *da)["value"] == {"/": root}
    assert _ok("world", "get", "plaza", "greeting", "--at", first["head"], *da)["value"] == "hi"
    listed = _ok("world", "list", "plaza", *da)["entries"]
    assert [e["key"] for e in listed] == ["greeting", "poster"]
    diff = _ok("world", "diff", "plaza", first["head"], *da)
    assert [c["key"] for c in diff["changes"]] == ["poster"]
    history = _ok("world", "history", "plaza", *da)["history"]
    assert [h["seq"] for h in history] == [1, 0]

    # Everything A's key signed, into one CAR, into B: worlds, history and the file.
    car = tmp_path / "mine.car"
    exported = _ok("canon", "export", "--car", str(car), *da)
    assert car.stat().st_size == exported["bytes"] > len(payload)
    imported = _ok("canon", "import", str(car), *db)
    assert imported["bad_blocks"] == [] and second["head"] in imported["roots"]
    copy = tmp_path / "copy.bin"
    assert run_cli("canon", "get", root, "-o", str(copy), *db).returncode == 0
    assert copy.read_bytes() == payload

    # A tampered CAR: the bad block is named, nothing else is lost, exit code 1.
    bad = bytearray(car.read_bytes())
    bad[len(bad) // 2] ^= 0x10
    (tmp_path / "bad.car").write_bytes(bytes(bad))
    res = run_cli("canon", "import", str(tmp_path / "bad.car"), *db, "--json")
    assert res.returncode == 1 and len(json.loads(res.stdout)["bad_blocks"]) == 1
    assert run_cli("canon", "get", root, "-o", str(copy), *db).returncode == 0
    assert copy.read_bytes() == payload

    # Errors are one line; a failed download leaves no partial file behind.
    res = run_cli("canon", "get", "bafynotacid", "-o", str(tmp_path / "x"), *da)
    assert res.returncode == 1 and res.stderr.startswith("error:")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()
    res = run_cli("world", "get", "nowhere", "k", *da)
    assert res.returncode == 1 and "no world named" in res.stderr

    assert _ok("canon", "unpin", root, *da)["removed"] is True
    gc = _ok("canon", "gc", *da)
    assert gc["blocks_removed"] == 0  # the world still links the file: nothing to free
    log = _ok("canon", "log", *da)
    assert [e["type"] for e in log["entries"]] == ["world-commit", "world-commit"]
    note = run_cli("canon", "checkpoint", "--sign", *da)
    assert note.returncode == 0 and note.stdout.startswith(f"n3xus.net/canon/{a.peer_id}\n2\n")
