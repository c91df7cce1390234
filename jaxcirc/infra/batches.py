"""Batch sizes from the memory at hand. Each setting in SETTINGS takes a whole number (used as
given: the user's choice) or "auto", which becomes a whole number here, from the config alone,
before any model is loaded and before any stage key is made:

    cfg, notes = fit_batches(cfg)        # a copy with every "auto" resolved; notes: one line
    preflight(cfg, dry_run=False)        # fitted, planned, refused in one line if it cannot fit
    cfg = resolve(cfg, workdir, log)     # the same for a run (jaxcirc.study.run_study)

The rule: an "auto" setting becomes the largest of 1, 2, 4, ... and its cap whose bytes per
device for one batch (jaxcirc.infra.planner.batch_bytes, the estimates the plan prints; the
largest over the config's models) are at most BATCH_SHARE of the room for batches: the usable
memory of a device (planner.MEMORY_SHARE of it; host memory on CPU, shared by every CPU device)
less every model's params (the study holds them all at once), split among the `workers` phases
that may run at once. The cap is the setting's stated maximum, or the work there is when that
is less (the prompts of one forward pass; the rows steering generates). Batch 1 is kept
whatever it needs: the plan's fit check then refuses, in one line naming the fix, a model that
does not fit even so.

A rerun keeps the sizes its run directory's config.json recorded while they still fit (memory
available on a host drifts between runs; the sizes are in the stage keys, so a new size would
rerun finished stages). Across processes every process takes the smallest size any of them
picked (each fitted its own memory; the stage keys must agree).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

AUTO = "auto"
# A batch gets at most half the room: the estimates leave out compile temporaries, logits and
# the allocator's slack, and a batch that nearly fills a device leaves nothing for them.
BATCH_SHARE = 0.5
_GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Setting:
    """One batch setting: config section and name, how the log line names it, and its stated
    maximum (larger batches gain little throughput on any device and cost compile memory)."""

    section: str
    name: str
    label: str
    most: int

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"


SETTINGS = (
    Setting("extract", "batch_size", "extract", 256),
    Setting("steering", "batch_rows", "steering rows", 1024),
    Setting("steering", "prefill_rows", "steering re-run rows", 512),
    Setting("heads", "batch_size", "heads", 64),
    Setting("heads_generation", "batch_rows", "head-edit generation rows", 1024),
)


def autos(cfg) -> list[Setting]:
    """The settings of `cfg` that are "auto"."""
    return [s for s in SETTINGS if s.section in cfg and cfg[s.section].get(s.name) == AUTO]


@dataclasses.dataclass(frozen=True)
class Choice:
    """A resolved setting: its size and why: "memory" (the next size would not fit), "cap"
    (its stated maximum), "all the work" (one batch holds it all), "run directory" (kept)."""

    setting: Setting
    size: int
    why: str


# ---------------------------------------------------------------------------------------------
# The room, the cap and the choice


def room(plan, workers: int) -> float:
    """Bytes per device one batch may use on `plan`'s machine: BATCH_SHARE of what the params
    of every model leave of the usable memory, split among `workers` phases at once (0 when
    the params alone fill it)."""
    from jaxcirc.infra import planner

    cpu = plan.platform == "cpu"
    usable = (plan.host_memory if cpu else plan.memory_per_device) * planner.MEMORY_SHARE
    per_device = usable / (plan.n_devices if cpu else 1)
    params = sum(m.params_bytes_per_device for m in plan.models)
    return max(per_device - params, 0.0) * BATCH_SHARE / max(1, int(workers))


def cap(setting: Setting, cfg, prompts, n_layers: list[int]) -> int:
    """The largest size worth having: the stated maximum, or the work when that is less (a
    forward pass's prompts; the rows steering generates for the deepest model). Head-edit
    generation's rows depend on the head screen's results: its maximum alone."""
    from jaxcirc.infra import planner

    work = setting.most
    if setting.key in ("extract.batch_size", "heads.batch_size"):
        work = prompts.emotional + prompts.neutral
    elif setting.section == "steering":
        work = max((planner.steering_rows(cfg, n, prompts) for n in n_layers), default=work)
    return max(1, min(setting.most, work))


def sizes_up_to(most: int) -> list[int]:
    """1, 2, 4, ... below `most`, then `most`."""
    out, b = [], 1
    while b < most:
        out.append(b)
        b *= 2
    return [*out, most]


def choose(setting: Setting, need, top: int, budget: float, before=None) -> Choice:
    """The size for `setting`: `before` (the run directory's) when it is a size up to `top`
    that fits, else the largest of `sizes_up_to(top)` whose `need(size)` bytes fit `budget`
    (1 when none does). need: size -> bytes per device (the largest over the models)."""
    if isinstance(before, int) and not isinstance(before, bool) and 1 <= before <= top:
        if need(before) <= budget:
            return Choice(setting, before, "run directory")
    best = 1
    for size in sizes_up_to(top):
        if need(size) > budget:
            break
        best = size
    why = "memory" if best < top else ("cap" if top == setting.most else "all the work")
    return Choice(setting, best, why)


# ---------------------------------------------------------------------------------------------
# The config resolved


def fit_batches(cfg, memory=None, devices=None, previous=None, strict: bool = False):
    """(a copy of `cfg` with every "auto" batch setting a whole number, notes: one line naming
    the sizes, or none when nothing was "auto"). memory: (bytes per device, host bytes)
    instead of what the machine reports; devices: as planner.make_plan; previous: the run
    directory's config.json as a dict (its sizes are kept while they fit); strict: as
    planner.make_plan (a source that cannot be planned raises)."""
    from jaxcirc.infra import planner

    todo = autos(cfg)
    if not todo:
        return cfg, []
    out = _with_sizes(cfg, {s: 1 for s in todo})
    plan = planner.make_plan(out, devices, strict=strict, memory=memory)
    budget = room(plan, cfg.get("workers", 1))
    prompts = planner.prompt_counts(cfg)
    shapes = [
        planner.shape_of(m.config, m.dtype, {"data": plan.data, "model": plan.model})
        for m in plan.models
    ]
    choices = []
    for s in todo:
        top = cap(s, out, prompts, [sh.cfg.n_layers for sh in shapes])
        need = _need(out, shapes, prompts, s)
        choices.append(choose(s, need, top, budget, _before(previous, s)))
    sizes = {c.setting: c.size for c in choices}
    return _with_sizes(cfg, sizes), [describe(choices, budget, cfg)]


def _need(cfg, shapes, prompts, setting: Setting):
    """size -> the largest bytes per device of one batch of that size over the models."""
    from jaxcirc.infra import planner

    def need(size: int) -> float:
        return max(
            (planner.batch_bytes(cfg, sh, prompts, setting.key, size) for sh in shapes),
            default=0.0,
        )

    return need


def _with_sizes(cfg, sizes: dict):
    """A copy of `cfg` with each setting of `sizes` set to its size."""
    out = copy.deepcopy(cfg)
    for s, size in sizes.items():
        out[s.section][s.name] = int(size)
    return out


def _before(previous, s: Setting):
    section = (previous or {}).get(s.section)
    return section.get(s.name) if isinstance(section, dict) else None


def describe(choices: list[Choice], budget: float, cfg) -> str:
    """One line: every resolved size and why, the room it was fitted to, and the settings of
    `cfg` given as whole numbers."""
    parts = [f"{c.setting.label} {c.size} ({c.why})" for c in choices]
    done = {c.setting for c in choices}
    given = as_given(cfg, [s for s in SETTINGS if s not in done])
    return (
        f"batch sizes from memory: {', '.join(parts)}; a batch may use "
        f"{budget / _GIB:.2f} GiB per device (jaxcirc.infra.batches says how)"
        + (f"; {given}" if given else "")
    )


def as_given(cfg, settings=SETTINGS) -> str:
    """ "as given: extract 32, ..." for `settings` of `cfg` ("" when it has none of them)."""
    parts = [
        f"{s.label} {cfg[s.section][s.name]}"
        for s in settings
        if s.section in cfg and s.name in cfg[s.section]
    ]
    return f"as given: {', '.join(parts)}" if parts else ""


def resolve(cfg, workdir=None, log=None, memory=None, devices=None):
    """`cfg` with every "auto" batch setting resolved for a run into `workdir` (the same `cfg`
    when none is): sizes its config.json recorded are kept while they fit, every process takes
    the smallest any picked, the line naming them goes to `log`, and a model that does not fit
    even so raises ValueError (one line naming the fix), all before anything is loaded."""
    from jaxcirc.infra import distributed, planner

    todo = autos(cfg)
    if not todo:
        return cfg
    out, notes = fit_batches(cfg, memory, devices, previous=_recorded(workdir))
    mine = [int(out[s.section][s.name]) for s in todo]
    agreed = distributed.smallest(mine)
    if agreed != mine:
        out = _with_sizes(out, dict(zip(todo, agreed, strict=True)))
        sizes = ", ".join(f"{s.label} {n}" for s, n in zip(todo, agreed, strict=True))
        notes = [*notes, f"batch sizes across processes (the smallest any picked): {sizes}"]
    planner.check_fits(planner.make_plan(out, devices, strict=False, memory=memory))
    for line in notes:
        (log or print)(line)
    return out


def preflight(cfg, dry_run: bool = False) -> tuple[str | None, str | None]:
    """Before any heavy work: the config checked (config_check), its "auto" batch sizes
    fitted (`fit_batches`) and its plan made (planner.make_plan). Without dry_run, raises
    ValueError (one line naming the fix) when a model does not fit, and returns (None, None).
    With dry_run: (the plan as text, timed by a matmul calibration, after a line naming the
    batch sizes; the first model's shortfall or None), raising nothing about the fit."""
    from jaxcirc import config_check
    from jaxcirc.infra import planner

    config_check.check(cfg)
    cfg, notes = fit_batches(cfg, strict=dry_run)
    plan = planner.make_plan(cfg, strict=dry_run)
    if not dry_run:
        planner.check_fits(plan)
        return None, None
    text = planner.format_plan(plan, planner.calibrate(str(cfg.models.get("dtype", "float32"))))
    notes = notes or [f"batch sizes {as_given(cfg)}"]
    return "\n".join([*notes, text]), next(iter(planner.problems(plan)), None)


def _recorded(workdir) -> dict | None:
    """The run directory's config.json (None when there is none or it cannot be read)."""
    if not workdir:
        return None
    try:
        return json.loads((Path(workdir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
