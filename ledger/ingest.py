"""The ledger's validation loop: decode → check the chain → verify the signature → apply.

Two implementations with the same names and byte-identical results (the same outcomes and
reason codes, the same state, log bytes and state root): the compiled ``_ingest_c``
(Cython; signatures checked by calling libsodium directly) and the pure-Python
``_ingest_py``, which documents the loop step by step. The compiled one is used when it is
built. ``N3XUS_PURE_PYTHON=1`` forces the pure one; ``N3XUS_REQUIRE_COMPILED=1`` turns a
missing extension into an ImportError, so a test run cannot silently measure the slow path.
:data:`IMPLEMENTATION` says which one is in use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from n3xus.canon.twins import PURE_ENV as PURE_ENV
from n3xus.canon.twins import REQUIRE_COMPILED_ENV as REQUIRE_COMPILED_ENV
from n3xus.canon.twins import select_twin

__all__ = [
    "IMPLEMENTATION",
    "Accepted",
    "LedgerView",
    "MemoryView",
    "Outcome",
    "Rejected",
    "ingest",
    "ingest_entry",
    "replay",
]

_COMPILED_MODULE = "n3xus.ledger._ingest_c"
_PURE_MODULE = "n3xus.ledger._ingest_py"

_impl, IMPLEMENTATION = select_twin(_COMPILED_MODULE, _PURE_MODULE, "ledger ingest")

if TYPE_CHECKING:
    # The pure twin is the typed contract; the compiled twin has the same names.
    from ._ingest_py import Accepted as Accepted
    from ._ingest_py import LedgerView as LedgerView
    from ._ingest_py import MemoryView as MemoryView
    from ._ingest_py import Outcome as Outcome
    from ._ingest_py import Rejected as Rejected
    from ._ingest_py import ingest as ingest
    from ._ingest_py import ingest_entry as ingest_entry
    from ._ingest_py import replay as replay
else:
    globals().update({name: getattr(_impl, name) for name in __all__ if name != "IMPLEMENTATION"})
