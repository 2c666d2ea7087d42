"""``-o PATH`` (issue 7 §3): stdout for ``-``, temp file + rename only for regular
files, in place for symlinks, FIFOs and devices, one-line errors otherwise; and the
peer ID the CLI derives without libp2p is libp2p's."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import click
import pytest

from n3xus.node.cli.output import output_stream, table, write_output
from n3xus.node.cli.peerid import base58btc, peer_id_from_seed
from n3xus.node.p2p.host import keypair_from_seed, peer_id_of


def test_peer_id_equals_libp2p_for_any_seed() -> None:
    for index in range(64):
        seed = bytes([index]) * 32 if index < 32 else os.urandom(32)
        assert peer_id_from_seed(seed) == peer_id_of(keypair_from_seed(seed))
    assert base58btc(b"\0\0\x01") == "112"  # leading zero bytes are '1's


def test_regular_file_is_replaced_atomically_and_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    target.chmod(0o640)
    with pytest.raises(RuntimeError), output_stream(str(target)) as sink:
        sink.write(b"half of the new content")
        assert target.read_text() == "old"  # readers never see a partial file
        raise RuntimeError("download broke")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    assert write_output("new\n", str(target)) == 4
    assert target.read_text() == "new\n" and stat.S_IMODE(target.stat().st_mode) == 0o640
    fresh = tmp_path / "fresh.txt"
    write_output(b"x", str(fresh))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask


def test_symlink_fifo_and_device_are_written_in_place(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_output("through the link\n", str(link))
    assert link.is_symlink() and real.read_text() == "through the link\n"

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    write_output("into the pipe\n", str(fifo))
    reader.join(10)
    assert received == [b"into the pipe\n"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)

    write_output("discarded\n", "/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # still the device


def test_dash_is_stdout_and_errors_are_one_line(tmp_path: Path,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    write_output("to stdout\n", "-")
    assert capfd.readouterr().out == "to stdout\n"
    for path, why in ((tmp_path / "missing" / "x.txt", "does not exist"),
                      (tmp_path, "is a directory")):
        with pytest.raises(click.ClickException) as caught:
            write_output("x", str(path))
        message = caught.value.format_message()
        assert message.startswith(f"cannot write {path}") and why in message
        assert "\n" not in message
    with pytest.raises(click.ClickException, match="cannot write /proc/version"):
        write_output("x", "/proc/version")  # exists, not regular, refuses writes (even root)


def test_table_aligns_columns() -> None:
    assert table(["a", "bb"], [["xxx", "y"], ["z", "w"]]) == ["a    bb", "xxx  y", "z    w"]
