"""IMVU agents: creator-owned agents with a persona, canon memory, behavioral primitives
enforced outside the model, and decisions an auditor can re-run (specs/imvu.md).

Pure or sans-IO (no clock, no sockets, no threads):

* :mod:`.manifest`  signed manifests, primitives, the model file's CID
* :mod:`.actions`   the action kinds, strict parsing, the grammar's JSON schema
* :mod:`.policy`    ``decide(manifest, state, action)`` and the request screen
* :mod:`.approval`  creator approvals of escalated actions
* :mod:`.memory`    memory chains and recent-plus-relevant recall
* :mod:`.prompt`    requests, prompt blocks, the prompt layout
* :mod:`.decision`  ``agent-decision`` v2 records, offline re-check and re-run
* :mod:`.wire`      ``/n3xus/imvu/1.0.0`` messages and exchange

The node side (storage, threads, trio): :mod:`.inference` (loading the model),
:mod:`.scheduler` (one model shared fairly by every agent), :mod:`.registry` (agents,
versions, pins in LMDB), :mod:`.runtime` (``Agent.ask``: one turn end to end, over the
``AgentTools`` the node implements).
"""
