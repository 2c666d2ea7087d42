"""The CLI end to end: real node processes on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

from conftest import CliNode, run_cli, start_cli_node

STOP_LIMIT_S = 5.0


def test_status_restart_keeps_peer_id_and_sigterm_exits_0(tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    node = start_cli_node(tmp_path / "a")
    cli_nodes.append(node)
    status = run_cli("node", "status", "--data-dir", str(node.data_dir), "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)  # exactly one JSON document
    assert doc["peer_id"] == node.peer_id
    assert doc["listen_addrs"] == [node.listen_addr]
    assert doc["uptime_s"] >= 0 and doc["peer_count"] == 0
    assert set(doc["counters"]) >= {"dials", "dial_failures", "api_requests"}

    code, elapsed, stderr = node.stop(signal.SIGTERM)
    assert code == 0 and elapsed < STOP_LIMIT_S, (code, elapsed, stderr)
    assert "Traceback" not in stderr
    assert not (node.data_dir / "api.json").exists()

    again = start_cli_node(tmp_path / "a")
    cli_nodes.append(again)
    assert again.peer_id == node.peer_id
    code, elapsed, _ = again.stop(signal.SIGINT)
    assert code == 0 and elapsed < STOP_LIMIT_S


def test_two_cli_nodes_connect_and_list_each_other(tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    # One network: nodes of different genesis refuse each other's hello.
    b = start_cli_node(tmp_path / "b", genesis=tmp_path / "a" / "genesis.cbor")
    cli_nodes.append(b)
    res = run_cli("peers", "connect", a.listen_addr, "--data-dir", str(b.data_dir), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["peer_id"] == a.peer_id

    listed_a = json.loads(run_cli("peers", "list", "--data-dir", str(a.data_dir), "--json").stdout)
    listed_b = json.loads(run_cli("peers", "list", "--data-dir", str(b.data_dir), "--json").stdout)
    assert [p["peer_id"] for p in listed_a["peers"]] == [b.peer_id]
    assert [p["peer_id"] for p in listed_b["peers"]] == [a.peer_id]
    human = run_cli("peers", "list", "--data-dir", str(a.data_dir))
    assert b.peer_id in human.stdout

    ident = json.loads(run_cli("id", "--data-dir", str(b.data_dir), "--json").stdout)
    assert ident["peer_id"] == b.peer_id and ident["running"] is True
    for node in (a, b):
        code, elapsed, _ = node.stop()
        assert code == 0 and elapsed < STOP_LIMIT_S


def _one_line_error(res: object, expect: str) -> None:
    import subprocess

    assert isinstance(res, subprocess.CompletedProcess)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], res.stderr
    assert "Traceback" not in res.stderr


def test_bad_input_gets_one_line_errors(tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    dd = str(a.data_dir)
    before = {p.name: p.read_bytes() for p in a.data_dir.iterdir() if p.is_file()}

    _one_line_error(run_cli("peers", "connect", "/ip4/1.2.3/tcp/1", "--data-dir", dd), "malformed multiaddr")
    _one_line_error(run_cli("peers", "connect", "/foo/bar", "--data-dir", dd), "unknown protocol")
    _one_line_error(run_cli("peers", "connect", "/ip4/127.0.0.1/tcp/1", "--data-dir", dd), "/p2p/")
    # A second node on the same data dir is refused, and the first keeps working.
    _one_line_error(run_cli("node", "start", "--data-dir", dd, "--api", "127.0.0.1:0",
                            "--listen", "/ip4/127.0.0.1/tcp/0"), "in use by another running node")
    # Ports in use (libp2p listen port, API port).
    port = int(a.listen_addr.split("/")[4])
    _one_line_error(run_cli("node", "start", "--data-dir", str(tmp_path / "c"),
                            "--listen", f"/ip4/127.0.0.1/tcp/{port}", "--api", "127.0.0.1:0"),
                    "already in use")
    api_port = a.api_url.rsplit(":", 1)[1]
    _one_line_error(run_cli("node", "start", "--data-dir", str(tmp_path / "c"),
                            "--listen", "/ip4/127.0.0.1/tcp/0", "--api", f"127.0.0.1:{api_port}"),
                    "cannot serve the API")
    _one_line_error(run_cli("node", "start", "--data-dir", str(tmp_path / "c"), "--api", "0.0.0.0:0"),
                    "--api-allow-remote")
    res = run_cli("frobnicate")
    _one_line_error(res, "No such command")
    assert res.returncode == 2

    status = run_cli("node", "status", "--data-dir", dd, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["peer_id"] == a.peer_id
    after = {p.name: p.read_bytes() for p in a.data_dir.iterdir() if p.is_file()}
    for name in ("identity.key", "api.token", "config.toml", "api.json"):
        assert after[name] == before[name], f"{name} changed"


def test_corrupt_key_and_no_node(tmp_path: Path) -> None:
    dd = tmp_path / "k"
    assert run_cli("node", "init", "--data-dir", str(dd)).returncode == 0
    again = run_cli("node", "init", "--data-dir", str(dd))
    assert again.returncode == 0 and "nothing changed" in again.stdout
    key = dd / "identity.key"
    key.write_bytes(b"n3xus-identity-v1 ed25519 ####\n")
    _one_line_error(run_cli("node", "start", "--data-dir", str(dd), "--api", "127.0.0.1:0"), "corrupt")
    assert key.read_bytes() == b"n3xus-identity-v1 ed25519 ####\n"
    _one_line_error(run_cli("node", "status", "--data-dir", str(tmp_path / "none")), "no node is running")


def test_api_requires_token(tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    import httpx

    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    r = httpx.get(a.api_url + "/api/v1/status")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = httpx.post(a.api_url + "/api/v1/peers/connect", json={"multiaddr": "/ip4/127.0.0.1/tcp/1"},
                   headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    token = (a.data_dir / "api.token").read_text().strip()
    r = httpx.get(a.api_url + "/api/v1/status", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["peer_id"] == a.peer_id
    assert httpx.get(a.api_url + "/healthz").json() == {"status": "ok"}
    assert "n3xus_api_requests_total" in httpx.get(a.api_url + "/metrics").text
    spec = httpx.get(a.api_url + "/api/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert spec["paths"]["/api/v1/status"]["get"]["security"] == [{"bearer": []}]
    # The API listens on loopback only.
    host = a.api_url.split("//")[1].rsplit(":", 1)[0]
    assert host == "127.0.0.1"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(a.api_url.rsplit(":", 1)[1]))) == 0
