"""``n3xus canon fetch CID [--from PEER]…``: fetch a DAG from peers through the running node.

The node does the work (``POST /canon/fetch``); this command polls the fetch's status and
draws a progress bar on stderr when stderr is a terminal (rich, imported only then). The
fetch belongs to the node: interrupting the command does not stop it, and running the
command again resumes it without fetching again what the node stored.
"""

from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import click

from .app import client_for, data_dir_option, echo, emit, json_option
from .client import path_of

POLL_INTERVAL_S = 0.2
"""How often the status is read: smooth enough for a bar, nothing for the node."""
MAX_FETCH_WAIT_S = 24 * 3600.0
"""The command gives up watching after a day (the node's fetch goes on)."""


class _Bar:
    """A rich progress bar of bytes fetched (total: the file's size once known)."""

    def __init__(self, cid: str) -> None:
        self._bar: Any = None
        self._context: AbstractContextManager[Any] = nullcontext()
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            progress = Progress("[progress.description]{task.description}", BarColumn(),
                                DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                TextColumn("{task.fields[peers]}"),
                                console=Console(stderr=True), transient=True)
            self._context = progress
            self._bar = (progress, progress.add_task(f"fetching {cid[:16]}…", total=None,
                                                     peers=""))

    def __enter__(self) -> _Bar:
        self._context.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)

    def update(self, status: dict[str, Any]) -> None:
        if self._bar is None:
            return
        progress, task = self._bar
        active = sum(1 for p in status["peers"].values() if p["state"] == "fetching")
        progress.update(task, completed=status["bytes_fetched"], total=status["file_size"],
                        peers=f"{active} peer{'s' if active != 1 else ''}")


@click.command("fetch")
@click.argument("cid")
@click.option("--from", "sources", multiple=True, metavar="PEER",
              help="Fetch from this peer (a peer ID or a dial address /ip4/…/p2p/<id>); "
                   "repeat for several at once. Default: providers (connected peers asked, "
                   "then the DHT).")
@click.option("--no-pin", is_flag=True, help="Do not pin the root when complete.")
@data_dir_option
@json_option
def canon_fetch(cid: str, sources: tuple[str, ...], no_pin: bool, data_dir: str | None,
                as_json: bool) -> None:
    """Fetch the DAG under CID (a file, a world…) from peers, verified block by block;
    resumable."""
    client = client_for(data_dir)
    status = client.post("/canon/fetch", json={"cid": cid, "from": list(sources),
                                               "pin": not no_pin, "wait": False})
    deadline = time.monotonic() + MAX_FETCH_WAIT_S
    with _Bar(cid) as bar:
        while status["state"] in ("searching", "fetching") and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
            status = client.get(path_of("/canon/fetch/{}", status["id"]))
            bar.update(status)

    def human() -> None:
        echo(f"fetched {status['cid']}: {status['blocks_fetched']} blocks, "
             f"{status['bytes_fetched']} bytes in {status['elapsed_s']:.1f} s "
             f"({status['blocks_stored_before']} blocks were stored already)")
        for peer, stats in sorted(status["peers"].items()):
            line = f"  {peer}  {stats['blocks']} blocks  {stats['bytes']} bytes"
            if stats["mismatches"]:
                line += f"  {stats['mismatches']} blocks did not match their CID"
            if stats["error"]:
                line += f"  ({stats['error']})"
            echo(line)

    if status["state"] != "done":
        if as_json:
            emit(True, status, lambda: None)
        raise click.ClickException(f"fetch of {cid} failed: {status['error'] or status['state']}")
    emit(as_json, status, human)
