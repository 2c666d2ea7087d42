"""Data dir, identity key, token, config file and the single-node lock."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from n3xus.node.config import (
    DEFAULT_API_PORT,
    DataDir,
    NodeConfig,
    resolve_data_dir,
)
from n3xus.node.errors import ConfigError, NodeRunningError


def test_init_creates_secret_files_0600_and_is_idempotent(tmp_path: Path) -> None:
    dd = DataDir(tmp_path / "home")
    first = dd.init()
    assert first.changed
    assert set(first.created) >= {"identity.key", "api.token", "config.toml"}
    for name in ("identity.key", "api.token"):
        mode = stat.S_IMODE((dd.path / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"
    before = {p.name: p.read_bytes() for p in dd.path.iterdir()}
    second = dd.init()
    assert not second.changed and second.created == ()
    assert {p.name: p.read_bytes() for p in dd.path.iterdir()} == before


def test_identity_seed_is_stable_and_32_bytes(tmp_path: Path) -> None:
    dd = DataDir(tmp_path)
    dd.init()
    seed = dd.read_identity_seed()
    assert len(seed) == 32
    assert DataDir(tmp_path).read_identity_seed() == seed
    # Two data dirs never share a key.
    other = DataDir(tmp_path / "other")
    other.init()
    assert other.read_identity_seed() != seed


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "not an n3xus identity key"),
        (b"garbage\n", "not an n3xus identity key"),
        (b"n3xus-identity-v1 ed25519 !!!notbase64\n", "bad base64"),
        (b"n3xus-identity-v1 ed25519 AAAA\n", "3 bytes"),
        (b"\xff\xfe\x00binary", "corrupt"),
    ],
)
def test_corrupt_identity_key_is_a_clear_error_and_untouched(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    dd = DataDir(tmp_path)
    dd.init()
    dd.identity_path.write_bytes(content)
    with pytest.raises(ConfigError, match=reason):
        dd.read_identity_seed()
    dd.init()  # init must not "repair" (overwrite) an existing key
    assert dd.identity_path.read_bytes() == content


def test_world_readable_key_is_refused(tmp_path: Path) -> None:
    dd = DataDir(tmp_path)
    dd.init()
    os.chmod(dd.identity_path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        dd.read_identity_seed()


def test_unreadable_key_is_a_clear_error(tmp_path: Path) -> None:
    # A path that exists but cannot be read as a file (works as root too, where
    # mode bits do not stop reads).
    dd = DataDir(tmp_path)
    dd.init()
    dd.identity_path.unlink()
    dd.identity_path.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="cannot read identity key"):
        dd.read_identity_seed()


def test_missing_key_points_to_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="n3xus node init"):
        DataDir(tmp_path).read_identity_seed()


def test_config_defaults_and_overrides(tmp_path: Path) -> None:
    dd = DataDir(tmp_path)
    dd.init()
    assert dd.load_config() == NodeConfig()
    assert dd.load_config().api_port == DEFAULT_API_PORT
    dd.config_path.write_text('[api]\nport = 9999\n[node]\nlisten = ["/ip4/127.0.0.1/tcp/1"]\n')
    cfg = dd.load_config()
    assert cfg.api_port == 9999 and cfg.listen == ("/ip4/127.0.0.1/tcp/1",)


def test_feature_sections_are_known_and_other_tables_land_in_extra(tmp_path: Path) -> None:
    dd = DataDir(tmp_path)
    dd.init()
    dd.config_path.write_text('[federation]\ndeny = ["x"]\n[agents]\nthreads = 2\n'
                              '[live]\nice_servers = []\n')
    cfg = dd.load_config()
    assert cfg.federation == {"deny": ["x"]} and cfg.agents == {"threads": 2}
    assert cfg.extra == {"live": {"ice_servers": []}}
    dd.config_path.write_text("agents = 3\n")
    with pytest.raises(ConfigError, match=r"\[agents\] must be a table"):
        dd.load_config()


def test_generated_config_shows_the_defaults_in_force(tmp_path: Path) -> None:
    """Uncommenting every `# key = value` line and `# [table]` header of the generated
    config.toml (but the examples [agents] model/threads) changes nothing: the values shown
    are the defaults. Appending a table the file only shows commented stays valid TOML."""
    import re
    from dataclasses import replace

    from n3xus.node.p2p.hello import federation_settings
    from n3xus.node.services.agents import DEFAULT_CONTEXT_TOKENS
    from n3xus.node.services.peers import BAN_THRESHOLD, DEFAULT_BAN_SECONDS

    dd = DataDir(tmp_path)
    dd.init()
    generated = dd.config_path.read_text()
    dd.config_path.write_text(generated + '\n[federation]\ndeny = ["x"]\n[agents]\nthreads = 1\n')
    assert (dd.load_config().federation, dd.load_config().agents) == ({"deny": ["x"]}, {"threads": 1})
    setting = re.compile(r"# ((?!model |threads )[a-z_]+ = |\[[a-z]+\]$)")
    lines = [line[2:] if setting.match(line) else line for line in generated.splitlines()]
    assert sum(1 for line in lines if not line.startswith("#") and " = " in line) >= 20
    dd.config_path.write_text("\n".join(lines) + "\n")
    cfg = dd.load_config()
    settings = federation_settings(cfg.federation)
    assert (settings.ban_seconds, settings.ban_threshold) == (DEFAULT_BAN_SECONDS, BAN_THRESHOLD)
    assert settings.networks == settings.allow == settings.deny == ()
    assert cfg.agents == {"context_tokens": DEFAULT_CONTEXT_TOKENS}
    assert replace(cfg, federation={}, agents={}) == NodeConfig()


@pytest.mark.parametrize(
    "text, match",
    [
        ("[api\nport=1", "not valid TOML"),
        ("[api]\nport = 'x'", "port must be"),
        ("[api]\nport = 70000", "out of range"),
        ("node = 3", r"\[node\] must be a table"),
        ("[node]\nlisten = [1]", "must be strings"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, match: str) -> None:
    dd = DataDir(tmp_path)
    dd.init()
    dd.config_path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        dd.load_config()


def test_lock_refuses_a_second_holder_and_releases(tmp_path: Path) -> None:
    dd = DataDir(tmp_path)
    dd.init()
    with dd.lock():
        with pytest.raises(NodeRunningError, match=str(os.getpid())):
            with DataDir(tmp_path).lock():
                pass  # pragma: no cover - must not get here
    with dd.lock():  # released: can be taken again
        pass


def test_resolve_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("N3XUS_HOME", str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("N3XUS_HOME")
    assert resolve_data_dir(None) == Path("~/.n3xus").expanduser()
