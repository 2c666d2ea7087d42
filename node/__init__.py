"""The n3xus node: CLI, configuration and identity, the libp2p host, the local HTTP
API and the trio task tree that ties them together. ``node/`` owns sockets, LMDB,
clocks and tasks; the protocol cores it drives are sans-IO."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("n3xus")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
