"""Phase 1 (dataset): the emotion prompt sets the config names, written to the run directory.

    python scripts/phase1_dataset.py --config=configs/demo.py --workdir=runs/demo

Writes dataset/prompts.jsonl, realworld.jsonl and stats.json. To check a dataset file of your own
against the schema, see scripts/check_dataset.py. The phases it reads run first when they are not done; a finished phase is
skipped (jaxcirc.study). Bad input: one line on stderr, exit status 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts import cli  # noqa: E402

if __name__ == "__main__":
    cli.phase_main("dataset")
