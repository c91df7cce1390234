"""Run the whole study (phases 1 -> 7 and the report) into one run directory.

    python scripts/run_study.py --config=configs/demo.py --workdir=runs/demo
    python scripts/run_study.py --config=configs/paper.py --workdir=runs/paper
    python scripts/run_study.py --config=configs/demo.py --workdir=runs/demo --phases=vectors

A rerun resumes: finished phases whose inputs and config are unchanged are skipped.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from scripts import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Study config (configs/*.py[:arg]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).")
_PHASES = flags.DEFINE_list("phases", None, "Only these phases (and what they need).")


def main(argv):
    del argv
    from jaxcirc import study

    cfg = cli.require_config(_CONFIG.value, _WORKDIR.value)
    report = cli.run_or_exit(lambda: study.run_study(cfg, _WORKDIR.value, _PHASES.value))
    print(f"report: {report}")


if __name__ == "__main__":
    cli.main(main)
