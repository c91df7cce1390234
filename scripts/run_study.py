"""Run the whole study (phases 1 -> 7 and the report) into one run directory.

    python scripts/run_study.py --config=configs/demo.py --workdir=runs/demo
    python scripts/run_study.py --config=configs/paper.py --workdir=runs/paper
    python scripts/run_study.py --config=configs/demo.py --workdir=runs/demo --phases=vectors
    python scripts/run_study.py --config=configs/paper.py:larger --dry_run   # the plan, no work

Configs and their variants (`--config=FILE:VARIANT`): configs/demo.py (the embedded default;
`:smoke` = CI size; `:training` = the study across training checkpoints of the Pythia stand-in),
configs/paper.py (the study's checkpoints; `:larger`; `:training` = Pythia-160M's revisions). Any setting can be
overridden, e.g. --config.steering.seed=1 (every setting: configs/sections.py).

Phases: dataset, extract, vectors, alignment, steering, heads, cross_model, report, and
checkpoints (the `:training` configs' phase, not in the default list). A rerun
resumes: finished phases whose settings and inputs are unchanged are skipped, and the log says
which. Ctrl-C stops within seconds (exit 130); the same command then resumes.

Across processes (one per host, or several on one machine), each sees its own devices and all
of them together make the config's mesh (--config.mesh.data x --config.mesh.model = every
process's devices); process 0 writes the run directory, which must be on a filesystem all of
them share:

    python scripts/run_study.py --config=configs/demo.py --workdir=runs/demo \
        --config.mesh.data=4 --coordinator_address=host0:1234 --num_processes=2 --process_id=0
    # ... and --process_id=1 on the other host; or set JAX_COORDINATOR_ADDRESS,
    # JAX_NUM_PROCESSES and JAX_PROCESS_ID (jax.distributed's own variables) instead of flags.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from scripts import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Study config: configs/demo.py (variants :smoke, :training, :japanese, :japanese-smoke) or "
    "configs/paper.py (variants :larger, :training, :japanese).",
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).")
_PHASES = flags.DEFINE_list(
    "phases",
    None,
    "Only these phases (and what they need): dataset, checkpoints, extract, vectors, alignment, "
    "steering, heads, cross_model, cross_language, report.",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "HOST:PORT of process 0 for a run across processes (jax.distributed); default "
    "$JAX_COORDINATOR_ADDRESS, and without either the run is one process.",
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes in the run (default $JAX_NUM_PROCESSES)."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's number, 0 .. num_processes-1 (default $JAX_PROCESS_ID)."
)
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_s",
    None,
    "Across processes: seconds before the others give up on a process that died and end too "
    "(default jax's, 100).",
)
_OPEN = flags.DEFINE_bool("open", False, "Open report.html in the default browser at the end.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run",
    False,
    "Print the plan (params and batch bytes per device, each phase's work and estimated time) "
    "from the config alone and exit: 0 when every model fits, 2 with the reason when not.",
)


def dry_run(cfg) -> None:
    """--dry_run: the plan printed, nothing loaded; exit 2 with one line when a model cannot
    fit on the devices at hand."""
    from jaxcirc.infra import batches

    text, problem = cli.run_or_exit(lambda: batches.preflight(cfg, dry_run=True))
    print(text)
    if problem:
        cli.fail(problem)


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])}; pass options as --flag=value")
    from jaxcirc.infra import distributed

    # Before anything touches a device: jax fixes its devices on first use.
    cli.run_or_exit(
        lambda: distributed.initialize(
            _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _HEARTBEAT.value
        )
    )
    from jaxcirc import study
    from jaxcirc.infra import batches

    if _DRY_RUN.value:
        if _CONFIG.value is None:
            cli.fail("--config is required, e.g. --config=configs/paper.py")
        return dry_run(_CONFIG.value)
    cfg = cli.require_config(_CONFIG.value, _WORKDIR.value)
    cli.run_or_exit(lambda: batches.preflight(cfg))  # before anything is loaded
    out = cli.run_or_exit(lambda: study.run_study(cfg, _WORKDIR.value, _PHASES.value))
    if out.name == "report.md":
        print(f"report: {out}")
        page = out.with_name("report.html")
        if page.exists():
            print(f"report page: {page} (one offline file; open it in a browser)")
            if _OPEN.value:
                import webbrowser

                webbrowser.open(page.resolve().as_uri())
    else:
        print(f"run directory: {out} (no report asked for)")


if __name__ == "__main__":
    cli.main(main)
