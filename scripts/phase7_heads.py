"""Phase 7: head screening (three methods), ablation/patching of top heads, circuits, MLP neurons.

    python scripts/phase7_heads.py --config=configs/demo.py --workdir=runs/demo

Runs the phases it reads first when they are not done (see jaxcirc.study).
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


def main(argv):
    del argv
    from jaxcirc import study

    cfg = cli.require_config(_CONFIG.value, _WORKDIR.value)
    out = cli.run_or_exit(lambda: study.run_phase("heads", cfg, _WORKDIR.value))
    print(f"heads: results under {os.path.join(_WORKDIR.value, 'heads')}; run directory {out}")


if __name__ == "__main__":
    cli.main(main)
