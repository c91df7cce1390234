"""What every absl entry point shares: one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import os
import re
import signal
import sys

from absl import app, flags


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
    except OSError as e:  # a path the user gave: missing, unreadable, a directory
        fail(f"{e.filename or e}: {e.strerror or 'cannot be read'}; check the path")


def interrupted(e: KeyboardInterrupt) -> None:
    """Ctrl-C: one line saying what finished and that a rerun resumes, exit status 130.

    A second Ctrl-C is ignored from here on. os._exit, because worker threads may still be
    inside a compiled call and a normal exit would wait for them; every file already written is
    complete (writes are atomic), so nothing is lost by not waiting."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    msg = getattr(e, "message", "") or "interrupted; the same command resumes from here"
    print(msg, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def flag_error(e: Exception, argv: list[str]) -> str:
    """A flag or config error as one line: the config file's own error (ml_collections wraps it
    with a traceback), or the override whose setting does not exist, with the suggestion."""
    text = str(e)
    # ml_collections quotes its KeyError inside an AttributeError: 'alphs' and the suggestion.
    plain = text.replace("\\n", " ").replace("\\", "").replace("'", " ")
    key = re.search(r'Key "([A-Za-z0-9_]+)" does not exist', text.replace("\\", ""))
    key = key or re.search(r"([A-Za-z0-9_]+)", plain)
    guess = re.search(r'Did you mean "([A-Za-z0-9_]+)"', plain)
    if isinstance(e, AttributeError | KeyError) and key:
        # Not among the overrides: the config file itself sets a key no section has.
        in_file = f"the config file sets {key.group(1)!r}"
        flag = next((a.split("=")[0] for a in argv if f".{key.group(1)}" in a), in_file)
        hint = f"did you mean {guess.group(1)!r}? " if guess else ""
        return f"{flag}: no such setting; {hint}every setting is listed in configs/sections.py"
    lines = [x.strip() for x in text.splitlines() if x.strip() and not x.startswith("  File")]
    cause = [x for x in lines if re.match(r"^[A-Za-z_.]+(Error|Exception): ", x)]
    return (cause[-1].split(": ", 1)[1] if cause else lines[0]) if lines else type(e).__name__


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - absl and ml_collections raise several types
        fail(flag_error(e, argv))


def main(fn):
    """app.run with flag errors (unknown flag, unreadable config file, a misspelt override) as
    one line and exit 2, Ctrl-C as one line and exit 130; JAX's persistent compilation cache on
    (`jaxcirc.infra.compile_cache`: JAXCIRC_COMPILE_CACHE)."""
    from absl import logging

    from jaxcirc.infra import compile_cache

    def quiet(argv):
        # orbax logs every checkpoint step at INFO; progress lines are ours.
        logging.set_verbosity(logging.WARNING)
        compile_cache.enable()
        try:
            return fn(argv)
        except KeyboardInterrupt as e:
            interrupted(e)

    try:
        app.run(quiet, flags_parser=_parse_flags)
    except KeyboardInterrupt as e:  # during flag parsing or start-up
        interrupted(e)


def phase_main(phase: str) -> None:
    """The whole of every phase script: --config and --workdir, then `study.run_phase(phase)`.

    Prints where the phase's files are; bad input is one line on stderr and exit status 2.
    """
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, "Study config (configs/*.py[:arg]).")
    workdir = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).")

    def run(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments {' '.join(argv[1:])}; pass options as --flag=value")
        from jaxcirc import study

        cfg = require_config(config.value, workdir.value)
        out = run_or_exit(lambda: study.run_phase(phase, cfg, workdir.value))
        print(f"{phase}: results under {os.path.join(workdir.value, phase)}; run directory {out}")

    main(run)
