"""The node's one LMDB environment. Components (block store, canon log, ledger)
open their own named sub-databases in it, prefixed by their package
(``b"canon/blocks"``, ``b"ledger/..."``), so one write transaction can span them:
the ledger's state and its log append commit together."""

from __future__ import annotations

from pathlib import Path

import lmdb

from .errors import ConfigError

# Named sub-databases the packages may open. Each package opens a handful; 128
# leaves room for the later issues (agents, federation, performances).
MAX_NAMED_DBS = 128
# Concurrent read transactions: API handlers run in worker threads plus the trio
# thread; 126 is LMDB's default and ample for one node process.
MAX_READERS = 126


def open_environment(path: Path, map_size_mib: int) -> lmdb.Environment:
    """Open (creating if needed) the LMDB environment at ``path``."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return lmdb.open(
            str(path),
            map_size=map_size_mib * 1024 * 1024,
            max_dbs=MAX_NAMED_DBS,
            max_readers=MAX_READERS,
            subdir=True,
            # sync=True and metasync=True (the defaults): a transaction acknowledged
            # to a client survives a crash or power loss.
        )
    except lmdb.Error as exc:
        raise ConfigError(f"cannot open the LMDB environment at {path}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from exc
