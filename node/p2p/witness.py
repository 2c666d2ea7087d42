"""Witnessing peers' logs on the node: keep each peer's latest checkpoints, check every new
one for consistency (fetching RFC 9162 proofs over ``/n3xus/witness/1.0.0``), catch split
views, store the proof and gossip it (specs/protocol-hello.md §8, protocol-witness.md).

Checkpoints arrive in hellos (:meth:`WitnessService.hello_received`) and from a poll of the
accepted peers every :data:`WITNESS_POLL_S`. Each goes through the sans-IO
:class:`~n3xus.protocol.witness.CheckpointWitness` of its log (origin); a ``need-proof``
verdict fetches the consistency proof from the peer that showed the checkpoint. A split view
is written to ``<data dir>/evidence/split-view-<hash>.cbor`` (verify it with
``n3xus audit split-view FILE``), the log's owner is penalized with ``split-view`` (a ban),
and the proof is sent to every other accepted peer, which checks it offline and passes it on
once (a proof already known is acknowledged with ``new: false`` and goes no further).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost

from n3xus.canon.errors import CanonError
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import DeadlineExceeded, EvidenceError, RemoteProtocolError
from n3xus.protocol.hello import PeerHello
from n3xus.protocol.identity import peer_id_of_origin
from n3xus.protocol.witness import CheckpointWitness, SplitViewProof, Verdict, verify_split_view
from n3xus.protocol.witness_wire import (
    WITNESS_PROTOCOL_ID,
    Ack,
    Checkpoints,
    Consistency,
    GetCheckpoints,
    GetConsistency,
    Request,
    Response,
    SplitViewGossip,
    WitnessRequester,
    WitnessResponder,
)

from ..logs import get_logger
from . import host as p2p
from .hello import SigningClock, latest_checkpoints
from .streams import CoreStream, guarded, serve

if TYPE_CHECKING:
    from ..runtime import Node
    from ..services.peers import PeerBook

log = get_logger("n3xus.witness")

WITNESS_POLL_S: Final = 30.0
"""How often the accepted peers are asked for their latest checkpoints: logs grow with
every write; a split view shown to two peers is caught within one poll of both."""
MAX_WITNESSED_LOGS: Final = 4096
"""Peer logs followed (two per peer): the oldest ones beyond this are forgotten."""
MAX_QUEUED_CHECKS: Final = 1024
"""Checkpoints waiting to be checked; more are dropped (the next poll brings them back)."""
OPEN_STREAM_TIMEOUT_S: Final = 10.0
WITNESS_DB: Final = b"federation/witness"
"""LMDB sub-database: log origin (UTF-8) -> the latest checkpoint note verified for it, so
witnessing survives a restart (a log that forks while we are down is still caught)."""
MAX_GOSSIP_FANOUT: Final = 32
"""Peers a new proof is sent to at once; each passes it on once, so it floods the network."""


def log_name_of(origin: str) -> str:
    return "canon" if origin.startswith("n3xus.net/canon/") else "ledger"


_Message = TypeVar("_Message", covariant=True)


class _OneMessageCore(Protocol[_Message]):
    """What :func:`_receive_one` needs of a witness side (requester or responder)."""

    @property
    def deadline(self) -> float | None: ...
    def check_deadline(self, now: float) -> None: ...
    def receive_eof(self) -> None: ...
    def receive_data(self, data: bytes, now: float) -> _Message | None: ...


async def _receive_one(channel: CoreStream, core: _OneMessageCore[_Message]) -> _Message | None:
    """Read until ``core`` has the one message of its side of the exchange. None when the
    peer closed first and the core let it pass (``receive_eof`` raises on a breach)."""
    while True:
        try:
            data = await channel.receive(core.deadline)
        except DeadlineExceeded:
            core.check_deadline(trio.current_time())
            raise
        if not data:
            core.receive_eof()
            return None
        message = core.receive_data(data, trio.current_time())
        if message is not None:
            return message


class WitnessService:
    def __init__(self, node: Node, host: BasicHost, peerbook: PeerBook,
                 signing_clock: SigningClock) -> None:
        self.signing_clock = signing_clock
        self.node = node
        self.host = host
        self.peerbook = peerbook
        self.witnesses: dict[str, CheckpointWitness] = {}
        self.evidence: dict[str, Path] = {}  # sha256 of the proof file -> where it is kept
        self.checks = 0
        self.proofs_fetched = 0
        self.split_views = 0
        self._send, self._receive = trio.open_memory_channel[tuple[str, str]](MAX_QUEUED_CHECKS)
        self._nursery: trio.Nursery | None = None
        self._db: Any = None

    def _load(self) -> None:
        """The witnessed checkpoints and the proofs kept before the last stop."""
        env = self.node.env
        if env is not None:
            self._db = env.open_db(WITNESS_DB)
            with env.begin(db=self._db) as txn:
                for key, value in txn.cursor():
                    if len(self.witnesses) >= MAX_WITNESSED_LOGS:
                        break
                    origin = bytes(key).decode("utf-8")
                    try:
                        self.witnesses[origin] = CheckpointWitness(origin, bytes(value).decode("utf-8"))
                    except (RemoteProtocolError, ValueError) as exc:
                        log.warning("dropping a stored checkpoint", origin=origin, error=str(exc))
        if self.evidence_dir.is_dir():
            for path in sorted(self.evidence_dir.glob("split-view-*.cbor")):
                self.evidence[hashlib.sha256(path.read_bytes()).hexdigest()] = path

    def _store(self, witness: CheckpointWitness) -> None:
        env = self.node.env
        if env is None or self._db is None or witness.latest is None:
            return
        with env.begin(write=True, db=self._db) as txn:
            txn.put(witness.origin.encode("utf-8"), witness.latest.encode("utf-8"))

    @property
    def evidence_dir(self) -> Path:
        return Path(self.node.data_dir.path) / "evidence"

    # -- input -------------------------------------------------------------------------
    def hello_received(self, result: PeerHello) -> None:
        for note in (result.hello.canon, result.hello.ledger):
            if note is not None:
                self._queue(result.peer_id, note)

    def _queue(self, peer_id: str, note: str) -> None:
        try:
            self._send.send_nowait((peer_id, note))
        except trio.WouldBlock:
            log.warning("witness queue full; a checkpoint waits for the next poll", peer_id=peer_id)

    # -- tasks -------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._load()
        self.host.set_stream_handler(TProtocol(WITNESS_PROTOCOL_ID), self._handle)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._poll)
            task_status.started(self)
            async for peer_id, note in self._receive:
                await self.check(peer_id, note)

    async def _poll(self) -> None:
        while True:
            await trio.sleep(WITNESS_POLL_S)
            for peer_id, _ in p2p.connected_peers(self.host):
                if not self.peerbook.is_accepted(peer_id):
                    continue
                response = await self.request(peer_id, GetCheckpoints())
                if isinstance(response, Checkpoints):
                    for note in (response.canon, response.ledger):
                        if note is not None:
                            self._queue(peer_id, note)

    async def check(self, peer_id: str, note: str) -> Verdict | None:
        """Check one checkpoint shown by ``peer_id``; answers the verdict (None: refused)."""
        self.checks += 1
        try:
            origin = note.split("\n", 1)[0]
            witness = self.witnesses.get(origin)
            if witness is None:
                peer_id_of_origin(origin)  # a n3xus log origin, or it is not ours to follow
                witness = self.witnesses[origin] = CheckpointWitness(origin)
                while len(self.witnesses) > MAX_WITNESSED_LOGS:
                    del self.witnesses[next(iter(self.witnesses))]  # (stays in LMDB)
            observation = witness.observe(note)
            if observation.verdict is Verdict.NEED_PROOF and observation.proof_sizes is not None:
                old, new = observation.proof_sizes
                response = await self.request(peer_id, GetConsistency(log_name_of(origin), old, new))
                if not isinstance(response, Consistency):
                    return None
                self.proofs_fetched += 1
                observation = witness.observe(note, response.proof, seed=response.seed)
        except RemoteProtocolError as exc:
            log.warning("peer checkpoint refused", peer_id=peer_id, reason=exc.code.label,
                        message=exc.message)
            self.peerbook.penalize(peer_id, exc.code)
            return None
        except ValueError as exc:
            log.warning("peer checkpoint of an unknown log", peer_id=peer_id, error=str(exc))
            return None
        if observation.verdict in (Verdict.FIRST, Verdict.ADVANCED):
            await trio.to_thread.run_sync(self._store, witness)
        if observation.verdict is Verdict.SPLIT_VIEW and observation.evidence is not None:
            await self.caught(observation.evidence.to_bytes(), source=None)
        return observation.verdict

    # -- split views ---------------------------------------------------------------------
    async def caught(self, data: bytes, *, source: str | None) -> bool:
        """Keep and gossip a split-view proof (verified here); False if it was known."""
        view = verify_split_view(data)
        digest = hashlib.sha256(data).hexdigest()
        if digest in self.evidence:
            return False
        self.evidence_dir.mkdir(parents=True, exist_ok=True)
        path = self.evidence_dir / f"split-view-{digest[:16]}.cbor"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        self.evidence[digest] = path
        self.split_views += 1
        offender = peer_id_of_origin(view.origin)
        log.error("split view caught", origin=view.origin, kind=view.kind.value,
                  first_size=view.first.size, second_size=view.second.size, proof=str(path),
                  via=source or "our own witnessing")
        if offender == str(self.host.get_id()):
            # Our own log: another process runs with our identity (a restored backup, a
            # copied data dir). Nothing to ban; the operator must retire one of them.
            log.critical("split view of OUR OWN log: another process signs with this node's "
                         "key", proof=str(path))
        else:
            self.peerbook.penalize(offender, ErrorCode.SPLIT_VIEW)
        targets = [peer for peer, _ in p2p.connected_peers(self.host)
                   if peer not in (source, offender) and self.peerbook.is_accepted(peer)]
        if self._nursery is not None:
            for peer in targets[:MAX_GOSSIP_FANOUT]:
                self._nursery.start_soon(self.request, peer, SplitViewGossip(data))
        return True

    # -- requester -----------------------------------------------------------------------
    async def request(self, peer_id: str, request: Request) -> Response | None:
        """One witness request to ``peer_id``; None if it failed (logged, scored)."""
        stream: INetStream | None = None
        with trio.move_on_after(OPEN_STREAM_TIMEOUT_S):
            try:
                stream = await self.host.new_stream(p2p.parse_peer_id(peer_id),
                                                    [TProtocol(WITNESS_PROTOCOL_ID)])
            except p2p.NETWORK_ERRORS as exc:
                log.info("cannot open a witness stream", peer_id=peer_id, error=str(exc))
        if stream is None:
            return None
        response: Response | None = None
        async with guarded(stream, peerbook=self.peerbook, protocol="witness") as channel:
            core = WitnessRequester(request, trio.current_time())
            await channel.send(core.start())
            response = await _receive_one(channel, core)
            await channel.close()
        if response is not None:
            self.peerbook.reward(peer_id)
        return response

    # -- responder -----------------------------------------------------------------------
    async def _handle(self, stream: INetStream) -> None:
        await serve(stream, self._answer, peerbook=self.peerbook, protocol="witness")

    async def _answer(self, channel: CoreStream) -> None:
        core = WitnessResponder(trio.current_time())
        request: Request | None = await _receive_one(channel, core)
        if request is None:
            return
        response = await self._response(request, channel.peer_id)
        await channel.send(core.respond(response))
        await channel.close()

    async def _response(self, request: Request, peer_id: str) -> Response:
        node = self.node
        if isinstance(request, GetCheckpoints):
            assert node.signing_key is not None
            canon, ledger = await trio.to_thread.run_sync(
                latest_checkpoints, node.canon, node.ledger, node.signing_key, self.signing_clock)
            return Checkpoints(canon, ledger)
        if isinstance(request, GetConsistency):
            tree: Any = node.canon.log if request.log == "canon" and node.canon is not None \
                else node.ledger.tlog if request.log == "ledger" and node.ledger is not None else None
            size = 0 if tree is None else len(tree) if request.log == "canon" else tree.size()
            if tree is None or request.new > size:
                raise RemoteProtocolError(f"our {request.log} log has {size} entries, fewer "
                                          f"than {request.new}", ErrorCode.MALFORMED)
            try:
                proof = tree.consistency_proof(request.old, request.new)
                seed = tree.root(request.old)
            except (CanonError, ValueError) as exc:
                raise RemoteProtocolError(f"no consistency proof: {exc}", ErrorCode.MALFORMED) from None
            return Consistency(tuple(proof), seed)
        assert isinstance(request, SplitViewGossip)
        try:
            new = await self.caught(request.proof, source=peer_id)
        except EvidenceError as exc:
            raise RemoteProtocolError(f"not a split-view proof: {exc.message}",
                                      ErrorCode.MALFORMED) from None
        return Ack(new)

    def snapshot(self) -> dict[str, Any]:
        return {"logs_followed": len(self.witnesses), "checks": self.checks,
                "proofs_fetched": self.proofs_fetched, "split_views": self.split_views,
                "evidence": sorted(str(p) for p in self.evidence.values()),
                "latest": {origin: None if w.checkpoint is None else w.checkpoint.size
                           for origin, w in list(self.witnesses.items())[-64:]}}

    def known_proofs(self) -> list[SplitViewProof]:
        return [SplitViewProof.from_bytes(path.read_bytes()) for path in self.evidence.values()]
