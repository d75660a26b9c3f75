"""Settings: flags > env > TOML > defaults, validated at start-up with messages naming the value."""

import subprocess
import sys
from pathlib import Path

import pytest

from server.contract import SettingsError
from server.settings import load_settings
from tests.conftest import REPO, free_port


def test_defaults() -> None:
    s = load_settings([])
    assert (s.host, s.port, s.model, s.max_num_seqs, s.enable_prefix_caching) == (
        "127.0.0.1",
        8000,
        None,
        256,
        True,
    )


def test_precedence_flag_over_env_over_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "k.toml"
    config.write_text('port = 7001\nmax_num_seqs = 3\ndtype = "float32"\nenable_lora = true\n')
    monkeypatch.setenv("KANGAROO_PORT", "7002")
    monkeypatch.setenv("KANGAROO_MAX_NUM_SEQS", "4")
    s = load_settings(["--config", str(config), "--port", "7003"])
    assert s.port == 7003  # flag
    assert s.max_num_seqs == 4  # env over TOML
    assert s.dtype == "float32"  # TOML over default
    assert s.enable_lora is True
    assert s.config == config


def test_config_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "k.toml"
    config.write_text("max_model_len = 512\n")
    monkeypatch.setenv("KANGAROO_CONFIG", str(config))
    assert load_settings([]).max_model_len == 512


def test_boolean_flags() -> None:
    assert load_settings(["--no-enable-prefix-caching"]).enable_prefix_caching is False
    assert load_settings(["--enable-lora"]).enable_lora is True


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--port", "70000"], ["port", "70000"]),
        (["--max-num-seqs", "0"], ["max_num_seqs", "0"]),
        (["--dtype", "int3"], ["dtype", "int3"]),
        (["--max-lora-rank", "12"], ["max_lora_rank", "12"]),
        (["--gpu-memory-utilization", "1.5"], ["gpu_memory_utilization", "1.5"]),
        (["--max-loras", "4", "--max-cpu-loras", "2"], ["max_cpu_loras", "max_loras"]),
    ],
)
def test_bad_flag_value_names_setting_and_value(argv: list[str], words: list[str]) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(argv)
    for word in words:
        assert word in str(err.value)


def test_bad_env_value_names_setting_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANGAROO_KV_CACHE_GIB", "lots")
    with pytest.raises(SettingsError, match=r"kv_cache_gib.*lots"):
        load_settings([])


def test_unknown_toml_key_and_bad_toml(tmp_path: Path) -> None:
    config = tmp_path / "k.toml"
    config.write_text("max_num_seq = 3\n")
    with pytest.raises(SettingsError, match="Unknown setting 'max_num_seq'"):
        load_settings(["--config", str(config)])
    config.write_text("port = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(["--config", str(config)])
    with pytest.raises(SettingsError, match=r"missing.toml"):
        load_settings(["--config", str(tmp_path / "missing.toml")])


def test_missing_local_model_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"model.*no-such-dir"):
        load_settings(["--model", str(tmp_path / "no-such-dir")])


def test_shipped_configs_are_valid() -> None:
    # finetune-*.toml are training recipes: tests/finetune/test_settings.py checks them.
    configs = sorted(set((REPO / "configs").glob("*.toml")) - set(REPO.glob("configs/finetune-*")))
    assert configs
    for config in configs:
        load_settings(["--config", str(config)])


def test_server_refuses_to_start_on_a_bad_setting() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "server", "--max-num-seqs", "-3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "max_num_seqs" in r.stderr
    assert "-3" in r.stderr


def test_server_exits_nonzero_when_the_engine_cannot_start(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"architectures": ["NoSuchModel"]}')
    port = str(free_port())
    r = subprocess.run(
        [sys.executable, "-m", "server", "--model", str(tmp_path), "--port", port],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1
    assert "The engine failed to start" in r.stderr


def test_lora_rank_from_flag_env_and_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(["--max-lora-rank", "64"]).max_lora_rank == 64
    config = tmp_path / "k.toml"
    config.write_text("max_lora_rank = 128\n")
    assert load_settings(["--config", str(config)]).max_lora_rank == 128
    monkeypatch.setenv("KANGAROO_MAX_LORA_RANK", "320")
    assert load_settings(["--config", str(config)]).max_lora_rank == 320


def test_keys_tables_give_ids_roles_and_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.traffic.auth import KeyRing, Role, digest

    config = tmp_path / "keys.toml"
    config.write_text(
        "requests_per_minute = 100\n"
        '[[keys]]\nid = "bot"\nkey = "k1"\ntokens_per_minute = 500\n'
        f'[[keys]]\nid = "ops"\nsha256 = "{digest("k2").hex()}"\nrole = "admin"\n'
    )
    ring = KeyRing.from_settings(load_settings(["--config", str(config)]))
    bot, ops = ring.caller_of("k1"), ring.caller_of("k2")
    assert bot is not None
    assert (bot.id, bot.role, bot.requests_per_minute, bot.tokens_per_minute) == (
        "bot", Role.INFERENCE, 100, 500,
    )  # fmt: skip
    assert ops is not None
    assert (ops.id, ops.role) == ("ops", Role.ADMIN)
    monkeypatch.setenv("KANGAROO_KEYS", '[{"id": "env", "key": "k3"}]')
    assert KeyRing.from_settings(load_settings([])).caller_of("k3") is not None


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ([{"id": "a"}], "exactly one of 'key' and 'sha256'"),
        ([{"id": "a", "key": "x", "sha256": "0" * 64}], "exactly one of 'key' and 'sha256'"),
        ([{"id": "a", "sha256": "not-hex"}], "keys.0.sha256"),
        ([{"id": "a b", "key": "x"}], "keys.0.id"),
        ([{"id": "a", "key": "x"}, {"id": "a", "key": "y"}], "'a' is given to more than one"),
        ([{"id": "a", "key": "x", "requests_per_minute": 0}], "keys.0.requests_per_minute"),
    ],
)
def test_bad_keys_tables_are_refused_naming_the_key(keys: list, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        load_settings(keys=keys)
