"""The report's section on the study across training checkpoints: what `jaxcirc.phases.checkpoints`
wrote to `<run>/checkpoints/<model>/summary.json`, as tables per step beside their nulls, the
onset of each emotion, and the plots. Every sentence is filled from the summary; a model without
one gets no section."""

from __future__ import annotations

from pathlib import Path

from jaxcirc.infra import artifacts
from jaxcirc.report.format import fmt, images, read_json

INTRO = (
    "The representation analyses on every kept checkpoint of one model, the same prompts each "
    "time. Each null draws one label permutation (or one shuffled pairing) for every step at "
    "once, so a null draw is a whole trajectory. **beyond** is family-wise over the steps and "
    "block layers (single-step max-T: each cell standardised by its own null, against the "
    "largest standardised value of each null trajectory): a series with nothing planted is "
    "beyond anywhere with probability at most 1 - level. Bracketed figures are pointwise. "
    "Layer 0 (the embeddings) is the lexical baseline and is outside every family-wise verdict; "
    "a table cell marked **beyond** is beyond at some block layer of that step."
)


def _probe_cells(s: dict, i: int) -> list[str]:
    cells = []
    for p in s.get("probe", {}).values():
        mark = " **beyond**" if p["beyond_fw_any_layer"][i] else ""
        cells.append(
            f"{fmt(p['accuracy_focus'][i])} [{fmt(p['null_p95_focus'][i])}] / "
            f"{fmt(p['layer0_lexical_baseline'][i])}{mark}"
        )
    return cells


def _step_table(s: dict) -> list[str]:
    probe = s.get("probe", {})
    ov, maps = s.get("overlap"), s.get("maps")
    head = ["step", "checkpoint"] + [
        f"probe {f}: layer {s['focus_layer']} [null p95] / layer 0" for f in probe
    ]
    if ov:
        head.append(f"overlap with final, layer {ov['focus_layer']} [null hi]")
    if maps:
        head.append(f"map R^2 from the previous step, layer {maps['focus_layer']} [null hi]")
    loss = any("held_out_loss" in c for c in s["checkpoints"])
    if loss:
        head.append("held-out loss (nats/token)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, ck in enumerate(s["checkpoints"]):
        row = [str(ck["step"]), ck["name"], *_probe_cells(s, i)]
        if ov:
            mark = " **beyond**" if ov["beyond_fw_any_layer"][i] else ""
            row.append(f"{fmt(ov['overlap_focus'][i])} [{fmt(ov['null_hi_focus'][i])}]{mark}")
        if maps:
            row.append(
                "-"
                if i == 0
                else f"{fmt(maps['r2_focus'][i - 1])} [{fmt(maps['null_hi_focus'][i - 1])}]"
            )
        if loss:
            row.append(fmt(ck.get("held_out_loss")))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _onset_table(onset: dict) -> list[str]:
    lines = [
        "| emotion | onset step [95% CI] | sustained onset [95% CI] | beyond at the first step "
        "| share of bootstrap draws with an onset |",
        "|---|---|---|---|---|",
    ]
    for e, o in onset.items():
        ci = ", ".join(fmt(x) if x is not None else "none" for x in o["ci_steps"])
        sci = ", ".join(fmt(x) if x is not None else "none" for x in o["sustained_ci_steps"])
        lines.append(
            f"| {e} | {fmt(o['onset_step']) if o['onset_step'] is not None else 'none'} [{ci}] | "
            f"{fmt(o['sustained_onset_step']) if o['sustained_onset_step'] is not None else 'none'}"
            f" [{sci}] | {fmt(o['beyond_at_first_step'])} | {fmt(o['share_of_draws_with_onset'], 2)} |"
        )
    return lines


def _model(root: Path, label: str, s: dict) -> list[str]:
    cfg = s.get("config", {})
    lines = [
        f"### {label}",
        "",
        f"Steps {', '.join(str(x) for x in s['steps'])}; {s['n']} prompts; layer {s['focus_layer']}"
        f" is the last (resid_post). Probe: {cfg.get('probe_folds')}-fold shrinkage LDA, 4 "
        f"classes (chance 0.25), null {cfg.get('probe_n_perm')} label shuffles; other nulls "
        f"{cfg.get('n_perm')} draws; level {cfg.get('level')}; seed {cfg.get('seed')}."
        + (" Step 0 is the randomly initialised model." if s["steps"][0] == 0 else ""),
        "",
        *_step_table(s),
        "",
    ]
    for feat, p in s.get("probe", {}).items():
        first = p["first_step_beyond_fw"]
        lines.append(
            f"Probe ({feat}): first step beyond its family-wise null at some block layer: "
            f"{first if first is not None else 'none'}."
        )
    if "onset" in s:
        lines += [
            "",
            f"Onset of each emotion against neutral ({cfg.get('vector_feature')}; separation = "
            "bias-corrected squared distance between the class means over the within-class "
            "variance, z-scored features, max over block layers; bootstrap "
            f"{cfg.get('n_boot')} resamples of the prompts within each class):",
            "",
            *_onset_table(s["onset"]),
        ]
    if "maps" in s:
        lines += ["", f"Maps: {s['maps']['what']}; read as {s['maps']['reading']}."]
    t = s.get("timing", {})
    if t:
        after = t.get("mean_after_first_s")
        load = (t.get("per_checkpoint") or [{}])[0].get("load_s")
        lines += [
            "",
            f"Time per checkpoint: first {fmt(t['first_checkpoint_s'], 1)} s "
            f"({t['compiles_first']} compiles; {fmt(load, 1)} s of it loading: a stand-in not yet "
            f"cached trains all its kept steps then), then {fmt(after, 1)} s on average "
            f"({t['compiles_after_first']} compiles in all); across steps "
            f"{fmt(t.get('across_steps_s'), 1)} s.",
        ]
    folder = root / "checkpoints" / artifacts.slug(label)
    return lines + [""] + images(root, folder, limit=8) + [""]


def section_checkpoints(root: Path, labels: list[str]) -> list[str]:
    """The section, or [] when no model of `labels` has a checkpoints summary."""
    root = Path(root)
    found = {
        label: s
        for label in labels
        if (s := read_json(root / "checkpoints" / artifacts.slug(label) / "summary.json"))
    }
    if not found:
        return []
    lines = ["## Across training checkpoints", "", INTRO, ""]
    for label, s in found.items():
        lines += _model(root, label, s)
    return lines
