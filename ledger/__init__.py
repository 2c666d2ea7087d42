"""The signed asset/currency ledger: per-account transaction chains, currency under
an issuance cap, creator assets with royalties, fraud proofs, and the transparency
log that auditors verify offline."""
