"""What every absl entry point shares: one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import sys

from absl import app


def fail(msg: str, code: int = 2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def require_config(cfg, workdir):
    if cfg is None:
        fail("--config is required, e.g. --config=configs/demo.py")
    if not workdir:
        fail("--workdir is required, e.g. --workdir=runs/demo")
    return cfg


def run_or_exit(fn):
    """Run `fn`; a ValueError (bad config, missing weights, broken dataset, unwritable run
    directory, layer out of range...) becomes one line on stderr and exit status 2."""
    try:
        return fn()
    except ValueError as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


def main(fn):
    """app.run with flag errors (unknown flag, unreadable config file) as one line + exit 2."""
    from absl import logging

    def quiet(argv):
        # orbax logs every checkpoint step at INFO; progress lines are ours.
        logging.set_verbosity(logging.WARNING)
        return fn(argv)

    try:
        app.run(quiet)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - flag parsing raises several types
        if type(e).__module__.startswith(("absl", "ml_collections")):
            fail(str(e).splitlines()[0])
        raise
