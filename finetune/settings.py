"""Settings of `python -m finetune validate` and `train`.

Flags > `KANGAROO_FT_*` env vars > TOML file > defaults.

Every field is a flag (`--rank 8`), an env var (`KANGAROO_FT_RANK=8`) and a TOML key (`rank = 8`,
recipes in configs/). Bad values stop the command with a message naming the setting and value.
"""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from server.contract import LayeredSettings, split_commas

# The seven linear projections of a Llama block: LoRA on all of them learns fastest per step.
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class DataSettings(LayeredSettings):
    """What `validate` needs: the base model (for its tokenizer and template) and the data."""

    model_config = SettingsConfigDict(
        env_prefix="KANGAROO_FT_", cli_prog_name="python -m finetune validate"
    )

    config: Path | None = Field(None, description="TOML file with settings (recipes in configs/).")
    base: str = Field(
        description="Base model folder, or 'demo' for the built-in demo model (built on first use)."
    )
    data: Path = Field(description="Training data: JSONL, one chat or prompt/completion per row.")
    max_seq_len: int = Field(
        1024,
        ge=16,
        description="Rows longer than this many tokens are truncated; packed sequences are at "
        "most this long. Capped at the base model's context length.",
    )

    @field_validator("data")
    @classmethod
    def _file_exists(cls, path: Path) -> Path:
        if not path.is_file():
            raise ValueError("no such file")
        return path

    @field_validator("base")
    @classmethod
    def _base_exists(cls, base: str) -> str:
        if base != "demo" and not (Path(base).expanduser() / "config.json").is_file():
            raise ValueError("not a model folder (no config.json); use a folder or 'demo'")
        return base


class TrainSettings(DataSettings):
    """Everything `train` can be configured with."""

    model_config = SettingsConfigDict(cli_prog_name="python -m finetune train")

    out: Path = Field(description="Output folder for the adapter (or the model with --full).")
    eval: Path | None = Field(
        None, description="Held-out JSONL: eval loss during training, accuracy in vLLM at the end."
    )
    full: bool = Field(False, description="Train all parameters (no LoRA) and write a model.")
    # LoRA
    rank: int = Field(16, ge=1, description="LoRA rank r (vLLM accepts 1, 8, 16, 32, ... 512).")
    alpha: float = Field(32, gt=0, description="LoRA alpha; the update is scaled by alpha/r.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        list(LLAMA_PROJECTIONS), description="Module names to adapt (comma list on the CLI)."
    )
    rslora: bool = Field(False, description="Rank-stabilised LoRA: scale by alpha/sqrt(r).")
    # Optimisation ("auto": chosen from the data and the model, see finetune/auto.py)
    epochs: Annotated[float, Field(gt=0)] | Literal["auto"] = Field(
        "auto", description="Passes over the data (fractions allowed), or auto."
    )
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    lr: Annotated[float, Field(gt=0)] | Literal["auto"] = Field(
        "auto", description="Peak learning rate (warm-up, then cosine decay), or auto."
    )
    warmup_steps: int | None = Field(
        None, ge=0, description="Linear warm-up steps (at most the run). Default: warmup_fraction."
    )
    warmup_fraction: float = Field(
        0.05, ge=0, lt=1, description="Warm-up as a fraction of the run's steps."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0, description="Clip the gradient norm to this.")
    batch_tokens: Annotated[int, Field(ge=16)] | Literal["auto"] = Field(
        "auto", description="Tokens per optimiser step (padding included), or auto."
    )
    packing: bool = Field(
        True, description="Pack short rows into full sequences (rows never see each other)."
    )
    seed: int = Field(0, description="Seed of initialisation, shuffling and dropout.")
    # Bookkeeping
    eval_every: int = Field(50, ge=1, description="Steps between eval-loss measurements.")
    eval_accuracy: bool = Field(
        True,
        description="With --eval: at the end, generate the eval rows' last answers greedily in "
        "vLLM with and without the adapter and report exact-match accuracy.",
    )
    checkpoint_every: int = Field(100, ge=1, description="Steps between resumable checkpoints.")
    resume: bool = Field(False, description="Continue from the checkpoint next to --out.")
    skip_invalid: bool = Field(False, description="Train on the valid rows, report the rest.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to train; auto = CUDA when present, else CPU."
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="Matmul precision (weights and optimiser stay fp32): auto = bf16 on CUDA and "
        "on CPUs with bf16 dot-product instructions (AVX512-BF16, AMX), else fp32.",
    )
    compile: bool = Field(
        False,
        description="torch.compile the decoder blocks and the loss head (packing: fixed shapes).",
    )
    progress: bool = Field(True, description="Show a progress bar.")

    _split_commas = field_validator("target_modules", mode="before")(split_commas)

    @field_validator("eval")
    @classmethod
    def _eval_exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError("no such file")
        return path

    @model_validator(mode="after")
    def _out_is_free(self) -> "TrainSettings":
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise ValueError(f"out '{self.out}' exists and is not empty: pick a new folder")
        return self
