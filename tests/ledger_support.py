"""Shared helpers of the ledger tests: deterministic keys, a small network, signing chains."""

from __future__ import annotations

from typing import Any

from blake3 import blake3
from nacl.signing import SigningKey

from n3xus.canon.cid import CID, cid_of
from n3xus.ledger.errors import TxRejected
from n3xus.ledger.genesis import Genesis
from n3xus.ledger.ingest import Accepted, Outcome, Rejected
from n3xus.ledger.memory import MemoryLedger
from n3xus.ledger.tx import AccountChain, Op

SUPPLY_CAP = 1_000_000_000
ARTIFACT = cid_of(b"an artifact", codec="raw")


def key(name: str) -> SigningKey:
    """A deterministic ed25519 key per name (tests must be reproducible)."""
    return SigningKey(blake3(b"n3xus-ledger-test/" + name.encode()).digest())


def account(name: str) -> bytes:
    return bytes(key(name).verify_key)


def make_genesis(**params: int) -> Genesis:
    return Genesis.create("n3xus-test", [account("issuer"), account("issuer2")], SUPPLY_CAP,
                          account("platform"), **params)


class Net:
    """A network in memory: genesis, per-name signing chains, a MemoryLedger. ``run`` is a
    local client's submit: a transaction is kept only if it takes effect."""

    def __init__(self, genesis: Genesis | None = None) -> None:
        self.genesis = genesis or make_genesis()
        self.view = MemoryLedger(self.genesis)
        self.chains: dict[str, AccountChain] = {}
        self.clock = 1_700_000_000_000

    def chain(self, name: str) -> AccountChain:
        if name not in self.chains:
            self.chains[name] = AccountChain(key(name), self.genesis.cid)
        return self.chains[name]

    def sign(self, name: str, op: Op | str, **args: Any) -> bytes:
        self.clock += 1
        return self.chain(name).sign(op, args, time_ms=self.clock)

    def draft(self, name: str, op: Op | str, **args: Any) -> bytes:
        """Sign the next transaction of ``name`` without advancing its chain."""
        chain = self.chain(name)
        self.clock += 1
        return chain.sign_at(chain.seq, chain.prev, op, args, time_ms=self.clock)

    def run(self, envelope: bytes) -> Outcome:
        try:
            return self.view.submit(envelope)
        except TxRejected as exc:
            return Rejected(exc)

    def do(self, name: str, op: Op | str, **args: Any) -> Accepted:
        """Sign and ingest; the transaction must be accepted."""
        outcome = self.run(self.sign(name, op, **args))
        assert isinstance(outcome, Accepted), outcome
        return outcome

    def attempt(self, name: str, op: Op | str, **args: Any) -> Outcome:
        """Sign and ingest; on rejection the signer's chain is rewound (nothing was used)."""
        chain = self.chain(name)
        seq, prev = chain.seq, chain.prev
        outcome = self.run(self.sign(name, op, **args))
        if isinstance(outcome, Rejected):
            chain.seq, chain.prev = seq, prev
        return outcome

    def reject(self, name: str, op: Op | str, **args: Any) -> Rejected:
        """Sign and ingest a transaction that must be rejected."""
        outcome = self.attempt(name, op, **args)
        assert isinstance(outcome, Rejected), outcome
        return outcome

    def balance(self, name: str) -> int:
        value = self.view.get(b"B" + account(name))
        return 0 if value is None else int.from_bytes(value, "big")

    def fund(self, name: str, amount: int) -> None:
        self.do("issuer", Op.ISSUE, to=account(name), amount=amount)

    def mint(self, creator: str, editions: int = 3, royalty_bps: int = 1000,
             creator_bps: int = 8000, platform_bps: int = 2000) -> CID:
        accepted = self.do(creator, Op.MINT, artifact=ARTIFACT, metadata={"title": "piece"},
                           editions=editions, royalty_bps=royalty_bps,
                           creator_bps=creator_bps, platform_bps=platform_bps)
        return accepted.cid


def snapshot(view: MemoryLedger) -> tuple[dict[bytes, bytes], int]:
    return dict(view.state), len(view.log)


def presigned_workload(accounts: int, transfers: int) -> tuple[Genesis, list[bytes]]:
    """A deterministic history: issuance to ``accounts`` accounts, then ``transfers``
    transfers between them in round-robin order (every node and process builds the same)."""
    genesis = make_genesis()
    issuer = AccountChain(key("issuer"), genesis.cid)
    chains = [AccountChain(key(f"user{i}"), genesis.cid) for i in range(accounts)]
    entries = [issuer.sign(Op.ISSUE, {"to": chain.account, "amount": 10**6}, time_ms=0)
               for chain in chains]
    for n in range(transfers):
        sender = chains[n % accounts]
        receiver = chains[(n * 7 + 3) % accounts]
        entries.append(sender.sign(Op.TRANSFER, {"to": receiver.account, "amount": 1 + n % 97},
                                   time_ms=n))
    return genesis, entries
