"""Errors of the IMVU agents package.

Decoding errors (manifests, actions, approvals, wire messages) also subclass
:class:`ValueError`, as the canon codec's do, so a caller that only knows "bad input" can
catch that. Wire errors of /n3xus/imvu/1.0.0 are those of n3xus.protocol (local vs remote).
"""

from __future__ import annotations


class ImvuError(Exception):
    """Base of every error raised by ``n3xus.imvu``."""


class ManifestError(ImvuError, ValueError):
    """A manifest that does not decode strictly, breaks its schema, or whose creator
    signature does not verify."""


class RegistryError(ImvuError):
    """A registry operation that cannot be done: unknown agent, a name taken, an upgrade
    that does not follow the active version, a rollback with no previous version."""


class ActionError(ImvuError, ValueError):
    """Model output that is not exactly one well-formed action of the schema."""


class ApprovalError(ImvuError, ValueError):
    """A creator approval that does not decode, is not signed by the creator, or does not
    name the pending action."""


class SchedulerError(ImvuError):
    """Base of the inference scheduler's errors."""


class QueueFullError(SchedulerError):
    """The agent already has its maximum of queued requests (busy: try again later)."""


class SchedulerClosedError(SchedulerError):
    """The scheduler was stopped; no more requests are taken."""


class GenerationCancelled(SchedulerError):
    """The asker went away: the job was dropped from the queue or stopped between tokens."""


class DecisionError(ImvuError, ValueError):
    """A decision record (or a block it links) that does not decode or does not re-check."""
