"""The server's one settings object: flags > `KANGAROO_*` env vars > TOML file > defaults.

Every field is a flag (`--max-num-seqs 64`), an env var (`KANGAROO_MAX_NUM_SEQS=64`) and a TOML key
(`max_num_seqs = 64`). Values are validated at start-up; a bad one stops the server with a message
naming the setting and the value.
"""

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from server.contract import LORA_RANKS, LayeredSettings, parse_settings, split_commas


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kangaroo"


def _state_home() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "kangaroo"


def _default_usage_db() -> Path:
    return _state_home() / "usage.sqlite3"


def _default_data_dir() -> Path:
    return _state_home() / "data"


class KeySpec(BaseModel):
    """One API key with its own id (in logs, metrics and usage) and, optionally, its own limits.

    Give the key itself (`key`) or, better, only its SHA-256 hex digest (`sha256`).
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Name shown for this key.")
    key: SecretStr | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    role: Literal["inference", "admin"] = "inference"
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_secret(self) -> "KeySpec":
        if (self.key is None) == (self.sha256 is None):
            raise ValueError(f"key '{self.id}' needs exactly one of 'key' and 'sha256'")
        return self


class Settings(LayeredSettings):
    """Everything the server process can be configured with."""

    model_config = SettingsConfigDict(env_prefix="KANGAROO_", cli_prog_name="kangaroo-serve")

    config: Path | None = Field(None, description="TOML file with settings (see configs/).")

    # Model
    model: str | None = Field(
        None,
        description="Hugging Face model folder or hub id. Default: the built-in demo model, "
        "built on first use.",
    )
    served_model_name: str | None = Field(
        None,
        description="Model id clients send as `model`. Default: the folder name of --model.",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir, description="Where the demo model is cached."
    )

    # HTTP
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=1, le=65535, description="Port to bind.")
    sse_heartbeat_s: float = Field(
        15.0,
        ge=0,
        description="Seconds between SSE heartbeat comments on a stream (0 turns them off). "
        "Keeps proxies from cutting a stream that waits in the queue.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = Field(
        "json", description="Log lines as JSON objects (one per request, among others) or text."
    )
    max_body_mib: float = Field(
        8, gt=0, description="Largest request body in MiB (adapter uploads: adapter_max_mib)."
    )

    # Engine
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weight and activation dtype."
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Context length (prompt + output). Default: the model's."
    )
    max_num_seqs: int = Field(256, ge=1, description="Most sequences in one engine batch.")
    max_num_batched_tokens: int | None = Field(
        None, ge=16, description="Most tokens in one engine step. Default: vLLM's."
    )
    enable_prefix_caching: bool = Field(True, description="Reuse KV blocks of shared prefixes.")
    kv_cache_gib: int = Field(
        2, ge=1, description="KV cache size in whole GiB on CPU (VLLM_CPU_KVCACHE_SPACE)."
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Fraction of GPU memory vLLM may use on CUDA."
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per model replica (tensor).")
    pipeline_parallel_size: int = Field(1, ge=1, description="Pipeline stages (GPUs or nodes).")
    distributed_executor_backend: Literal["mp", "ray", "uni"] | None = Field(
        None, description="'ray' for multi-node; default: vLLM's choice."
    )
    seed: int = Field(0, description="Engine seed (requests without `seed` sample from it).")
    enforce_eager: bool = Field(
        False, description="Run the model eagerly: no torch.compile at start-up."
    )
    async_scheduling: bool = Field(
        True,
        description="Schedule the next engine step while the model runs this one (vLLM's async "
        "scheduling; vLLM leaves it off on CPU, Kangaroo turns it on there too).",
    )
    tool_call_parser: str = Field(
        "auto",
        description="How tool calls are written and read: auto (from the chat template: the "
        "vLLM parser its markers call for, or generic when it ignores tools), generic (tools in "
        "the system message, calls in <tool_call> tags) or a vLLM tool-parser name (hermes, "
        "llama3_json, mistral, qwen3_coder, ...).",
    )

    # LoRA (adapters are served through vLLM's LoRA support)
    enable_lora: bool = Field(False, description="Allow LoRA adapters.")
    max_lora_rank: int = Field(
        16, description=f"Largest adapter rank the engine accepts: one of {LORA_RANKS}."
    )
    max_loras: int = Field(4, ge=1, description="Adapters in one batch.")
    max_cpu_loras: int | None = Field(
        None, ge=1, description="Adapters kept in CPU memory (>= max_loras)."
    )

    # Adapter registry (hot-loaded LoRA adapters; the admin API under /v1/adapters)
    adapter_dir: Path | None = Field(
        None,
        description="Adapter registry folder (created if missing); turns on LoRA. Replicas may "
        "share it.",
    )
    adapter_max_mib: int = Field(
        1024, ge=1, description="Largest adapter accepted, upload or folder, in MiB."
    )

    # Keys, sent as `Authorization: Bearer KEY`. Once any is set, every route but /health needs one.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        [], description="Inference keys (comma list in env and flags)."
    )
    api_keys_file: Path | None = Field(None, description="File of inference keys, one per line.")
    admin_key: SecretStr | None = Field(
        None,
        description="Admin key: the admin API (/v1/adapters) and inference. With no key set at "
        "all, only clients on this machine (loopback) may call the admin API.",
    )
    admin_keys_file: Path | None = Field(None, description="File of admin keys, one per line.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        [], description="Browser origins allowed to call the API (comma list; '*' = any). Off."
    )
    _split_origins = field_validator("cors_origins", mode="before")(split_commas)
    keys: list[KeySpec] = Field(
        [],
        description="Keys with an id and their own limits: TOML [[keys]] tables (id, key or "
        "sha256, role, requests_per_minute, tokens_per_minute), JSON in env and flags.",
    )
    open_probes: bool = Field(
        True, description="/ready answers without a key (/health always does)."
    )
    open_metrics: bool = Field(
        False, description="/metrics answers without a key (else it needs an admin key)."
    )

    # Rate limits, per key (all callers share one budget when no key is configured)
    requests_per_minute: int | None = Field(
        None, ge=1, description="Requests per minute per key, unless the key sets its own."
    )
    tokens_per_minute: int | None = Field(
        None,
        ge=1,
        description="Prompt + completion tokens per minute per key, unless the key sets its "
        "own. A request reserves its prompt and max_tokens, and gets back what it did not use.",
    )
    usage_db: Path = Field(
        default_factory=_default_usage_db,
        description="SQLite file of usage per key, model and day (kept across restarts).",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Folder of durable state: files, batches and stored responses (SQLite, files).",
    )
    batch_max_lines: int = Field(50_000, ge=1, description="Most requests in one batch.")
    batch_max_open: int = Field(
        16, ge=1, description="Most batches a key may have open (not yet ended) at once."
    )
    batch_concurrency: int = Field(
        256,
        ge=1,
        description="Most batch lines this process keeps in the engine at once (never more "
        "than max_num_seqs less a 32nd, so that a live request always finds a place at "
        "once); below that, the window follows the live load.",
    )
    file_max_mib: int = Field(
        200, ge=1, description="Largest file accepted by POST /v1/files, in MiB."
    )
    responses_retention_s: float = Field(
        30 * 24 * 3600,
        gt=0,
        description="How long a stored response (object, input, every stream event) is kept.",
    )
    responses_max_stored: int = Field(
        100_000, ge=1, description="Most responses kept on disk; beyond, the oldest go first."
    )
    stream_resume_grace_s: float = Field(
        60,
        ge=0,
        description="How long a resumable stream whose client dropped goes on generating, "
        "waiting for the client to come back, before it is cancelled (background responses "
        "never wait for anyone).",
    )

    # Admission and deadlines
    max_waiting_requests: int = Field(
        256,
        ge=0,
        description="Requests that may wait for a place in the engine (max_num_seqs sequences "
        "run at once); beyond that, 429 server_overloaded at once.",
    )
    max_queue_wait_s: float = Field(
        30, gt=0, description="Longest wait for a place in the engine before 408 queue_timeout."
    )
    request_timeout_s: float = Field(
        600,
        gt=0,
        description="Longest time a request may take, queue included, before it is aborted "
        "(408 request_timeout). Requests may ask for less: X-Request-Timeout (seconds).",
    )
    drain_timeout_s: float = Field(
        30,
        ge=0,
        description="On SIGTERM/SIGINT, how long running requests may take to finish before "
        "they are aborted and the server exits.",
    )

    _split_keys = field_validator("api_keys", mode="before")(split_commas)

    @field_validator("api_keys_file", "admin_keys_file")
    @classmethod
    def _keys_file_readable(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError("no such file")
        return path

    @field_validator("model")
    @classmethod
    def _model_folder_exists(cls, model: str | None) -> str | None:
        # A hub id is "name" or "org/name"; anything else that looks like a path must exist.
        if model is None or Path(model).expanduser().is_dir():
            return model
        if (
            Path(model).expanduser().exists()
            or model.startswith(("/", ".", "~"))
            or model.count("/") > 1
        ):
            raise ValueError("no such model folder")
        return model

    @field_validator("max_lora_rank")
    @classmethod
    def _lora_rank_vllm_accepts(cls, rank: int) -> int:
        if rank not in LORA_RANKS:
            raise ValueError(f"must be one of {', '.join(map(str, LORA_RANKS))}")
        return rank

    @model_validator(mode="after")
    def _unique_key_ids(self) -> "Settings":
        ids = [spec.id for spec in self.keys]
        if duplicates := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"keys: the id '{duplicates[0]}' is given to more than one key")
        return self

    @model_validator(mode="after")
    def _adapters_need_lora(self) -> "Settings":
        if self.adapter_dir is not None:
            self.enable_lora = True
        return self

    @model_validator(mode="after")
    def _check_lora_capacity(self) -> "Settings":
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras})"
            )
        return self


def load_settings(argv: list[str] | None = None, **overrides: Any) -> Settings:
    """Build the server settings from flags (`argv`), env vars and the TOML file of --config.

    `overrides` stand in for the TOML file's values (tests use them). Raises `SettingsError`
    naming the setting and the value when any is invalid.
    """
    return parse_settings(Settings, argv, **overrides)
