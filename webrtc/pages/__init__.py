"""Static pages of live rooms (room, performer, audience), served by the node."""
