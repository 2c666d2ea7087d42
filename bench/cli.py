"""The CLI and the HTTP API against a running node: how long one interaction takes.

Headline pair: ``n3xus wallet balance`` (a whole CLI process: interpreter start,
imports, data dir, one API call) vs ``curl`` of the same route in the same run
(a process doing only the HTTP request). Both spawn a process per call, so the
ratio is what our CLI costs over the bare request.

Informational lines (issue 7 §2, "sub-100 ms for 95 % of interactions"):
- p50/p95 of several API-backed CLI commands (process per call);
- p50/p95 over HTTP of the API's routes on one kept-alive connection.

The benchmark starts its own node (temporary data dir, free ports) and stops it.

    python bench/cli.py [--json] [--large] [--repeats N]
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Pair, main  # noqa: E402

# Calls per timed repeat of the headline pair (process spawns: ~0.1 s each).
CALLS = 10
# Samples per CLI command and per HTTP route for the percentile lines.
CLI_SAMPLES = 20
HTTP_SAMPLES = 200
READY_TIMEOUT_S = 60.0
N3XUS = [sys.executable, "-c", "from n3xus.node.cli import main; main()"]


def _start_node(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([*N3XUS, "node", "start", "--data-dir", str(data_dir), "--json",
                             "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0",
                             "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(data_dir.parent, ignore_errors=True)

    atexit.register(stop)
    deadline = time.monotonic() + READY_TIMEOUT_S
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("the node exited before it was ready")
        event = json.loads(line)
        if event["event"] == "started":
            return proc, str(event["api_url"]).removesuffix("/api/v1")
    raise SystemExit("the node did not start in time")


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms  p95 {p95 * 1000:.1f} ms"


def _time_process(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _http_routes(api_url: str, token: str, data_dir: Path) -> dict[str, str]:
    """p50/p95 per route over one kept-alive HTTP/1.1 connection."""
    host, port = api_url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    auth = {"Authorization": f"Bearer {token}"}

    def call(method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json") -> bytes:
        conn.request(method, path, body=body, headers={**auth, "Content-Type": content_type})
        response = conn.getresponse()
        data = response.read()
        if response.status >= 400:
            raise SystemExit(f"{method} {path}: {response.status} {data[:200]!r}")
        return data

    v1 = "/api/v1"
    cid = json.loads(call("POST", f"{v1}/canon/blocks", b"bench block", "application/octet-stream"))["cid"]
    file_cid = json.loads(call("POST", f"{v1}/canon/files", os.urandom(100_000),
                               "application/octet-stream"))["cid"]
    commit = json.loads(call("POST", f"{v1}/worlds/bench", b'{"set": {"k": 1}}'))["head"]
    call("POST", f"{v1}/canon/log/checkpoint")
    account = json.loads(call("GET", f"{v1}/id"))["public_key"]
    subprocess.run([*N3XUS, "wallet", "issue", "node", "node", "1000", "--data-dir", str(data_dir)],
                   check=True, stdout=subprocess.DEVNULL)
    tx = json.loads(call("GET", f"{v1}/ledger/log?start=1&limit=1"))["entries"][0]["id"]
    routes: list[tuple[str, str, bytes | None, str]] = [
        ("GET", "/healthz", None, ""), ("GET", f"{v1}/id", None, ""),
        ("GET", f"{v1}/status", None, ""), ("GET", f"{v1}/peers", None, ""),
        ("GET", f"{v1}/canon/stat/{cid}", None, ""), ("GET", f"{v1}/canon/blocks/{cid}", None, ""),
        ("GET", f"{v1}/canon/files/{file_cid}", None, ""), ("GET", f"{v1}/canon/pins", None, ""),
        ("GET", f"{v1}/canon/log?limit=10", None, ""), ("GET", f"{v1}/canon/log/checkpoint", None, ""),
        ("GET", f"{v1}/canon/log/proof/0", None, ""), ("GET", f"{v1}/worlds", None, ""),
        ("GET", f"{v1}/worlds/bench", None, ""), ("GET", f"{v1}/worlds/bench/keys/k", None, ""),
        ("GET", f"{v1}/worlds/bench/entries", None, ""),
        ("GET", f"{v1}/worlds/bench/diff?from={commit}", None, ""),
        ("GET", f"{v1}/worlds/bench/history", None, ""),
        ("GET", f"{v1}/ledger/status", None, ""), ("GET", f"{v1}/ledger/genesis", None, ""),
        ("GET", f"{v1}/ledger/accounts/{account}", None, ""),
        ("GET", f"{v1}/ledger/txs/{quote(tx)}", None, ""), ("GET", f"{v1}/ledger/log?limit=10", None, ""),
        ("GET", f"{v1}/ledger/vkey", None, ""), ("GET", f"{v1}/ledger/checkpoint", None, ""),
        ("GET", f"{v1}/ledger/proofs/tx/{tx}", None, ""),
        ("GET", f"{v1}/ledger/proofs/state?account={account}", None, ""),
        ("POST", f"{v1}/canon/blocks", b"x", "application/octet-stream"),
        ("POST", f"{v1}/canon/pins", json.dumps({"cid": cid, "name": "bench"}).encode(), "application/json"),
        ("POST", f"{v1}/worlds/bench", b'{"set": {"k": 2}}', "application/json"),
        ("GET", "/metrics", None, ""),
    ]
    out = {}
    for method, path, body, content_type in routes:
        samples = []
        for _ in range(HTTP_SAMPLES):
            start = time.perf_counter()
            call(method, path, body, content_type or "application/json")
            samples.append(time.perf_counter() - start)
        template = path.split("?")[0].replace(cid, "{cid}").replace(file_cid, "{cid}").replace(
            account, "{account}").replace(tx, "{id}")
        out[f"http {method} {template}"] = _percentiles(samples)
    conn.close()
    return out


def build(args: Any) -> tuple[list[Pair], dict[str, Any]]:
    curl = shutil.which("curl")
    if curl is None:
        raise SystemExit("bench/cli.py needs curl (apt-get install curl)")
    data_dir = Path(tempfile.mkdtemp(prefix="n3xus-bench-cli-")) / "node"
    _, api_url = _start_node(data_dir)
    token = (data_dir / "api.token").read_text().strip()
    account = json.loads(subprocess.run([*N3XUS, "id", "--json", "--data-dir", str(data_dir)],
                                        check=True, capture_output=True, text=True).stdout)["public_key"]
    calls = CALLS * (5 if args.large else 1)
    ours_argv = [*N3XUS, "wallet", "balance", "--data-dir", str(data_dir)]
    curl_argv = [curl, "-sf", "-H", f"Authorization: Bearer {token}",
                 f"{api_url}/api/v1/ledger/accounts/{account}"]

    extra: dict[str, Any] = {}
    samples = CLI_SAMPLES * (3 if args.large else 1)
    for command in (["wallet", "balance"], ["node", "status"], ["peers", "list"], ["ledger", "status"],
                    ["canon", "pins"], ["id"], ["world", "list"], ["--help"]):
        argv = [*N3XUS, *command, *([] if command == ["--help"] else ["--data-dir", str(data_dir)])]
        extra[f"cli n3xus {' '.join(command)}"] = _percentiles([_time_process(argv)
                                                                 for _ in range(samples)])
    extra[f"cli curl {'/api/v1/ledger/accounts/{account}'}"] = _percentiles(
        [_time_process(curl_argv) for _ in range(samples)])
    extra.update(_http_routes(api_url, token, data_dir))

    def ours(_state: Any) -> None:
        for _ in range(calls):
            subprocess.run(ours_argv, check=True, stdout=subprocess.DEVNULL)

    def ceiling(_state: Any) -> None:
        for _ in range(calls):
            subprocess.run(curl_argv, check=True, stdout=subprocess.DEVNULL)

    pairs = [Pair("n3xus wallet balance vs curl (same route)", calls, "calls", ours, ceiling)]
    return pairs, extra


if __name__ == "__main__":
    main("CLI and HTTP API latency against a running node", build)
