"""Content-addressed canon memory: strict DAG-CBOR, CIDv1 (BLAKE3 / SHA2-256),
an LMDB block store, the signed canon log, Merkle world state and CAR export.

Public API used by federated platforms and auditors::

    from n3xus import canon
    data = canon.encode({"hello": "world"})
    value = canon.decode(data)
    cid = canon.cid_of(data)              # CIDv1, dag-cbor, BLAKE3-256
    canon.CID("bafy...")                  # parse text or bytes
"""

from .cid import CID as CID
from .cid import cid_of as cid_of
from .codec import decode as decode
from .codec import encode as encode
from .errors import BlockNotFoundError as BlockNotFoundError
from .errors import CanonDecodeError as CanonDecodeError
from .errors import CanonEncodeError as CanonEncodeError
from .errors import CanonError as CanonError
from .errors import CorruptBlockError as CorruptBlockError
from .errors import LimitExceededError as LimitExceededError
from .errors import VerificationError as VerificationError

__all__ = [
    "CID",
    "BlockNotFoundError",
    "CanonDecodeError",
    "CanonEncodeError",
    "CanonError",
    "CorruptBlockError",
    "LimitExceededError",
    "VerificationError",
    "cid_of",
    "decode",
    "encode",
]
