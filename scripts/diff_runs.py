"""Compare two run directories: every result file equal, apart from timings and the root path.

    python scripts/diff_runs.py --before=runs/demo --after=runs/demo-new

Prints one line per differing file and a count; exits 1 when anything differs (0 when nothing
does), 2 on bad input.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from scripts import cli  # noqa: E402

_BEFORE = flags.DEFINE_string("before", None, "The reference run directory.")
_AFTER = flags.DEFINE_string("after", None, "The run directory to compare with it.")
_IGNORE = flags.DEFINE_list(
    "ignore",
    ["report.html", "report/report.html", "report/screenshots/", ".lock"],
    "Relative paths (or prefixes ending in /) to skip: by default the HTML page (it embeds the "
    "phases' timings, compared in their own files) and the run lock.",
)


def main(argv):
    del argv
    from jaxcirc.infra import rundiff

    if not _BEFORE.value or not _AFTER.value:
        cli.fail("--before and --after are both required, e.g. --before=runs/a --after=runs/b")
    diffs = cli.run_or_exit(
        lambda: rundiff.compare_runs(_BEFORE.value, _AFTER.value, tuple(_IGNORE.value))
    )
    for d in diffs:
        print(d)
    n = sum(1 for p in Path(_BEFORE.value).rglob("*") if p.is_file())
    print(f"{len(diffs)} differing file(s) of {n} compared")
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    cli.main(main)
