"""Shared fixtures: nodes started for real on 127.0.0.1 with free ports in temp dirs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# A CLI node is up when it printed this line; on a loaded 2-core machine the
# interpreter start plus libp2p import take a few seconds.
READY_LINE = "press Ctrl-C to stop"
CLI_START_TIMEOUT_S = 60.0
# A node's API answers a read within this on a loaded machine; longer calls pass their own.
API_TIMEOUT_S = 10.0
# How often wait_for checks its condition unless a test needs a finer (or coarser) step.
WAIT_POLL_S = 0.25


def conformance_dir() -> Path:
    env = os.environ.get("N3XUS_CONFORMANCE_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "conformance"


def n3xus_argv(*args: str) -> list[str]:
    """Run the installed CLI through this interpreter (no PATH assumptions)."""
    return [sys.executable, "-c", "from n3xus.node.cli import main; main()", *args]


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(n3xus_argv(*args), capture_output=True, text=True, timeout=timeout)


@dataclass
class CliNode:
    data_dir: Path
    proc: subprocess.Popen[str]
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def peer_id(self) -> str:
        for line in self.stdout_lines:
            m = re.search(r"peer (12D3\w+)", line)
            if m:
                return m.group(1)
        raise AssertionError(f"no peer id in {self.stdout_lines}")

    @property
    def listen_addr(self) -> str:
        for line in self.stdout_lines:
            if line.startswith("listening on "):
                return line.split()[-1]
        raise AssertionError(f"no listen address in {self.stdout_lines}")

    @property
    def api_url(self) -> str:
        for line in self.stdout_lines:
            if line.startswith("API "):
                return line.split()[1].removesuffix("/api/v1")
        raise AssertionError(f"no API URL in {self.stdout_lines}")

    @property
    def api_token(self) -> str:
        return (self.data_dir / "api.token").read_text().strip()

    def api(self, method: str, path: str, *, timeout: float = API_TIMEOUT_S, **kwargs: Any) -> Any:
        """``method /api/v1{path}`` with the node's token (``kwargs`` go to httpx): the JSON
        answer, or the bytes of a non-JSON one. Raises on an error status."""
        response = httpx.request(method, f"{self.api_url}/api/v1{path}", timeout=timeout,
                                 headers={"Authorization": f"Bearer {self.api_token}"}, **kwargs)
        response.raise_for_status()
        if "json" in response.headers.get("content-type", ""):
            return response.json()
        return response.content

    def api_get(self, path: str, *, timeout: float = API_TIMEOUT_S, **params: Any) -> Any:
        return self.api("GET", path, timeout=timeout, params=params or None)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> tuple[int, float, str]:
        """Send ``sig``; return (exit code, seconds to exit, stderr)."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"node did not exit within {timeout} s of {sig!r}") from None
        elapsed = time.monotonic() - start
        stderr = self.proc.stderr.read() if self.proc.stderr else ""
        return code, elapsed, stderr


def start_cli_node(data_dir: Path, *extra: str, genesis: Path | None = None,
                   env: dict[str, str] | None = None) -> CliNode:
    """``n3xus node start`` on free ports. ``genesis``: join that network first (`node init
    --genesis`); nodes of different networks refuse each other's hello, and a fresh data dir
    is a development network of its own. ``env``: extra environment variables."""
    if genesis is not None:
        init = run_cli("node", "init", "--data-dir", str(data_dir), "--genesis", str(genesis))
        assert init.returncode == 0, init.stderr
    proc = subprocess.Popen(
        n3xus_argv("node", "start", "--data-dir", str(data_dir),
                   "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", *extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        env=None if env is None else {**os.environ, **env},
    )
    node = CliNode(data_dir, proc)
    deadline = time.monotonic() + CLI_START_TIMEOUT_S
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"node exited early ({proc.wait()}): {err[-2000:]}")
        node.stdout_lines.append(line.rstrip("\n"))
        if READY_LINE in line:
            return node
    proc.kill()
    raise AssertionError("node did not become ready in time")


def wait_for(condition: Callable[[], bool], seconds: float, what: str, *,
             poll_s: float = WAIT_POLL_S) -> float:
    """Seconds until ``condition`` held, checked every ``poll_s``; AssertionError naming
    ``what`` after ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():
            return time.monotonic() - started
        time.sleep(poll_s)
    raise AssertionError(f"not within {seconds} s: {what}")


@pytest.fixture
def cli_nodes() -> Iterator[list[CliNode]]:
    """Collects CLI nodes started by a test and kills any still running after it."""
    nodes: list[CliNode] = []
    yield nodes
    for node in nodes:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()
