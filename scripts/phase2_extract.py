"""Phase 2 (extraction): every model's residual stream for every prompt.

    python scripts/phase2_extract.py --config=configs/demo.py --workdir=runs/demo

Writes extract/<model>/activations.npz (+ its .json: tokenisation, layers, timing). The phases it reads run first when they are not done; a finished phase is
skipped (jaxcirc.study). Bad input: one line on stderr, exit status 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts import cli  # noqa: E402

if __name__ == "__main__":
    cli.phase_main("extract")
