"""The ``n3xus`` command line: one module per command group.

``app`` holds the root group, the shared options and output helpers and ``main``;
``node`` ... ``audit`` register their groups on it. Commands talk to the running
node through :mod:`.client` (the local HTTP API) and import heavy libraries only
inside the commands that need them.
"""

from .app import cli as cli
from .app import main as main
