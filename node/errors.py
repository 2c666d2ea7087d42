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


class ApiError(NodeError):
    """The node's HTTP API answered with an error (status and message kept)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"node API error {status}: {message}")
        self.status = status
        self.message = message
