"""Sans-IO cores of the n3xus wire protocols (federation of world state, handshakes,
ledger entries and royalties). Parsers and state machines here take bytes and return
events; ``n3xus.node`` owns the libp2p streams that carry them. The protocol IDs and
their registry live in :mod:`n3xus.protocol.ids`; the normative text in ``specs/``."""
