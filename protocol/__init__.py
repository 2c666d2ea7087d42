"""Sans-IO cores of the n3xus wire protocols (federation of world state, handshakes,
ledger entries and royalties; built by the federation issue). Parsers and state
machines here take bytes and return events; ``n3xus.node`` owns the libp2p streams
that carry them. Protocol IDs live under the reserved ``/n3xus/`` namespace; their
registry and version rule are in ``specs/README.md`` (section 3.6)."""
