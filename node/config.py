"""The node's data dir: identity key, API token, TOML config, lock and run file.

Layout of a data dir (default ``$N3XUS_HOME``, else ``~/.n3xus``)::

    config.toml     commented defaults, edited by the operator
    identity.key    ed25519 seed of the node's libp2p identity (mode 0600, never printed)
    api.token       bearer token of the local HTTP API (mode 0600)
    lmdb/           the LMDB environment (canon memory, ledger)
    node.lock       held (flock) by the one node process that uses this data dir
    api.json        written by the running node: where its API listens, its pid

Nothing here touches the network; everything is plain files so that the CLI can
find a running node without asking anyone.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import secrets
import stat
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, NodeRunningError
from .p2p.limits import ConnectionLimits

ENV_HOME = "N3XUS_HOME"
DEFAULT_HOME = "~/.n3xus"

CONFIG_FILE = "config.toml"
IDENTITY_FILE = "identity.key"
TOKEN_FILE = "api.token"
LOCK_FILE = "node.lock"
RUN_FILE = "api.json"
LMDB_DIR = "lmdb"

# libp2p listens on every interface by default: a node exists to be reached by its
# peers. 4141 is n3xus-net's conventional port (not IANA-registered; any port works).
DEFAULT_LISTEN = ("/ip4/0.0.0.0/tcp/4141",)
# The HTTP API is for the operator and the browser on this machine: loopback only,
# unless the operator asks otherwise with an explicit flag.
DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8741
# LMDB reserves address space, not disk: the file grows with the data. 64 GiB leaves
# room for recordings and model files in the block store on a 64-bit machine.
DEFAULT_MAP_SIZE_MIB = 64 * 1024

# Key file format: one line, a versioned tag then the base64 seed. The tag lets a
# later version change the format and lets us tell a corrupt file from a foreign one.
IDENTITY_TAG = "n3xus-identity-v1 ed25519 "
ED25519_SEED_BYTES = 32
# 32 random bytes is well past guessing; url-safe base64 keeps it shell-friendly.
TOKEN_BYTES = 32
SECRET_FILE_MODE = 0o600

# Top-level tables parsed into NodeConfig fields; any other table lands in NodeConfig.extra.
KNOWN_SECTIONS = frozenset({"node", "p2p", "api", "storage", "log", "federation", "agents"})
# Shown in the generated config.toml; the values in force are BAN_THRESHOLD,
# DEFAULT_BAN_SECONDS (node/services/peers.py) and DEFAULT_CONTEXT_TOKENS
# (node/services/agents.py), not imported here to keep the CLI's imports light;
# tests/test_node_config.py checks that they agree.
TEMPLATE_BAN_SECONDS = 600
TEMPLATE_BAN_THRESHOLD = -100
TEMPLATE_CONTEXT_TOKENS = 2048

CONFIG_TEMPLATE = """\
# n3xus node configuration. Every value shown is the default; uncomment to change.
# Command-line flags override this file.

[node]
# libp2p listen multiaddrs (TCP; Noise security, Yamux multiplexing).
# listen = {listen}
# Peers to dial at start-up: /ip4/HOST/tcp/PORT/p2p/PEER_ID
# bootstrap = []

[p2p]
# Kademlia DHT (/ipfs/kad/1.0.0): finds the other peers of the network from one
# bootstrap peer, and who provides a CID.
# dht = true
# mDNS (_p2p._udp.local): announce this node on the LAN and dial peers heard there.
# Off by default: it tells every network the machine joins that a node runs here.
# mdns = false

[p2p.limits]
# Inbound connection gating (see node/p2p/limits.py). Loopback is exempt from the
# per-address limits unless exempt_loopback = false.
# handshake_timeout_s = 2.0
# max_pending = 64
# max_pending_per_ip = 8
# max_inbound = 200
# max_inbound_per_ip = 16
# max_connections = 300
# exempt_loopback = true

[api]
# The local HTTP API. Binding anything but loopback needs --api-allow-remote.
# host = "{api_host}"
# port = {api_port}

[storage]
# Address space reserved for the LMDB environment, in MiB (disk grows with use).
# map_size_mib = {map_size}

[log]
# "info", "debug", "warning"; format "text" or "json".
# level = "info"
# format = "text"

# The sections below are optional and so are commented out whole, headers included: a
# table can be appended to this file (a TOML table may be declared only once).

# [federation]
# Genesis CIDs of other networks whose peers are accepted besides our own.
# networks = []
# If not empty, the only peer ids accepted; deny refuses peer ids (they see policy-denied).
# allow = []
# deny = []
# A peer whose score falls to ban_threshold is banned for ban_seconds.
# ban_seconds = {ban_seconds}
# ban_threshold = {ban_threshold}

# [agents]
# The agents' GGUF model file and CPU threads: by default the bundled
# SmolLM2-135M-Instruct and one thread per core (examples, not defaults, below).
# model = "/path/to/model.gguf"
# threads = 2
# context_tokens = {context_tokens}
"""


@dataclass(frozen=True)
class NodeConfig:
    """The effective configuration: file values, then command-line overrides."""

    listen: tuple[str, ...] = DEFAULT_LISTEN
    bootstrap: tuple[str, ...] = ()
    api_host: str = DEFAULT_API_HOST
    api_port: int = DEFAULT_API_PORT
    map_size_mib: int = DEFAULT_MAP_SIZE_MIB
    log_level: str = "info"
    log_format: str = "text"
    dht: bool = True
    mdns: bool = False
    p2p_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    # [federation] and [agents] stay raw tables here: their keys are checked where they are
    # used, when the node starts (n3xus.node.p2p.hello.federation_settings,
    # n3xus.node.runtime.agent_service), so that reading the config for a CLI command does
    # not import the federation or the model code.
    federation: dict[str, Any] = field(default_factory=dict)
    agents: dict[str, Any] = field(default_factory=dict)
    # Top-level tables this module does not know (a feature reading its own section, or a
    # newer node's config). Empty for a config that has only the sections above.
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """The explicit dir, else ``$N3XUS_HOME``, else ``~/.n3xus``."""
    if data_dir is not None:
        return Path(data_dir).expanduser().absolute()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().absolute()
    return Path(DEFAULT_HOME).expanduser().absolute()


@dataclass(frozen=True)
class InitResult:
    data_dir: Path
    created: tuple[str, ...]  # names of the files/dirs created by this call

    @property
    def changed(self) -> bool:
        return bool(self.created)


class DataDir:
    """Access to one data dir. Creating it is idempotent (:meth:`init`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # -- paths ---------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def identity_path(self) -> Path:
        return self.path / IDENTITY_FILE

    @property
    def token_path(self) -> Path:
        return self.path / TOKEN_FILE

    @property
    def lmdb_path(self) -> Path:
        return self.path / LMDB_DIR

    @property
    def run_path(self) -> Path:
        return self.path / RUN_FILE

    def is_initialised(self) -> bool:
        return self.identity_path.exists() and self.token_path.exists()

    # -- creation ------------------------------------------------------------
    def init(self) -> InitResult:
        """Create whatever is missing; never overwrite an existing file."""
        created: list[str] = []
        if not self.path.exists():
            created.append(str(self.path))
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create data dir {self.path}: {exc.strerror}") from exc
        if not self.path.is_dir():
            raise ConfigError(f"data dir {self.path} exists but is not a directory")
        if _create_secret_file(self.identity_path, self._new_identity_text()):
            created.append(IDENTITY_FILE)
        if _create_secret_file(self.token_path, secrets.token_urlsafe(TOKEN_BYTES) + "\n"):
            created.append(TOKEN_FILE)
        if not self.config_path.exists():
            text = CONFIG_TEMPLATE.format(
                listen=json.dumps(list(DEFAULT_LISTEN)),
                api_host=DEFAULT_API_HOST,
                api_port=DEFAULT_API_PORT,
                map_size=DEFAULT_MAP_SIZE_MIB,
                ban_seconds=TEMPLATE_BAN_SECONDS,
                ban_threshold=TEMPLATE_BAN_THRESHOLD,
                context_tokens=TEMPLATE_CONTEXT_TOKENS,
            )
            _write_new(self.config_path, text, 0o644)
            created.append(CONFIG_FILE)
        return InitResult(self.path, tuple(created))

    @staticmethod
    def _new_identity_text() -> str:
        seed = secrets.token_bytes(ED25519_SEED_BYTES)
        return IDENTITY_TAG + base64.b64encode(seed).decode("ascii") + "\n"

    # -- reading -------------------------------------------------------------
    def read_identity_seed(self) -> bytes:
        """The 32-byte ed25519 seed. Fails closed on anything unexpected."""
        text = _read_secret_file(self.identity_path, "identity key")
        line = text.strip("\n")
        if not line.startswith(IDENTITY_TAG) or "\n" in line:
            raise ConfigError(
                f"identity key {self.identity_path} is corrupt (not an n3xus identity key file)"
            )
        try:
            seed = base64.b64decode(line[len(IDENTITY_TAG) :], validate=True)
        except ValueError as exc:
            raise ConfigError(
                f"identity key {self.identity_path} is corrupt (bad base64)"
            ) from exc
        if len(seed) != ED25519_SEED_BYTES:
            raise ConfigError(
                f"identity key {self.identity_path} is corrupt "
                f"({len(seed)} bytes, expected {ED25519_SEED_BYTES})"
            )
        return seed

    def read_token(self) -> str:
        token = _read_secret_file(self.token_path, "API token").strip()
        if not token or any(c.isspace() for c in token):
            raise ConfigError(f"API token file {self.token_path} is corrupt")
        return token

    def load_config(self) -> NodeConfig:
        """Parse config.toml (all keys optional) into a :class:`NodeConfig`."""
        if not self.config_path.exists():
            return NodeConfig()
        try:
            with self.config_path.open("rb") as f:
                raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {self.config_path} is not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read config file {self.config_path}: {exc.strerror}") from exc
        return _config_from_toml(raw, self.config_path)

    # -- the running node's lock and run file ---------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the data dir for one node process. A second one is refused at once.

        flock is released by the kernel when the process dies, so a crashed node
        (even ``kill -9``) never leaves a stale lock behind.
        """
        lock_path = self.path / LOCK_FILE
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise NodeRunningError(
                        f"data dir {self.path} is in use by another running node "
                        f"(pid {self._lock_owner_pid() or 'unknown'}); stop it first "
                        "or use another --data-dir"
                    ) from None
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            try:
                yield
            finally:
                self.run_path.unlink(missing_ok=True)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _lock_owner_pid(self) -> int | None:
        try:
            return int((self.path / LOCK_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def write_run_file(self, api_url: str, peer_id: str) -> None:
        info = {"api_url": api_url, "pid": os.getpid(), "peer_id": peer_id}
        tmp = self.run_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info) + "\n")
        os.replace(tmp, self.run_path)  # atomic: readers never see half a file

    def read_run_file(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.run_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) and "api_url" in info else None


def _create_secret_file(path: Path, text: str) -> bool:
    """Create ``path`` with mode 0600 unless it exists. True if created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    except FileExistsError:
        return False
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return True


def _write_new(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _read_secret_file(path: Path, what: str) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} is missing; run `n3xus node init`") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    # Fail closed like ssh does: a secret others can read is no longer a secret.
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{what} {path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        return path.read_text(encoding="ascii")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is corrupt (not ASCII text)") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def _config_from_toml(raw: dict[str, Any], path: Path) -> NodeConfig:
    def section(name: str) -> dict[str, Any]:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        return value

    def typed(sec: dict[str, Any], key: str, kind: type, default: Any) -> Any:
        value = sec.get(key, default)
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(f"{path}: {key} must be of type {kind.__name__}")
        return value

    node, api, storage, log = section("node"), section("api"), section("storage"), section("log")
    listen = typed(node, "listen", list, list(DEFAULT_LISTEN))
    bootstrap = typed(node, "bootstrap", list, [])
    for item in (*listen, *bootstrap):
        if not isinstance(item, str):
            raise ConfigError(f"{path}: listen/bootstrap entries must be strings")
    port = typed(api, "port", int, DEFAULT_API_PORT)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{path}: api.port {port} is out of range")
    map_size = typed(storage, "map_size_mib", int, DEFAULT_MAP_SIZE_MIB)
    p2p = section("p2p")
    limits = _limits_from_toml(p2p.get("limits", {}), path)
    if map_size < 16:
        raise ConfigError(f"{path}: storage.map_size_mib must be at least 16")
    return NodeConfig(
        listen=tuple(listen),
        bootstrap=tuple(bootstrap),
        api_host=typed(api, "host", str, DEFAULT_API_HOST),
        api_port=port,
        map_size_mib=map_size,
        log_level=typed(log, "level", str, "info"),
        log_format=typed(log, "format", str, "text"),
        dht=typed(p2p, "dht", bool, True),
        mdns=typed(p2p, "mdns", bool, False),
        p2p_limits=limits,
        federation=section("federation"),
        agents=section("agents"),
        extra={name: value for name, value in raw.items()
               if name not in KNOWN_SECTIONS and isinstance(value, dict)},
    )


def _limits_from_toml(raw: Any, path: Path) -> ConnectionLimits:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [p2p.limits] must be a table")
    defaults = ConnectionLimits()
    known = set(defaults.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown [p2p.limits] keys {unknown}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise ConfigError(f"{path}: p2p.limits.{key} must be of type {expected.__name__}")
        values[key] = value
    try:
        return ConnectionLimits(**values)
    except ValueError as exc:
        raise ConfigError(f"{path}: [p2p.limits]: {exc}") from exc
