"""The per-entry steps of ledger v2: :func:`admit` (decode, network, signature: no state) and
:func:`apply_tx` (one transaction at its canonical position; :func:`apply_step` also records
what it overwrote, for the undo log), plus the outcome types.

Two implementations with the same names and byte-identical results (the same outcomes and
reason codes, the same state): the compiled ``_ingest_c`` (Cython; signatures checked by
calling libsodium directly) and the pure-Python ``_ingest_py``, which documents each step.
Each is split by role into twin modules: ``_ingest_verify_{c,py}`` (signature checks, the
compiled batch on native threads), ``_ingest_decode_{c,py}`` (decode, admission, the
verify-ahead triage) and ``_ingest_{c,py}`` (the positional step, the engine's replay loop,
the batch's state cache), which re-exports the other two; so importing ``_ingest_c`` needs
every compiled part. The compiled one is used when it is built. ``N3XUS_PURE_PYTHON=1`` forces the pure one;
``N3XUS_REQUIRE_COMPILED=1`` turns a missing extension into an ImportError, so a test run
cannot silently measure the slow path. :data:`IMPLEMENTATION` says which one is in use.
The canonical-order engine over these steps is ``engine.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from n3xus.canon.twins import PURE_ENV as PURE_ENV
from n3xus.canon.twins import REQUIRE_COMPILED_ENV as REQUIRE_COMPILED_ENV
from n3xus.canon.twins import select_twin

__all__ = [
    "IMPLEMENTATION",
    "VOID_REASONS",
    "Accepted",
    "Held",
    "MemoryView",
    "Outcome",
    "Pending",
    "Rejected",
    "StateCache",
    "admit",
    "apply_in_order",
    "apply_step",
    "apply_tx",
    "decode_envelope",
    "prepare_entries",
    "verify_signature",
    "verify_signatures",
    "verify_signatures_async",
]

_COMPILED_MODULE = "n3xus.ledger._ingest_c"
_PURE_MODULE = "n3xus.ledger._ingest_py"

_impl, IMPLEMENTATION = select_twin(_COMPILED_MODULE, _PURE_MODULE, "ledger ingest")

if TYPE_CHECKING:
    # The pure twin is the typed contract; the compiled twin has the same names.
    from ._ingest_py import VOID_REASONS as VOID_REASONS
    from ._ingest_py import Accepted as Accepted
    from ._ingest_py import Held as Held
    from ._ingest_py import MemoryView as MemoryView
    from ._ingest_py import Outcome as Outcome
    from ._ingest_py import Pending as Pending
    from ._ingest_py import Rejected as Rejected
    from ._ingest_py import StateCache as StateCache
    from ._ingest_py import admit as admit
    from ._ingest_py import apply_in_order as apply_in_order
    from ._ingest_py import apply_step as apply_step
    from ._ingest_py import apply_tx as apply_tx
    from ._ingest_py import decode_envelope as decode_envelope
    from ._ingest_py import prepare_entries as prepare_entries
    from ._ingest_py import verify_signature as verify_signature
    from ._ingest_py import verify_signatures as verify_signatures
    from ._ingest_py import verify_signatures_async as verify_signatures_async
else:
    globals().update({name: getattr(_impl, name) for name in __all__ if name != "IMPLEMENTATION"})
