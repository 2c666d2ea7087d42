"""The node's local HTTP API: the server core (:mod:`.server`: routing, auth, errors,
OpenAPI) and one module per route group (:mod:`.node`, :mod:`.canon`, :mod:`.ledger`)."""
