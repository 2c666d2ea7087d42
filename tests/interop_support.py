"""Drives the js-libp2p peer of ``tests/interop/peer.mjs`` (a real Node.js process): JSON
commands on its stdin, JSON events and answers read from its stdout by a thread."""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

INTEROP_DIR = Path(__file__).resolve().parent / "interop"
PEER_SCRIPT = INTEROP_DIR / "peer.mjs"
VECTORS_SCRIPT = INTEROP_DIR / "vectors.mjs"
# Node's start plus loading js-libp2p takes ~1 s idle; a loaded 2-core machine, far more.
JS_START_TIMEOUT_S = 60.0
# Default wait for a command's answer (a dial, a DHT query, a fetch on a loaded machine).
JS_REQUEST_TIMEOUT_S = 60.0
JS_STOP_TIMEOUT_S = 10.0


def node_binary() -> str:
    """The Node.js executable, with the peer's packages installed (``npm ci``)."""
    node = shutil.which("node")
    assert node is not None, "Node.js (`node`) is required for the js-libp2p interop peer"
    assert (INTEROP_DIR / "node_modules" / "libp2p").is_dir(), (
        "js-libp2p is not installed: run `npm ci` in tests/interop (.ci/run does)")
    return node


class JsPeer:
    """One ``peer.mjs`` process. ``request`` sends a command and waits for its answer;
    ``wait_event`` waits for an event line matching a predicate (events are kept)."""

    def __init__(self, network: str, *extra: str, node_args: Sequence[str] = ()) -> None:
        # node_args: options of Node.js itself (e.g. --cpu-prof for a profile)
        self.proc = subprocess.Popen(
            [node_binary(), *node_args, str(PEER_SCRIPT), "--network", network, *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, cwd=INTEROP_DIR,
        )
        self.events: list[dict[str, Any]] = []
        self._answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        listening = self.wait_event(lambda e: e["event"] == "listening", JS_START_TIMEOUT_S)
        self.peer_id: str = listening["peer_id"]
        self.addr: str = listening["addrs"][0]
        self.agent: str = listening["agent"]

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                message = {"event": "unparsed", "line": line.rstrip("\n")}
            if "event" in message:
                with self._changed:
                    self.events.append(message)
                    self._changed.notify_all()
            else:
                self._answers.put(message)
        with self._changed:
            self.events.append({"event": "exited"})
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr[-200:])

    def request(self, cmd: str, timeout: float = JS_REQUEST_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
        """Send one command; return its answer (``ok`` checked by the caller)."""
        request_id = next(self._ids)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": request_id, "cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"js peer: no answer to {cmd} within {timeout} s; "
                                     f"stderr: {self.stderr[-2000:]}")
            try:
                answer = self._answers.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"js peer exited ({self.proc.returncode}): "
                                         f"{self.stderr[-2000:]}") from None
                continue
            if answer.get("id") == request_id:
                return answer

    def ok(self, cmd: str, timeout: float = JS_REQUEST_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
        answer = self.request(cmd, timeout=timeout, **fields)
        assert answer["ok"], f"js peer: {cmd} failed: {answer}"
        return answer

    def wait_event(self, match: Callable[[dict[str, Any]], bool], seconds: float,
                   what: str = "") -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        with self._changed:
            while True:
                for event in self.events:
                    if match(event):
                        return event
                if any(e["event"] == "exited" for e in self.events):
                    raise AssertionError(f"js peer exited waiting for {what or 'an event'}: "
                                         f"{self.stderr[-2000:]}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"js peer: not within {seconds} s: {what or 'event'}")
                self._changed.wait(timeout=remaining)

    def stop(self) -> int:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):  # already gone: wait() tells
                self.proc.stdin.close()  # the peer stops libp2p and exits at end of input
            try:
                self.proc.wait(timeout=JS_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
