"""What `server/` and `finetune/` share: the error base, settings layering, the adapter folder.

Both packages import this module and it imports neither: it is the bottom of the floor plan
(see `server/__init__.py`). Three contracts live here:

- errors: `KangarooError`, the base of every error raised on purpose, and `SettingsError`;
- settings: flags > `<prefix>*` env vars > TOML file > defaults (`LayeredSettings`,
  `parse_settings`), the same for `kangaroo-serve` and `python -m finetune`;
- the adapter folder that `finetune` writes and the server loads: its file names, the manifest,
  the base-model fingerprint and the LoRA ranks vLLM can be configured for.
"""

import argparse
import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# --- Errors -------------------------------------------------------------------------------


class KangarooError(Exception):
    """Base of every error the project raises on purpose."""


class SettingsError(KangarooError):
    """A setting has an invalid value; the message names the setting and the value."""


# --- Settings layering --------------------------------------------------------------------


def split_commas(value: object) -> object:
    """Validator for list settings: "a, b" (a flag or env value) becomes ["a", "b"]."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class LayeredSettings(BaseSettings):
    """Settings read from flags, then `<prefix>*` env vars, then a TOML file, then defaults."""

    model_config = SettingsConfigDict(
        extra="forbid",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,
        validate_default=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init values: rank it below the environment.
        # The CLI source, when parsing, is put in front of all of these by pydantic-settings.
        return env_settings, init_settings


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def parse_settings(cls: type[SettingsT], argv: list[str] | None, **overrides: Any) -> SettingsT:
    """Build a settings class from flags (`argv`), env vars and the TOML file of --config.

    The TOML file comes from `--config` or the env var `<env_prefix>CONFIG`; `overrides` stand
    in for its values (tests use them). Raises `SettingsError` naming the setting and the value
    when any is invalid.
    """
    config_path = _config_path(argv, f"{cls.model_config.get('env_prefix', '')}CONFIG")
    values = {**(_read_toml(config_path) if config_path else {}), **overrides}
    try:
        if argv is None:
            return cls(**values)
        return cls(_cli_parse_args=argv, **values)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _config_path(argv: list[str] | None, env_var: str) -> Path | None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    known, _ = pre.parse_known_args(argv or [])
    if known.config is not None:
        return known.config
    env = os.environ.get(env_var)
    return Path(env) if env else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"Setting 'config' has value '{path}': {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(
            f"Setting 'config' has value '{path}': not valid TOML ({exc})."
        ) from None


def _describe(exc: ValidationError) -> str:
    lines: dict[str, list[str]] = {}  # one line per setting: a union's branches share it
    for err in exc.errors():
        name = ".".join(str(part) for part in err["loc"] if not _is_union_tag(part))
        message = err["msg"].removeprefix("Value error, ")
        if not name:  # a check across several settings
            lines.setdefault(message + ".", [])
        elif err["type"] == "extra_forbidden":
            lines.setdefault(f"Unknown setting '{name}'.", [])
        else:
            lines.setdefault(f"Setting '{name}' has value {err['input']!r}: ", []).append(message)
    text = [
        head + " or ".join(reasons) + ("." if reasons else "") for head, reasons in lines.items()
    ]
    return "Invalid settings:\n  " + "\n  ".join(text)


def _is_union_tag(part: object) -> bool:
    # pydantic names the branch of a union that failed: "constrained-float", "literal['auto']".
    return isinstance(part, str) and (
        "[" in part or "-" in part or part in ("int", "float", "str", "bool", "none")
    )


# --- The adapter folder -------------------------------------------------------------------

CONFIG_NAME = "adapter_config.json"  # PEFT's LoRA config
WEIGHTS_NAME = "adapter_model.safetensors"  # lora_A / lora_B tensors only
MANIFEST_NAME = "kangaroo-adapter.json"  # finetune's manifest: base fingerprint, data, losses
MANIFEST_FORMAT = 1
ADAPTER_FILES = (CONFIG_NAME, WEIGHTS_NAME, MANIFEST_NAME)  # the only files a version holds

# vLLM accepts only these values of max_lora_rank; an adapter of any r up to it loads.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

# Config keys that change with the library that saved the model, not with the model.
_VOLATILE_CONFIG_KEYS = {"transformers_version", "_name_or_path", "dtype", "torch_dtype"}


def server_rank_for(rank: int) -> int:
    """The smallest `max_lora_rank` setting that serves an adapter of rank `rank`."""
    return min(r for r in LORA_RANKS if r >= rank)


def base_fingerprint(config: dict[str, Any], tokenizer: Any) -> str:
    """sha256 over the base model's config, vocabulary and chat template.

    An adapter is only meaningful on the base it was trained on: `finetune` writes this into the
    manifest and the server compares it with the fingerprint of the model it serves.
    """
    digest = hashlib.sha256()
    stable = {k: v for k, v in config.items() if k not in _VOLATILE_CONFIG_KEYS}
    for part in (
        stable,
        sorted(tokenizer.get_vocab().items()),
        tokenizer.all_special_tokens,
        tokenizer.chat_template or "",
    ):
        digest.update(json.dumps(part, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of an adapter or model folder written by `finetune`."""
    manifest: dict[str, Any] = json.loads((folder / MANIFEST_NAME).read_text())
    return manifest
