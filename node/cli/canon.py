"""``n3xus canon …``: the canon memory from the command line.

All of it goes through the running node's HTTP API (the node owns LMDB; a second
process must never open it). Large uploads and downloads stream, with a progress
bar on stderr when stderr is a terminal (rich is imported only then).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import IO, Any

import click

from .app import client_for, data_dir_option, echo, emit, json_option, output_option
from .client import path_of
from .output import output_stream, table, write_output

# Streaming uploads read the source in pieces of this size: big enough to keep the
# HTTP overhead small, small enough that memory stays flat for any file size.
UPLOAD_PIECE_BYTES = 1024 * 1024
# Uploads, downloads, exports and GC may take long on a big store.
STREAM_TIMEOUT_S = 3600.0


class _Meter:
    """Counts bytes through a transfer; draws a rich progress bar when stderr is a TTY."""

    def __init__(self, label: str, total: int | None) -> None:
        self.done = 0
        self._bar: Any = None
        self._context: AbstractContextManager[Any] = nullcontext()
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            progress = Progress("[progress.description]{task.description}", BarColumn(),
                                DownloadColumn(), TransferSpeedColumn(),
                                console=Console(stderr=True), transient=True)
            self._context = progress
            self._bar = (progress, progress.add_task(label, total=total))

    def __enter__(self) -> _Meter:
        self._context.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)

    def add(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar[0].update(self._bar[1], advance=count)


def _pieces(source: IO[bytes], meter: _Meter) -> Iterator[bytes]:
    while piece := source.read(UPLOAD_PIECE_BYTES):
        meter.add(len(piece))
        yield piece


def _open_source(path: str) -> tuple[IO[bytes], int | None]:
    if path == "-":
        return sys.stdin.buffer, None
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from exc
    return f, os.fstat(f.fileno()).st_size


def _download(client: Any, path: str, params: Any, output: str | None, label: str) -> int:
    """Stream GET ``path`` into ``-o output`` (stdout if None); returns bytes written.
    Nothing is created under the output name unless the download completes."""
    with client.stream(path, params) as (length, pieces), output_stream(output) as sink, \
            _Meter(label, length) as meter:
        for piece in pieces:
            sink.write(piece)
            meter.add(len(piece))
    return meter.done


@click.group()
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
    client = client_for(data_dir, STREAM_TIMEOUT_S)
    stream, size = _open_source(source)
    params = {"hash": hash_name, "pin": "false" if no_pin else "true"}
    try:
        if block:
            result = client.post("/canon/blocks", content=stream.read(),
                                 params={**params, "codec": codec})
        else:
            with _Meter("uploading", size) as meter:
                result = client.post("/canon/files", content=_pieces(stream, meter),
                                     params=params)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    emit(as_json, result, lambda: echo(result["cid"]))


@canon.command("get")
@click.argument("cid")
@output_option
@click.option("--block", is_flag=True, help="The raw block bytes, even of a file root.")
@data_dir_option
@json_option
def canon_get(cid: str, output: str | None, block: bool, data_dir: str | None,
              as_json: bool) -> None:
    """Write a file's content (or a block's bytes) to stdout or -o PATH."""
    if as_json and output in (None, "-"):
        raise click.UsageError("--json needs -o FILE (without it, stdout carries the content)")
    client = client_for(data_dir, STREAM_TIMEOUT_S)
    is_file = False
    if not block:
        is_file = "file" in client.get(path_of("/canon/stat/{}", cid))
    route = "/canon/files/{}" if is_file else "/canon/blocks/{}"
    written = _download(client, path_of(route, cid), None, output, "downloading")
    emit(as_json, {"cid": cid, "output": output, "bytes": written, "file": is_file}, lambda: None)


@canon.command("stat")
@click.argument("cid")
@data_dir_option
@json_option
def canon_stat(cid: str, data_dir: str | None, as_json: bool) -> None:
    """Size, codec, hash, links and pins of a block (and file size for a file root)."""
    result = client_for(data_dir).get(path_of("/canon/stat/{}", cid))

    def human() -> None:
        for key in ("cid", "size", "codec", "hash", "links"):
            echo(f"{key:<6} {result[key]}")
        echo(f"pins   {', '.join(result['pins']) or '-'}")
        if "file" in result:
            f = result["file"]
            echo(f"file   {f['size']} bytes in {f['chunks']} chunks of {f['chunk_size']}")

    emit(as_json, result, human)


@canon.command("pin")
@click.argument("cid")
@click.option("--name", default=None, help="Pin name (default: the CID).")
@click.option("--direct", is_flag=True, help="Pin only this block, not what it links to.")
@data_dir_option
@json_option
def canon_pin(cid: str, name: str | None, direct: bool, data_dir: str | None, as_json: bool) -> None:
    """Keep CID (and, unless --direct, everything it links to) through GC."""
    result = client_for(data_dir).post("/canon/pins", json={"cid": cid, "name": name or cid,
                                                           "recursive": not direct})
    emit(as_json, result, lambda: echo(f"pinned {result['cid']} as {result['name']} "
                                       f"({result['blocks']} blocks)"))


@canon.command("unpin")
@click.argument("name")
@data_dir_option
@json_option
def canon_unpin(name: str, data_dir: str | None, as_json: bool) -> None:
    """Remove the pin NAME (a CID for pins made by put/pin without --name)."""
    client = client_for(data_dir)
    result = client.request("DELETE", "/api/v1" + path_of("/canon/pins/{}", name))
    emit(as_json, result, lambda: echo(f"unpinned {result['name']}"))


@canon.command("pins")
@data_dir_option
@json_option
def canon_pins(data_dir: str | None, as_json: bool) -> None:
    """List pins."""
    result = client_for(data_dir).get("/canon/pins")

    def human() -> None:
        rows = [[p["name"], p["cid"], "recursive" if p["recursive"] else "direct"]
                for p in result["pins"]]
        for line in table(["name", "cid", "kind"], rows):
            echo(line)

    emit(as_json, result, human)


@canon.command("gc")
@data_dir_option
@json_option
def canon_gc(data_dir: str | None, as_json: bool) -> None:
    """Remove blocks that no pin, open upload or grace period protects."""
    result = client_for(data_dir, STREAM_TIMEOUT_S).post("/canon/gc")
    emit(as_json, result, lambda: echo(
        f"removed {result['blocks_removed']} blocks, freed {result['bytes_freed']} bytes"))


@canon.command("export")
@click.option("--car", "car_path", required=True, metavar="PATH",
              help="Output CARv1 file (`-` for stdout).")
@click.option("--author", default=None, help="Export everything this hex ed25519 key signed "
              "(default with no ROOT: this node's key).")
@click.argument("roots", nargs=-1)
@data_dir_option
@json_option
def canon_export(car_path: str, author: str | None, roots: tuple[str, ...], data_dir: str | None,
                 as_json: bool) -> None:
    """Write the DAGs under ROOT… (or everything an author signed) to a CAR file."""
    if roots and author:
        raise click.UsageError("give ROOTs or --author, not both")
    if as_json and car_path == "-":
        raise click.UsageError("--json needs --car FILE (with `-`, stdout carries the CAR)")
    client = client_for(data_dir, STREAM_TIMEOUT_S)
    if not roots and not author:
        author = client.get("/id")["public_key"]
    params = [("root", r) for r in roots] or [("author", author or "")]
    written = _download(client, "/canon/export", params, car_path, "exporting")
    result = {"car": car_path, "bytes": written, "roots": list(roots), "author": author}
    if car_path != "-":
        emit(as_json, result, lambda: echo(f"wrote {written} bytes to {car_path}"))


@canon.command("import")
@click.argument("car_file", metavar="IN.car")
@data_dir_option
@json_option
def canon_import(car_file: str, data_dir: str | None, as_json: bool) -> None:
    """Import a CARv1: every block is verified; bad ones are reported, not imported."""
    client = client_for(data_dir, STREAM_TIMEOUT_S)
    stream, size = _open_source(car_file)
    try:
        with _Meter("importing", size) as meter:
            result = client.post("/canon/import", content=_pieces(stream, meter))
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()

    def human() -> None:
        echo(f"imported {result['imported']} blocks; roots {', '.join(result['roots']) or '-'}")
        for bad in result["bad_blocks"]:
            echo(f"bad block {bad['cid']} at byte {bad['offset']}: {bad['reason']}")

    emit(as_json, result, human)
    if result["bad_blocks"]:
        sys.exit(1)


@canon.command("log")
@click.option("--start", default=0, type=click.IntRange(0))
@click.option("--limit", default=100, type=click.IntRange(0, 10_000))
@data_dir_option
@json_option
def canon_log(start: int, limit: int, data_dir: str | None, as_json: bool) -> None:
    """Entries of the node's signed canon log."""
    result = client_for(data_dir).get("/canon/log", params={"start": start, "limit": limit})

    def human() -> None:
        rows = [[str(e["index"]), e["type"], str(e["time"]), e["author"][:16], e["cid"]]
                for e in result["entries"]]
        for line in table(["#", "type", "time", "author", "cid"], rows):
            echo(line)

    emit(as_json, result, human)


def _note_fields(note: str) -> dict[str, Any]:
    """origin, size and root (base64) of a C2SP checkpoint note's first three lines."""
    lines = note.split("\n")
    size = lines[1] if len(lines) > 1 else ""
    return {"origin": lines[0], "size": int(size) if size.isdigit() else None,
            "root": lines[2] if len(lines) > 2 else None}


def emit_text(text: str, output: str | None, as_json: bool, key: str,
              extra: dict[str, Any] | None = None) -> None:
    """Print or write a text artifact (a checkpoint, proof or key); with --json, one
    document holding it (or, with -o FILE, where it went)."""
    if output is not None and output != "-":
        written = write_output(text, output)
        emit(as_json, {"output": output, "bytes": written, **(extra or {})},
             lambda: echo(f"wrote {written} bytes to {output}"))
    elif as_json:
        emit(True, {key: text, **(extra or {})}, lambda: None)
    else:
        write_output(text if text.endswith("\n") else text + "\n", None)


@canon.command("checkpoint")
@click.option("--sign", is_flag=True, help="Sign a new checkpoint of the whole log first.")
@output_option
@data_dir_option
@json_option
def canon_checkpoint(sign: bool, output: str | None, data_dir: str | None, as_json: bool) -> None:
    """Print the canon log's signed checkpoint (C2SP signed note)."""
    note = client_for(data_dir).text("POST" if sign else "GET", "/canon/log/checkpoint")
    emit_text(note, output, as_json, "checkpoint", _note_fields(note))


@canon.command("proof")
@click.argument("index", type=click.IntRange(0))
@output_option
@data_dir_option
@json_option
def canon_proof(index: int, output: str | None, data_dir: str | None, as_json: bool) -> None:
    """Offline inclusion proof (C2SP tlog-proof) of canon log entry INDEX against the
    last signed checkpoint (sign one with `canon checkpoint --sign`)."""
    bundle = client_for(data_dir).text("GET", path_of("/canon/log/proof/{}", str(index)))
    emit_text(bundle, output, as_json, "bundle", {"index": index})


# `canon fetch` (issue 8) lives in its own module.
from .fetch import canon_fetch  # noqa: E402

canon.add_command(canon_fetch)
