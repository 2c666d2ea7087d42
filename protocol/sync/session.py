"""``/n3xus/ledger-sync/2.0.0`` on one stream, sans IO (specs/protocol-ledger-sync.md §2):
the frames, either side's state machine, and the budgets of one exchange.

The messages are those of specs/ledger.md §14.1 (``query``, ``summary``, ``pull``,
``chain``) in the common framing of specs/protocol.md: each is one varint frame whose body
is the canonical DAG-CBOR map of the §14.1 message with its ``t`` key named ``type``.

One exchange per stream; the opener is the *initiator*. It sends requests (``query``,
``pull``), at most :data:`MAX_REQUESTS_IN_FLIGHT` unanswered, and pushes (``chain``, never
answered); the responder answers each request in order (``summary`` for a query, ``chain``
for a pull). :data:`TRANSITIONS` is the state table (data, rendered into the spec by
``protocol/tables.py``); :class:`SyncSession` adds what a table cannot say: which request
an answer answers, and the exchange's budgets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Final

from n3xus.canon.codec import encode
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import LocalProtocolError, MessageError, RemoteProtocolError
from n3xus.protocol.framing import FrameDecoder, decode_message, encode_frame

from .messages import (
    FANOUT,
    MAX_DEPTH,
    MAX_ENTRIES,
    MAX_ENTRY_BYTES,
    MAX_PUSHES_PER_SUMMARY,
    MAX_QUERY_RANGES,
    MAX_RANGE_ROWS,
    Chain,
    Message,
    Pull,
    Query,
    Range,
    RangeRows,
    Summary,
    from_value,
    to_value,
)

PROTOCOL_ID: Final = "/n3xus/ledger-sync/2.0.0"
MAX_FRAME_BYTES: Final = MAX_ENTRIES * (MAX_ENTRY_BYTES + 8) + 4096
"""The largest message: a chain of 64 entries of the largest entry size (a fraud proof),
with their CBOR headers; a full summary (256 ranges x 16 rows of ~80 bytes) is smaller."""
MAX_REQUESTS_IN_FLIGHT: Final = 16
"""Requests sent ahead of their answers: keeps the stream busy across round trips (16
chains of 64 entries, or 16 summaries) without letting one exchange hold more than ~16 MiB
of answers in flight."""
MAX_PULLS_PER_EXCHANGE: Final = 8192
"""Pulls in one exchange (512k entries at most): a catch-up is a few long exchanges, and
one peer cannot keep a responder serving chains forever. The rest is found next round."""
MAX_PUSHES_PER_EXCHANGE: Final = 8192
"""Chains pushed in one exchange: the same bound, for what the responder must ingest."""
MAX_RANGES_PER_EXCHANGE: Final = 131_072
"""Ranges queried in one exchange: the ~70,000 of the deepest useful descent into a
million accounts that all differ (16**4 leaves and their parents), with room to spare;
answering them costs a responder a few seconds of one core at most."""
MAX_EXCHANGES_PER_PEER: Final = 1
"""Exchanges a peer may hold open with us at once: an honest initiator never overlaps its
exchanges, so one at a time bounds a peer's claim on us to one exchange's budgets (the
stream rate of every /n3xus/ protocol, the node's PeerBook, bounds how often it may start one)."""

EOF: Final = "eof"


class Role:
    INITIATOR = "initiator"
    RESPONDER = "responder"


TRANSITIONS: Final[dict[tuple[str, str], dict[str, str]]] = {
    (Role.INITIATOR, "reconciling"): {"summary": "reconciling", "chain": "reconciling",
                                      EOF: "done"},
    (Role.RESPONDER, "serving"): {"query": "serving", "pull": "serving", "chain": "serving",
                                  EOF: "done"},
}
"""(role, state) -> {received message type or "eof": next state}. Anything else received is
``unexpected-message``; a message type the protocol does not define is ``unsupported``.
Also checked (:class:`SyncSession`): an initiator's ``summary`` or ``chain`` answers its
oldest unanswered request, which is a ``query`` of the summary's ranges or a ``pull`` of
the chain's account (else ``unexpected-message``), and its ``eof`` comes with no request
unanswered (else ``truncated``); a responder counts the exchange's budgets (over one:
``unexpected-message``)."""
INITIAL: Final = {Role.INITIATOR: "reconciling", Role.RESPONDER: "serving"}


def transition_rows() -> list[tuple[str, str, str, str]]:
    """:data:`TRANSITIONS` as the spec's table rows (role, state, received, next state)."""
    return [(role, state, "end of stream" if event == EOF else f"`{event}`", after)
            for (role, state), events in TRANSITIONS.items() for event, after in events.items()]

_FIELDS: Final = {"query": ("r",), "summary": ("r",), "pull": ("a", "s"), "chain": ("a", "e")}

LEDGER_SYNC_LIMITS: Final[list[tuple[str, int | float, str]]] = [
    ("MAX_FRAME_BYTES", MAX_FRAME_BYTES, "a chain of 64 entries of 32,832 bytes (the largest "
     "fraud proof) with their headers, plus 4 KiB; a full summary is smaller"),
    ("FANOUT", FANOUT, "sub-ranges of a split range (one nibble): 16 fingerprints cost less "
     "than a few rows, and a million accounts need 4-5 levels"),
    ("MAX_DEPTH", MAX_DEPTH, "nibbles of an account: a range this deep holds one account and "
     "is always listed, so an exchange ends after at most 65 rounds of queries"),
    ("MAX_RANGE_ROWS", MAX_RANGE_ROWS, "rows of a listed range; a range holding more accounts "
     "is split (fewer rows: more round trips; more rows: more bytes)"),
    ("MAX_QUERY_RANGES", MAX_QUERY_RANGES, "ranges per query and items per summary: a summary "
     "holds at most 4,096 rows (~330 KiB)"),
    ("MAX_ENTRIES", MAX_ENTRIES, "entries per chain: a longer chain comes over several pulls"),
    ("MAX_REQUESTS_IN_FLIGHT", MAX_REQUESTS_IN_FLIGHT, "unanswered requests of an initiator "
     "(reference): pipelining without holding more than ~16 MiB of answers in flight"),
    ("MAX_RANGES_PER_EXCHANGE", MAX_RANGES_PER_EXCHANGE, "ranges queried in one exchange: a "
     "full descent into a million accounts that all differ, with room"),
    ("MAX_PULLS_PER_EXCHANGE", MAX_PULLS_PER_EXCHANGE, "pulls in one exchange; the rest comes "
     "in the next exchange"),
    ("MAX_PUSHES_PER_EXCHANGE", MAX_PUSHES_PER_EXCHANGE, "chains pushed in one exchange"),
    ("MAX_EXCHANGES_PER_PEER", MAX_EXCHANGES_PER_PEER, "exchanges a responder serves one peer "
     "at once (another: `busy`); an honest initiator never overlaps its exchanges"),
    ("MAX_PUSHES_PER_SUMMARY", MAX_PUSHES_PER_SUMMARY, "chains an initiator pushes for one "
     "summary (reference): no more than the rows a summary can list"),
]


# --- wire ---------------------------------------------------------------------------------


def encode_sync(message: Message) -> bytes:
    """One frame: the §14.1 map of ``message`` with ``t`` renamed ``type``."""
    value = to_value(message)
    kind = value.pop("t")
    if kind == "gossip":
        raise LocalProtocolError("gossip travels on gossipsub, not on ledger-sync streams")
    return encode_frame(encode({"type": kind, **value}), MAX_FRAME_BYTES)


def decode_sync(body: bytes) -> Message:
    """A frame body to a message. Fields this version does not know are ignored (a later
    minor version may add some); the known ones are checked strictly (§14.1).
    MessageError/FrameError (ValueErrors) on anything else; PeerError for ``error``."""
    value = decode_message(body)
    kind = value["type"]
    fields = _FIELDS.get(kind)
    if fields is None:
        raise MessageError(f"ledger-sync has no {kind[:64]!r} message", ErrorCode.UNSUPPORTED)
    missing = [name for name in fields if name not in value]
    if missing:
        raise MessageError(f"a {kind} message lacks {missing}")
    return from_value({"t": kind, **{name: value[name] for name in fields}})


def kind_of(message: Message) -> str:
    return str(to_value(message)["t"])


# --- the session --------------------------------------------------------------------------


class SyncSession:
    """One side of one exchange: frames in, checked messages out; requests sent are
    recorded with :meth:`sent` so that answers can be matched to them."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.state = INITIAL[role]
        self._frames = FrameDecoder(MAX_FRAME_BYTES)
        self._unanswered: deque[frozenset[Range] | bytes] = deque()
        self.used = {"ranges": 0, "pulls": 0, "pushes": 0}

    @property
    def outstanding(self) -> int:
        return len(self._unanswered)

    @property
    def deadline(self) -> float | None:
        return self._frames.deadline

    def check_deadline(self, now: float) -> None:
        self._frames.check_deadline(now)

    def receive_data(self, data: bytes, now: float) -> None:
        self._frames.receive_data(data, now)

    def receive_eof(self) -> None:
        self._frames.receive_eof()

    def next_event(self) -> Message | str | None:
        """The next received message (checked against the table and the requests), :data:`EOF`
        once the peer closed its side, or None when more bytes are needed."""
        if self.state == "done":
            return None
        body = self._frames.next_frame()
        if body is None:
            if not self._frames.at_end:
                return None
            self._advance(EOF)
            return EOF
        message = decode_sync(body)
        self._advance(kind_of(message))
        if self.role == Role.INITIATOR:
            self._match(message)
        else:
            self._count(message)
        return message

    def _advance(self, event: str) -> None:
        allowed = TRANSITIONS.get((self.role, self.state), {})
        if event not in allowed:
            raise RemoteProtocolError(f"{event} is not expected by the {self.role} in state "
                                      f"{self.state}", ErrorCode.UNEXPECTED_MESSAGE)
        if event == EOF and self._unanswered:
            raise RemoteProtocolError(f"the exchange ended with {len(self._unanswered)} "
                                      "requests unanswered", ErrorCode.TRUNCATED)
        self.state = allowed[event]

    def _match(self, message: Message) -> None:
        """An initiator's answer must answer its oldest unanswered request."""
        request = self._unanswered.popleft() if self._unanswered else None
        if isinstance(message, Summary) and isinstance(request, frozenset):
            if all(item.range in request for item in message.items):
                return
            raise RemoteProtocolError("a summary of ranges that were not queried",
                                      ErrorCode.UNEXPECTED_MESSAGE)
        if isinstance(message, Chain) and request == message.account:
            return
        raise RemoteProtocolError(f"a {kind_of(message)} that answers no request of its kind "
                                  "(answers come in request order)", ErrorCode.UNEXPECTED_MESSAGE)

    def _count(self, message: Message) -> None:
        """A responder holds the initiator to the exchange's budgets."""
        if isinstance(message, Query):
            self._spend("ranges", len(message.ranges), MAX_RANGES_PER_EXCHANGE)
        elif isinstance(message, Pull):
            self._spend("pulls", 1, MAX_PULLS_PER_EXCHANGE)
        elif isinstance(message, Chain):
            self._spend("pushes", 1, MAX_PUSHES_PER_EXCHANGE)

    def _spend(self, budget: str, amount: int, limit: int) -> None:
        self.used[budget] += amount
        if self.used[budget] > limit:
            raise RemoteProtocolError(f"more than {limit} {budget} in one exchange",
                                      ErrorCode.UNEXPECTED_MESSAGE)

    def sent(self, message: Message) -> None:
        """Record a message this side sent (requests wait for their answers)."""
        if isinstance(message, Query | Pull) and self.role != Role.INITIATOR:
            raise LocalProtocolError("only the initiator sends requests")
        if isinstance(message, Query):
            self._unanswered.append(frozenset(r.range for r in message.ranges))
            self.used["ranges"] += len(message.ranges)
        elif isinstance(message, Pull):
            self._unanswered.append(message.account)
            self.used["pulls"] += 1
        elif isinstance(message, Chain) and self.role == Role.INITIATOR:
            self.used["pushes"] += 1


def plan_pulls(pulls: Sequence[Pull], peer_next: dict[bytes, int], limit: int) -> list[Pull]:
    """``pulls`` with each pull from an account whose chain at the peer (``peer_next``: the
    peer's ``next`` of the accounts it listed unfrozen) is more than one chunk ahead
    extended by pulls of the following chunks (below the freeze there is one transaction
    per seq, so chunk k starts at ``s + 64k``): the whole difference is fetched in one
    exchange, pipelined. At most ``limit`` pulls."""
    planned: list[Pull] = []
    for pull in pulls:
        if len(planned) >= limit:
            break
        planned.append(pull)
        seq = pull.from_seq + MAX_ENTRIES
        while seq < peer_next.get(pull.account, 0) and len(planned) < limit:
            planned.append(Pull(pull.account, seq))
            seq += MAX_ENTRIES
    return planned


def peer_next_seqs(summary: Summary) -> dict[bytes, int]:
    """The peer's ``next`` of every unfrozen account a summary lists (for :func:`plan_pulls`)."""
    return {row.account: row.next_seq for item in summary.items if isinstance(item, RangeRows)
            for row in item.rows if row.freeze is None}
