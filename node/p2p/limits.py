"""Connection gating: who may hold an inbound connection, and for how long before
the Noise handshake completes.

The problem (measured on the node before this module, see bench/p2p.py --flood):
py-libp2p 0.8.1 takes one of 250 inbound slots per accepted TCP connection and
lets an unauthenticated connection hold it for up to 10 s (``inbound_upgrade_timeout``).
250 silent TCP connections, from anywhere, therefore lock every real peer out.

The design here separates the two kinds of inbound connection:

* **pending** -- accepted by TCP, Noise (and Yamux) not yet complete. They live in
  a small pool of their own (``max_pending``), at most ``max_pending_per_ip`` per
  source address, and for at most ``handshake_timeout_s``. When the pool (or the
  address's share of it) is full, the *oldest* pending connection is evicted to
  make room: a real peer completes its handshake in milliseconds, so a flood has
  to open a whole pool's worth of connections within one handshake time to push
  it out, instead of merely keeping the pool full.
* **established** -- the handshake completed, so the remote proved a key. They
  have their own capacity (``max_inbound``, ``max_inbound_per_ip``) that pending
  connections can never take: the capacity reserved for peers that complete a
  handshake.

Per-address limits group IPv4 by /32 and IPv6 by /64 (one host's usual
allocation). Loopback is exempt by default, as in go-libp2p's resource manager:
a machine running several nodes talks to itself from 127.0.0.1, and whoever can
connect from loopback already runs code on this machine.

:class:`ConnectionGate` is sans-IO: it takes addresses and clock readings and
returns decisions; :mod:`n3xus.node.p2p.patches` applies them to the swarm's
sockets, and :func:`register_gate_metrics` exports its counters.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # prometheus_client (30 ms) is imported where the metrics are registered: config.py
    # imports this module, and every CLI call imports config.py (issue 7 §2).
    from prometheus_client import CollectorRegistry

# A Noise XX handshake plus multistream-select and Yamux negotiation takes a few
# milliseconds on a LAN and a few round trips (well under a second) across the
# world; 2 s leaves room for a slow link while bounding what a silent connection
# costs. The library default is 10 s.
DEFAULT_HANDSHAKE_TIMEOUT_S = 2.0
# Unauthenticated connections held at once. Small on purpose: each one is a socket
# and a task doing nothing useful yet, and with eviction of the oldest a real peer
# only needs the pool to turn over slower than its own handshake.
DEFAULT_MAX_PENDING = 64
# One address may hold this many of the pending slots (a NAT with a few peers
# starting at once), so no single address can fill the pool by itself.
DEFAULT_MAX_PENDING_PER_IP = 8
# Inbound connections with a completed handshake. With outbound dials this stays
# below py-libp2p's own max_connections (DEFAULT_MAX_CONNECTIONS).
DEFAULT_MAX_INBOUND = 200
# Established inbound connections from one address: go-libp2p's default is 8 per
# IPv4 address; 16 leaves room for a small NAT of nodes.
DEFAULT_MAX_INBOUND_PER_IP = 16
# Total connections, inbound and outbound (py-libp2p ConnectionConfig.max_connections).
DEFAULT_MAX_CONNECTIONS = 300
# IPv6 addresses are grouped by the /64 a host is normally given.
IPV6_GROUP_PREFIX = 64


ACCEPTED = "accepted"
ESTABLISHED = "established"


class Refusal(StrEnum):
    """Why a connection was refused or dropped; the label of the metrics."""

    PENDING_EVICTED = "pending_evicted"  # made room for a newer pending connection
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    HANDSHAKE_FAILED = "handshake_failed"  # no Noise, bad key, reset mid-way
    INBOUND_FULL = "inbound_full"
    INBOUND_PER_IP = "inbound_per_ip"
    BANNED = "banned"  # the peer's key is banned (peer scoring, the operator)


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits, all configurable (``[p2p.limits]`` in config.toml)."""

    handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S
    max_pending: int = DEFAULT_MAX_PENDING
    max_pending_per_ip: int = DEFAULT_MAX_PENDING_PER_IP
    max_inbound: int = DEFAULT_MAX_INBOUND
    max_inbound_per_ip: int = DEFAULT_MAX_INBOUND_PER_IP
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    exempt_loopback: bool = True

    def __post_init__(self) -> None:
        if not self.handshake_timeout_s > 0:
            raise ValueError("handshake_timeout_s must be positive")
        for name in ("max_pending", "max_pending_per_ip", "max_inbound",
                     "max_inbound_per_ip", "max_connections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_inbound > self.max_connections:
            raise ValueError("max_inbound cannot exceed max_connections")


def address_group(ip: str) -> str:
    """The key per-address limits count by: the IPv4 address, or the IPv6 /64.
    An IPv4-mapped IPv6 address counts as its IPv4 address. Something that is
    not an IP address (a transport without one) is its own group."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_GROUP_PREFIX), strict=False))
    return str(address)


def is_loopback(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


@dataclass(eq=False)
class Ticket:
    """One inbound connection's place in the gate, from accept to close."""

    number: int
    group: str
    exempt: bool
    accepted_at: float
    established: bool = False
    closed: bool = False
    # Set by the I/O side: how to drop this connection if the gate evicts it.
    on_evict: Callable[[], None] | None = field(default=None, repr=False)


@dataclass
class Admission:
    """The result of :meth:`ConnectionGate.accept`: the new pending ticket and the
    pending tickets evicted for it (the caller closes those), or no ticket and
    the reason when the connection could not stay even after a handshake."""

    ticket: Ticket | None
    evicted: list[Ticket]
    refused: Refusal | None = None


class ConnectionGate:
    """Admission control for inbound connections. Not thread-safe; one per swarm,
    used from its trio tasks only."""

    def __init__(self, limits: ConnectionLimits | None = None) -> None:
        self.limits = limits if limits is not None else ConnectionLimits()
        self._numbers = itertools.count(1)
        # Oldest first: eviction takes from the front.
        self._pending: OrderedDict[int, Ticket] = OrderedDict()
        self._pending_by_group: Counter[str] = Counter()
        self._established_total = 0
        self._established_by_group: Counter[str] = Counter()
        self.refused: Counter[Refusal] = Counter()
        self.accepted_total = 0
        self.established_total = 0
        self._listeners: list[Callable[[str], None]] = []
        # peer ID -> (ban ends, clock of the caller; reason)
        self._banned: dict[str, tuple[float, str]] = {}

    # -- observers -------------------------------------------------------------
    def on_event(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(event)`` on every transition: ``ACCEPTED``,
        ``ESTABLISHED``, or the :class:`Refusal` value of a refused or dropped
        connection."""
        self._listeners.append(listener)

    def _emit(self, event: str) -> None:
        for listener in self._listeners:
            listener(event)

    def _count(self, reason: Refusal) -> None:
        self.refused[reason] += 1
        self._emit(reason.value)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def established(self) -> int:
        return self._established_total

    def in_use(self) -> int:
        """Inbound connections held now, pending or established."""
        return len(self._pending) + self._established_total

    def snapshot(self) -> dict[str, object]:
        return {
            "pending": self.pending,
            "established_inbound": self.established,
            "accepted_total": self.accepted_total,
            "established_total": self.established_total,
            "refused_total": {reason.value: count for reason, count in self.refused.items()},
        }

    # -- transitions -----------------------------------------------------------
    def accept(self, ip: str, now: float) -> Admission:
        """A TCP connection from ``ip`` was accepted: admit it as pending, evicting
        the oldest pending connection of its address (if that address is at its
        share) or of the whole pool (if the pool is full). Refused at once when
        the established capacity it would need is already used up: no handshake
        is spent on a connection that could not stay."""
        group = address_group(ip)
        exempt = self.limits.exempt_loopback and is_loopback(ip)
        refusal = self._established_refusal(group, exempt)
        if refusal is not None:
            self._count(refusal)
            return Admission(None, [], refusal)
        evicted: list[Ticket] = []
        if not exempt and self._pending_by_group[group] >= self.limits.max_pending_per_ip:
            evicted.append(self._evict_oldest(lambda t: t.group == group))
        if len(self._pending) >= self.limits.max_pending:
            evicted.append(self._evict_oldest(lambda t: True))
        ticket = Ticket(next(self._numbers), group, exempt, now)
        self._pending[ticket.number] = ticket
        self._pending_by_group[group] += 1
        self.accepted_total += 1
        self._emit(ACCEPTED)
        return Admission(ticket, evicted)

    def _evict_oldest(self, matches: Callable[[Ticket], bool]) -> Ticket:
        oldest = next(t for t in self._pending.values() if matches(t))
        self._drop_pending(oldest)
        oldest.closed = True
        self._count(Refusal.PENDING_EVICTED)
        return oldest

    def _drop_pending(self, ticket: Ticket) -> None:
        del self._pending[ticket.number]
        self._pending_by_group[ticket.group] -= 1
        if not self._pending_by_group[ticket.group]:
            del self._pending_by_group[ticket.group]

    def complete(self, ticket: Ticket, peer_id: str = "", now: float = 0.0) -> Refusal | None:
        """The ticket's handshake completed and proved ``peer_id``. Returns None
        if it may stay (it is now established), else the reason to close it."""
        if ticket.closed or ticket.established:
            raise ValueError(f"ticket {ticket.number} is not pending")
        self._drop_pending(ticket)
        reason = (Refusal.BANNED if peer_id and self.is_banned(peer_id, now)
                  else self._established_refusal(ticket.group, ticket.exempt))
        if reason is not None:
            ticket.closed = True
            self._count(reason)
            return reason
        ticket.established = True
        self._established_total += 1
        self._established_by_group[ticket.group] += 1
        self.established_total += 1
        self._emit(ESTABLISHED)
        return None

    # -- bans ------------------------------------------------------------------
    def ban(self, peer_id: str, until: float, reason: str) -> None:
        """Refuse ``peer_id`` after its handshake until ``until`` (the caller's
        clock). A longer ban replaces a shorter one, never the other way."""
        current = self._banned.get(peer_id)
        if current is None or current[0] < until:
            self._banned[peer_id] = (until, reason)

    def unban(self, peer_id: str) -> bool:
        return self._banned.pop(peer_id, None) is not None

    def is_banned(self, peer_id: str, now: float) -> bool:
        entry = self._banned.get(peer_id)
        if entry is None:
            return False
        if now >= entry[0]:
            del self._banned[peer_id]
            return False
        return True

    def bans(self, now: float) -> list[dict[str, object]]:
        """Active bans: peer ID, seconds left, reason."""
        for peer_id in list(self._banned):
            self.is_banned(peer_id, now)  # drops the expired ones
        return [{"peer_id": peer, "seconds_left": round(until - now, 3), "reason": reason}
                for peer, (until, reason) in sorted(self._banned.items())]

    def _established_refusal(self, group: str, exempt: bool) -> Refusal | None:
        if self._established_total >= self.limits.max_inbound:
            return Refusal.INBOUND_FULL
        if not exempt and self._established_by_group[group] >= self.limits.max_inbound_per_ip:
            return Refusal.INBOUND_PER_IP
        return None

    def fail(self, ticket: Ticket, reason: Refusal) -> None:
        """The pending ticket's handshake failed or timed out."""
        if ticket.closed:
            return  # already evicted: counted then
        if ticket.established:
            raise ValueError(f"ticket {ticket.number} is established, not pending")
        self._drop_pending(ticket)
        ticket.closed = True
        self._count(reason)

    def release(self, ticket: Ticket) -> None:
        """The connection is gone. Idempotent; works in every state."""
        if ticket.closed:
            return
        ticket.closed = True
        if ticket.established:
            self._established_total -= 1
            self._established_by_group[ticket.group] -= 1
            if not self._established_by_group[ticket.group]:
                del self._established_by_group[ticket.group]
        else:
            self._drop_pending(ticket)


def register_gate_metrics(gate: ConnectionGate, registry: CollectorRegistry) -> None:
    """Export the gate in Prometheus form: ``n3xus_p2p_inbound_refused_total{reason}``,
    ``n3xus_p2p_inbound_accepted_total``, ``n3xus_p2p_inbound_established_total``
    and gauges of the pending and established inbound connections held now."""
    from prometheus_client import Counter as PromCounter
    from prometheus_client import Gauge as PromGauge

    refused = PromCounter(
        "n3xus_p2p_inbound_refused",
        "Inbound libp2p connections refused or dropped by the connection gate",
        ["reason"], registry=registry,
    )
    for reason in Refusal:
        refused.labels(reason=reason.value).inc(gate.refused[reason])  # every series exists
    accepted = PromCounter("n3xus_p2p_inbound_accepted",
                           "Inbound TCP connections admitted as pending", registry=registry)
    accepted.inc(gate.accepted_total)
    completed = PromCounter("n3xus_p2p_inbound_established",
                            "Inbound connections that completed their handshake",
                            registry=registry)
    completed.inc(gate.established_total)

    def count(event: str) -> None:
        if event == ACCEPTED:
            accepted.inc()
        elif event == ESTABLISHED:
            completed.inc()
        else:
            refused.labels(reason=event).inc()

    gate.on_event(count)
    pending = PromGauge("n3xus_p2p_inbound_pending",
                        "Inbound connections before the end of their handshake",
                        registry=registry)
    pending.set_function(lambda: gate.pending)
    established = PromGauge("n3xus_p2p_inbound_connections",
                            "Inbound connections with a completed handshake",
                            registry=registry)
    established.set_function(lambda: gate.established)
