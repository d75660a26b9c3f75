"""`python -m server.batch run INPUT.jsonl --output OUT.jsonl`: the offline batch runner.

Exit codes: 0 when every line succeeded, 1 when any line failed or the engine was lost (the
summary says which), 2 for bad usage (no input file, results already there without --resume,
bad settings), 130 when interrupted (run again with --resume).
"""

import argparse
import sys
from pathlib import Path

from server.batch.in_process import lines_in_flight
from server.batch.offline import run_local
from server.batch.offline_job import Job, UsageError
from server.contract import SettingsError
from server.observability.logs import configure_logging
from server.settings import load_settings

EPILOG = """\
Any server setting may follow (see `python -m server --help`): --model, --max-num-seqs,
--kv-cache-gib, --max-model-len, --enforce-eager, --adapter-dir, --config FILE, ...
Give INPUT.jsonl right after `run`: placed after a setting or after --ray, it would be taken
for the setting's value or Ray's address.
"""


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the job; the exit code (see the module doc)."""
    args, setting_flags = parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings(setting_flags)
        job = Job(args.input, args.output, args.errors or errors_path(args.output), args.resume)
        job.check()
    except (SettingsError, UsageError) as exc:
        print(f"kangaroo batch: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    concurrency = args.concurrency or lines_in_flight(settings)
    try:
        if args.ray is None:
            return run_local(job, settings, concurrency)
        # Imported only when asked for: Ray takes seconds to import.
        from server.batch.on_ray import RayOptions, run_on_ray

        options = RayOptions(args.ray or None, args.actors, args.num_cpus_per_actor,
                             args.num_gpus_per_actor)  # fmt: skip
        return run_on_ray(job, settings, concurrency, options)
    except KeyboardInterrupt:
        print("kangaroo batch: interrupted; run again with --resume to go on.", file=sys.stderr)
        return 130


def parser() -> argparse.ArgumentParser:
    """The runner's own flags; the rest are server settings."""
    top = argparse.ArgumentParser(prog="python -m server.batch", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="answer every line of a Batch API input file",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("input", type=Path, metavar="INPUT.jsonl", help="Batch API input lines")
    run.add_argument(
        "--output", type=Path, required=True, metavar="OUT.jsonl",
        help="answered lines (status 200), appended as they finish",
    )  # fmt: skip
    run.add_argument(
        "--errors", type=Path, metavar="ERR.jsonl",
        help="failed and refused lines (default: OUT.errors.jsonl)",
    )  # fmt: skip
    run.add_argument(
        "--resume", action="store_true",
        help="continue a run that stopped: skip every line already written",
    )  # fmt: skip
    run.add_argument(
        "--concurrency", type=_positive, metavar="N",
        help="lines in flight per engine (default: max_num_seqs and a quarter more, which wait "
        "in the engine's queue)",
    )  # fmt: skip
    run.add_argument(
        "--ray", nargs="?", const="", metavar="ADDRESS",
        help="run on Ray: a cluster's address (auto, HOST:6379, ray://HOST:10001) or, without "
        "one, a Ray instance started on this machine",
    )  # fmt: skip
    run.add_argument(
        "--actors", type=_positive, default=1, metavar="N",
        help="with --ray: engines (Ray actors), one per GPU or node (default 1)",
    )  # fmt: skip
    run.add_argument(
        "--num-cpus-per-actor", type=float, default=1.0, metavar="X",
        help="with --ray: CPUs each actor reserves (default 1)",
    )  # fmt: skip
    run.add_argument(
        "--num-gpus-per-actor", type=float, metavar="X",
        help="with --ray: GPUs each actor reserves (default: tensor x pipeline parallel size "
        "when the cluster has GPUs, else 0)",
    )  # fmt: skip
    return top


def errors_path(output: Path) -> Path:
    """The default error file: OUT.jsonl -> OUT.errors.jsonl."""
    stem = output.name.removesuffix(".jsonl")
    return output.with_name(f"{stem}.errors.jsonl")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# vLLM starts worker processes that re-import the main module: the guard keeps them from
# running the job again.
if __name__ == "__main__":
    sys.exit(main())
