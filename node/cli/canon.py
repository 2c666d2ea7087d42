"""``n3xus canon …`` and ``n3xus world …``: the canon memory from the command line.

All of it goes through the running node's HTTP API (the node owns LMDB; a second
process must never open it). Large uploads and downloads stream, with a progress
bar on stderr when stderr is a terminal.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from ..errors import ApiError
from .app import _data_dir, cli, data_dir_option, emit, json_option, print_lines, stdout
from .client import ApiClient

# Streaming uploads read the source in pieces of this size: big enough to keep the
# HTTP overhead small, small enough that memory stays flat for any file size.
UPLOAD_PIECE_BYTES = 1024 * 1024
# A single-block put is capped by the block size limit; anything bigger is a file.
STREAM_TIMEOUT_S = 3600.0

stderr = Console(stderr=True)


def _progress(total: int | None, label: str) -> Progress:
    return Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), console=stderr, transient=True,
                    disable=not stderr.is_terminal)


def _pieces(source: IO[bytes], progress: Progress, task: Any) -> Iterator[bytes]:
    while piece := source.read(UPLOAD_PIECE_BYTES):
        progress.update(task, advance=len(piece))
        yield piece


def _open_source(path: str) -> tuple[IO[bytes], int | None]:
    if path == "-":
        return sys.stdin.buffer, None
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from exc
    return f, os.fstat(f.fileno()).st_size


def _client(data_dir: str | None, timeout: float = 30.0) -> ApiClient:
    return ApiClient(_data_dir(data_dir), timeout=timeout)


@cli.group()
def canon() -> None:
    """Content-addressed blocks and files, pins, GC, the canon log, CAR export/import."""


@canon.command("put")
@click.argument("source", metavar="FILE|-")
@click.option("--block", is_flag=True, help="Store the bytes as one block instead of a chunked file.")
@click.option("--codec", type=click.Choice(["raw", "dag-cbor"]), default="raw",
              help="Codec of a --block (dag-cbor must be canonical DAG-CBOR).")
@click.option("--hash", "hash_name", type=click.Choice(["blake3", "sha2-256"]), default="blake3")
@click.option("--no-pin", is_flag=True, help="Do not pin (the next GC but one may remove it).")
@data_dir_option
@json_option
def canon_put(source: str, block: bool, codec: str, hash_name: str, no_pin: bool,
              data_dir: str | None, as_json: bool) -> None:
    """Store FILE (or stdin) and print its CID."""
    client = _client(data_dir, STREAM_TIMEOUT_S)
    stream, size = _open_source(source)
    params = {"hash": hash_name, "pin": "false" if no_pin else "true"}
    try:
        if block:
            result = client.post("/canon/blocks", content=stream.read(),
                                 params={**params, "codec": codec})
        else:
            with _progress(size, "put") as progress:
                task = progress.add_task("uploading", total=size)
                result = client.post("/canon/files", content=_pieces(stream, progress, task),
                                     params=params)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    emit(as_json, result, lambda: stdout.print(result["cid"]))


@canon.command("get")
@click.argument("cid")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here (default stdout).")
@click.option("--block", is_flag=True, help="The raw block bytes, even of a file root.")
@data_dir_option
@json_option
def canon_get(cid: str, output: str | None, block: bool, data_dir: str | None,
              as_json: bool) -> None:
    """Write a file's content (or a block's bytes) to stdout or -o FILE."""
    if as_json and output is None:
        raise click.UsageError("--json needs -o FILE (without it, stdout carries the content)")
    client = _client(data_dir, STREAM_TIMEOUT_S)
    written = 0
    path = f"/api/v1/canon/blocks/{cid}"
    if not block:
        stat = client.get(f"/canon/stat/{cid}")
        if "file" in stat:
            path = f"/api/v1/canon/files/{cid}"
    tmp = Path(output + ".part") if output else None
    sink: IO[bytes] = tmp.open("wb") if tmp else sys.stdout.buffer
    try:
        with httpx.stream("GET", client.base_url + path, timeout=STREAM_TIMEOUT_S,
                          headers={"Authorization": f"Bearer {client._token}"}) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response.status_code, response.json()["error"]["message"])
            total = int(response.headers.get("content-length", 0)) or None
            with _progress(total, "get") as progress:
                task = progress.add_task("downloading", total=total)
                for chunk in response.iter_bytes():
                    sink.write(chunk)
                    written += len(chunk)
                    progress.update(task, advance=len(chunk))
    except BaseException:
        if tmp is not None:
            sink.close()
            tmp.unlink(missing_ok=True)  # never leave half a download behind
        raise
    finally:
        if tmp is not None and not sink.closed:
            sink.close()
    if tmp is not None and output is not None:
        tmp.replace(output)  # only a complete download takes the name
        emit(as_json, {"cid": cid, "output": output, "bytes": written, "file": path.startswith(
            "/api/v1/canon/files")}, lambda: None)


@canon.command("stat")
@click.argument("cid")
@data_dir_option
@json_option
def canon_stat(cid: str, data_dir: str | None, as_json: bool) -> None:
    """Size, codec, hash, links and pins of a block (and file size for a file root)."""
    result = _client(data_dir).get(f"/canon/stat/{cid}")

    def human() -> None:
        for key in ("cid", "size", "codec", "hash", "links"):
            stdout.print(f"{key:<6} {result[key]}")
        stdout.print(f"pins   {', '.join(result['pins']) or '-'}")
        if "file" in result:
            f = result["file"]
            stdout.print(f"file   {f['size']} bytes in {f['chunks']} chunks of {f['chunk_size']}")

    emit(as_json, result, human)


@canon.command("pin")
@click.argument("cid")
@click.option("--name", default=None, help="Pin name (default: the CID).")
@click.option("--direct", is_flag=True, help="Pin only this block, not what it links to.")
@data_dir_option
@json_option
def canon_pin(cid: str, name: str | None, direct: bool, data_dir: str | None, as_json: bool) -> None:
    """Keep CID (and, unless --direct, everything it links to) through GC."""
    result = _client(data_dir).post("/canon/pins", json={"cid": cid, "name": name or cid,
                                                        "recursive": not direct})
    emit(as_json, result, lambda: stdout.print(f"pinned {result['cid']} as {result['name']} "
                                               f"({result['blocks']} blocks)"))


@canon.command("unpin")
@click.argument("name")
@data_dir_option
@json_option
def canon_unpin(name: str, data_dir: str | None, as_json: bool) -> None:
    """Remove the pin NAME (a CID for pins made by put/pin without --name)."""
    result = _client(data_dir).request("DELETE", f"/api/v1/canon/pins/{name}")
    emit(as_json, result, lambda: stdout.print(f"unpinned {name}"))


@canon.command("pins")
@data_dir_option
@json_option
def canon_pins(data_dir: str | None, as_json: bool) -> None:
    """List pins."""
    result = _client(data_dir).get("/canon/pins")

    def human() -> None:
        table = Table("name", "cid", "kind", box=None)
        for p in result["pins"]:
            table.add_row(p["name"], p["cid"], "recursive" if p["recursive"] else "direct")
        stdout.print(table)

    emit(as_json, result, human)


@canon.command("gc")
@data_dir_option
@json_option
def canon_gc(data_dir: str | None, as_json: bool) -> None:
    """Remove blocks that no pin, open upload or grace period protects."""
    result = _client(data_dir, STREAM_TIMEOUT_S).post("/canon/gc")
    emit(as_json, result, lambda: stdout.print(
        f"removed {result['blocks_removed']} blocks, freed {result['bytes_freed']} bytes"))


@canon.command("export")
@click.option("--car", "car_path", required=True, type=click.Path(dir_okay=False),
              help="Output CARv1 file.")
@click.option("--author", default=None, help="Export everything this hex ed25519 key signed "
              "(default with no ROOT: this node's key).")
@click.argument("roots", nargs=-1)
@data_dir_option
@json_option
def canon_export(car_path: str, author: str | None, roots: tuple[str, ...], data_dir: str | None,
                 as_json: bool) -> None:
    """Write the DAGs under ROOT… (or everything an author signed) to a CAR file."""
    client = _client(data_dir, STREAM_TIMEOUT_S)
    if roots and author:
        raise click.UsageError("give ROOTs or --author, not both")
    if not roots and not author:
        author = client.get("/id")["public_key"]
    params: list[tuple[str, str | int | float | bool | None]] = (
        [("root", r) for r in roots] or [("author", author or "")])
    tmp = Path(car_path + ".part")
    written = 0
    with httpx.stream("GET", client.base_url + "/api/v1/canon/export", params=params,
                      headers={"Authorization": f"Bearer {client._token}"},
                      timeout=STREAM_TIMEOUT_S) as response:
        if response.status_code >= 400:
            response.read()
            raise ApiError(response.status_code, response.json()["error"]["message"])
        with tmp.open("wb") as out, _progress(None, "export") as progress:
            task = progress.add_task("exporting", total=None)
            for chunk in response.iter_bytes():
                out.write(chunk)
                written += len(chunk)
                progress.update(task, advance=len(chunk))
    tmp.replace(car_path)
    result = {"car": car_path, "bytes": written, "roots": list(roots), "author": author}
    emit(as_json, result, lambda: stdout.print(f"wrote {written} bytes to {car_path}"))


@canon.command("import")
@click.argument("car_file", metavar="IN.car")
@data_dir_option
@json_option
def canon_import(car_file: str, data_dir: str | None, as_json: bool) -> None:
    """Import a CARv1: every block is verified; bad ones are reported, not imported."""
    client = _client(data_dir, STREAM_TIMEOUT_S)
    stream, size = _open_source(car_file)
    try:
        with _progress(size, "import") as progress:
            task = progress.add_task("importing", total=size)
            result = client.post("/canon/import", content=_pieces(stream, progress, task))
    finally:
        stream.close()

    def human() -> None:
        stdout.print(f"imported {result['imported']} blocks; roots {', '.join(result['roots']) or '-'}")
        for bad in result["bad_blocks"]:
            stdout.print(f"bad block {bad['cid']} at byte {bad['offset']}: {bad['reason']}")

    emit(as_json, result, human)
    if result["bad_blocks"]:
        sys.exit(1)


@canon.command("log")
@click.option("--start", default=0, type=int)
@click.option("--limit", default=100, type=int)
@data_dir_option
@json_option
def canon_log(start: int, limit: int, data_dir: str | None, as_json: bool) -> None:
    """Entries of the node's signed canon log."""
    result = _client(data_dir).get("/canon/log", params={"start": start, "limit": limit})

    def human() -> None:
        table = Table("#", "type", "time", "author", "cid", box=None)
        for e in result["entries"]:
            table.add_row(str(e["index"]), e["type"], str(e["time"]), e["author"][:16], e["cid"])
        stdout.print(table)

    emit(as_json, result, human)


@canon.command("checkpoint")
@click.option("--sign", is_flag=True, help="Sign a new checkpoint of the whole log first.")
@data_dir_option
def canon_checkpoint(sign: bool, data_dir: str | None) -> None:
    """Print the canon log's signed checkpoint (C2SP signed note)."""
    client = _client(data_dir)
    method = "POST" if sign else "GET"
    note = client.request(method, "/api/v1/canon/log/checkpoint", raw=True)
    sys.stdout.write(note.decode())


# -- worlds -------------------------------------------------------------------------
@cli.group()
def world() -> None:
    """Worlds: signed, mergeable key-value state (Merkle search trees)."""


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word is a string: `world set w greeting hello`


@world.command("set")
@click.argument("name")
@click.argument("key")
@click.argument("value")
@data_dir_option
@json_option
def world_set(name: str, key: str, value: str, data_dir: str | None, as_json: bool) -> None:
    """Set KEY to VALUE (JSON; links as {"/": CID}); signs and logs a commit."""
    result = _client(data_dir).post(f"/worlds/{name}", json={"set": {key: _parse_value(value)}})
    emit(as_json, result, lambda: stdout.print(f"{name} @ {result['head']} (seq {result['seq']})"))


@world.command("delete")
@click.argument("name")
@click.argument("keys", nargs=-1, required=True)
@data_dir_option
@json_option
def world_delete(name: str, keys: tuple[str, ...], data_dir: str | None, as_json: bool) -> None:
    """Delete KEYs; signs and logs a commit."""
    result = _client(data_dir).post(f"/worlds/{name}", json={"delete": list(keys)})
    emit(as_json, result, lambda: stdout.print(f"{name} @ {result['head']} (seq {result['seq']})"))


@world.command("get")
@click.argument("name")
@click.argument("key")
@click.option("--at", default=None, help="A past commit or root CID.")
@data_dir_option
@json_option
def world_get(name: str, key: str, at: str | None, data_dir: str | None, as_json: bool) -> None:
    """Print KEY's value."""
    params = {"at": at} if at else None
    result = _client(data_dir).get(f"/worlds/{name}/keys/{key}", params=params)
    emit(as_json, result, lambda: stdout.print(json.dumps(result["value"])))


@world.command("list")
@click.argument("name", required=False)
@click.option("--prefix", default=None)
@data_dir_option
@json_option
def world_list(name: str | None, prefix: str | None, data_dir: str | None, as_json: bool) -> None:
    """List worlds, or NAME's keys and values."""
    client = _client(data_dir)
    if name is None:
        result = client.get("/worlds")
        emit(as_json, result, print_lines(result["worlds"]))
        return
    result = client.get(f"/worlds/{name}/entries", params={"prefix": prefix} if prefix else None)

    def human() -> None:
        for row in result["entries"]:
            stdout.print(f"{row['key']}\t{json.dumps(row['value'])}")

    emit(as_json, result, human)


@world.command("diff")
@click.argument("name")
@click.argument("from_ref", metavar="FROM")
@click.argument("to_ref", metavar="[TO]", required=False)
@data_dir_option
@json_option
def world_diff(name: str, from_ref: str, to_ref: str | None, data_dir: str | None,
               as_json: bool) -> None:
    """Changes from commit/root FROM to TO (default: the current head)."""
    params = {"from": from_ref, **({"to": to_ref} if to_ref else {})}
    result = _client(data_dir).get(f"/worlds/{name}/diff", params=params)

    def human() -> None:
        for c in result["changes"]:
            sign = "+" if c["old"] is None else "-" if c["new"] is None else "~"
            stdout.print(f"{sign} {c['key']}")
        stdout.print(f"{len(result['changes'])} changes, {result['blocks_read']} blocks read")

    emit(as_json, result, human)


@world.command("history")
@click.argument("name")
@click.option("--limit", default=20, type=int)
@data_dir_option
@json_option
def world_history(name: str, limit: int, data_dir: str | None, as_json: bool) -> None:
    """NAME's commits, newest first."""
    result = _client(data_dir).get(f"/worlds/{name}/history", params={"limit": limit})

    def human() -> None:
        for c in result["history"]:
            stdout.print(f"{c['seq']:>5}  {c['time']}  {c['commit']}")

    emit(as_json, result, human)


@world.command("show")
@click.argument("name")
@data_dir_option
@json_option
def world_show(name: str, data_dir: str | None, as_json: bool) -> None:
    """NAME's head commit, root and size."""
    result = _client(data_dir).get(f"/worlds/{name}")
    emit(as_json, result, print_lines(f"{k:<6} {v}" for k, v in result.items()))
