"""Write the demo model's synthetic chat dataset: `train.jsonl` and the held-out `eval.jsonl`.

The skills themselves live in `finetune/demo/skills.py` (the demo model is built from them);
this is the command-line entry point: `python scripts/demo_data.py --out data/`.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file from anywhere

from finetune.demo import skills


def main() -> None:
    """Write `train.jsonl` and the held-out `eval.jsonl` into `--out`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="folder for the two files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=2000, help="number of training rows")
    args = parser.parse_args()
    skills.write_dataset(args.out, args.seed, args.rows)
    print(
        f"wrote {args.rows} training rows and {len(skills.heldout_cases(args.seed))} held-out rows"
    )


if __name__ == "__main__":
    main()
