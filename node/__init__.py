"""The n3xus node: CLI, configuration and identity, the libp2p host, the local HTTP
API and the trio task tree that ties them together. ``node/`` owns sockets, LMDB,
clocks and tasks; the protocol cores it drives are sans-IO."""

from typing import Any


def __getattr__(name: str) -> Any:
    # ``__version__`` is looked up on first use: importlib.metadata costs ~25 ms at
    # import, which every CLI call would otherwise pay (issue 7 §2).
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("n3xus")
    except PackageNotFoundError:  # running from a source tree that was never installed
        value = "0.0.0+unknown"
    globals()["__version__"] = value
    return value
