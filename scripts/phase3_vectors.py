"""Phase 3 and 3.5 (emotion vectors): sentence-end and token-based vectors, cosines with nulls, probes.

    python scripts/phase3_vectors.py --config=configs/demo.py --workdir=runs/demo

Loads the models and dataset the config names (jaxcirc.study), runs the phase, writes its files
under the run directory. Bad input: one line on stderr, exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags
from ml_collections import config_flags

from jaxcirc import study

_CONFIG = config_flags.DEFINE_config_file("config", None, "Study config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumes if present).")


def main(argv):
    try:
        if len(argv) > 1:
            raise ValueError(f"unexpected arguments {' '.join(argv[1:])}; pass --flag=value")
        if _CONFIG.value is None or not _WORKDIR.value:
            raise ValueError("--config and --workdir are required")
        out = study.run_phase("vectors", _CONFIG.value, _WORKDIR.value)
    except ValueError as e:
        print(f"phase3_vectors: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"phase3_vectors: results under {out or _WORKDIR.value}")


if __name__ == "__main__":
    app.run(main)
