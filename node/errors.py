"""Errors of the node package. Every one of them is something an operator can act
on: the CLI prints its message on one line and exits non-zero."""

from __future__ import annotations


class NodeError(Exception):
    """Base of every error raised by ``n3xus.node``."""


class ConfigError(NodeError):
    """The data dir, config file, key file or token is missing, unreadable or corrupt."""


class AddressError(NodeError, ValueError):
    """A multiaddr or HOST:PORT that is malformed, of an unknown protocol, or unusable."""


class NodeRunningError(NodeError):
    """Another node process holds the data dir (its lock is taken)."""


class NodeNotRunningError(NodeError):
    """A command needed the running node's API and found none."""


# How an API error reads on the command line: what happened, then the node's words
# (``not found: block bafy… is not stored on this node``). Other statuses need no
# label: the node's message says it (``zzz is not a CID``).
_STATUS_LABELS = {401: "unauthorized", 404: "not found", 409: "conflict", 413: "too large",
                  416: "out of range", 422: "rejected", 500: "the node failed",
                  504: "timed out"}


class ApiError(NodeError):
    """The node's HTTP API answered with an error (status, message and code kept)."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        label = _STATUS_LABELS.get(status)
        super().__init__(f"{label}: {message}" if label else message)
        self.status = status
        self.message = message
        self.code = code
