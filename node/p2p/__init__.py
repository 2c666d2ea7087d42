"""libp2p: the host (:mod:`.host`: TCP, Noise, Yamux, identify, ping), its patches,
and the stream handlers of the ``/n3xus/...`` protocols, whose sans-IO cores live in
:mod:`n3xus.protocol`."""
