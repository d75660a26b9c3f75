"""`python -m finetune validate|train [flags]`: check data, train adapters and models.

Exit codes: 0 done; 1 the data has invalid rows or training failed a check; 2 bad settings.
"""

import sys
from pathlib import Path

from finetune.push import PushSettings
from finetune.settings import DataSettings, TrainSettings
from server.contract import KangarooError, SettingsError, parse_settings, server_rank_for

USAGE = """usage: python -m finetune {validate,train,push} [flags]  (a command's --help: its flags)

  validate  check every row of a JSONL chat dataset against a base model's template and context
  train     train a LoRA adapter (or, with --full, every weight) and write it to --out
  push      send an adapter folder to a running server: python -m finetune push OUT --name NAME
"""


def main(argv: list[str] | None = None) -> int:
    """Run one command; the return value is the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ("validate", "train", "push"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        if args[0] == "validate":
            return validate(parse_settings(DataSettings, args[1:]))
        if args[0] == "push":
            return push(parse_settings(PushSettings, args[1:]))
        return train(parse_settings(TrainSettings, args[1:]))
    except SettingsError as exc:
        print(f"finetune {args[0]}: {exc}", file=sys.stderr)
        return 2
    except KangarooError as exc:
        print(f"finetune {args[0]}: {exc}", file=sys.stderr)
        return 1


def validate(settings: DataSettings) -> int:
    """Print every problem of every row, the totals, and what `train` would pick on `auto`;
    1 when any row is invalid."""
    from transformers import AutoConfig, AutoTokenizer

    from finetune.data import load_dataset
    from finetune.trainer import plan_run

    base = base_folder(settings.base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    config = AutoConfig.from_pretrained(base)
    context_len = int(config.max_position_embeddings)
    seq_len = min(settings.max_seq_len, context_len)
    dataset = load_dataset(settings.data, tokenizer, seq_len, context_len)
    for problem in dataset.problems:
        print(problem)
    print(dataset.summary())
    if dataset.examples:
        # Training's own defaults (LoRA, packing, everything on auto) over the valid rows.
        defaults = TrainSettings.model_construct(**settings.model_dump())
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        plan = plan_run(defaults, dataset, seq_len, pad_id, config.hidden_size)
        print("train would use (LoRA, every setting on auto):", *plan.lines(), sep="\n")
    return 1 if dataset.problems else 0


def train(settings: TrainSettings) -> int:
    """Train and report where the result went."""
    from finetune.trainer import train as run

    result = run(settings.model_copy(update={"base": str(base_folder(settings.base))}))
    eval_part = "" if result.eval_loss is None else f", eval loss {result.eval_loss:.4f}"
    print(
        f"Wrote {result.out}: {result.steps} steps, train loss {result.train_loss:.4f}{eval_part}, "
        f"{result.tokens_per_s:,.0f} tokens/s"
    )
    if result.eval_accuracy is not None:
        print(result.eval_accuracy.summary())
    if not settings.full:
        print(f"Serve it with --enable-lora --max-lora-rank {server_rank_for(settings.rank)}")
    if result.accuracy_error is not None:
        print(f"Warning: no accuracy report: {result.accuracy_error}", file=sys.stderr)
    if result.warning is not None:
        print(f"Warning: {result.warning}", file=sys.stderr)
    return 0


def base_folder(base: str) -> Path:
    """The base model folder; 'demo' is the built-in demo model, built on first use in the
    server's cache folder (the same one `kangaroo-serve` uses)."""
    if base != "demo":
        return Path(base).expanduser()
    from finetune.demo.build import ensure_demo_model
    from server.settings import load_settings

    return ensure_demo_model(load_settings(None).cache_dir)


def push(settings: PushSettings) -> int:
    """Push and say which model ids now serve the adapter."""
    from finetune.push import push as send

    version = send(settings)
    verb = "Pushed" if version.get("new") else "Unchanged (same files as the newest version):"
    print(
        f"{verb} {version['model']} version {version['version']} ({version['sha256'][:12]}). "
        f"Chat with model='{version['model']}', or '{version['pinned_model']}' for this version."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
