"""The `mesh` config section: validated (one line naming the fix), and in no stage key, so a
run directory resumes under any mesh and 1x1 is today's program exactly."""

from __future__ import annotations

import json

import pytest

from configs import demo
from jaxcirc import config_check, study


def test_default_mesh_is_one_device_and_no_mesh():
    cfg = demo.get_config("smoke")
    assert (cfg.mesh.data, cfg.mesh.model) == (1, 1)
    config_check.check(cfg)
    assert study.study_mesh(cfg) is None


@pytest.mark.parametrize("data, model, fix", [(2, 4, "product is 1"), (0, 1, ">= 1")])
def test_bad_mesh_is_one_line_naming_the_fix(data, model, fix):
    cfg = demo.get_config("smoke")
    cfg.mesh.data, cfg.mesh.model = data, model
    with pytest.raises(ValueError, match="config.mesh") as e:
        config_check.check(cfg)
    assert fix in str(e.value) and "\n" not in str(e.value)


def test_mesh_is_in_no_stage_key():
    """Every phase's section (its stage key) is the same with any mesh and without a mesh
    section at all (run directories made before it existed)."""
    cfg = demo.get_config("smoke")
    other = demo.get_config("smoke")
    other.mesh.data, other.mesh.model = 2, 4
    legacy = demo.get_config("smoke")
    legacy.unlock()
    del legacy["mesh"]
    for phase in config_check.PHASES:
        if phase in ("checkpoints", "cross_language"):  # optional: sections the smoke lacks
            continue
        keys = [json.dumps(study.phase_sections(c, phase, 2).to_dict(), sort_keys=True)
                for c in (cfg, other, legacy)]  # fmt: skip
        assert keys[0] == keys[1] == keys[2], phase
        assert '"mesh"' not in keys[0], phase


def test_default_loading_settings_leave_the_report_key_as_before():
    """configs/paper.py's models.dtype / models.stream at their defaults (fp32, whole) are not
    in the report's key (run directories made before them keep their report); bf16 is."""
    from configs import paper

    cfg = paper.get_config("")
    legacy = paper.get_config("")
    legacy.models.unlock()
    del legacy.models["dtype"], legacy.models["stream"]
    assert study.phase_sections(cfg, "report") == study.phase_sections(legacy, "report")
    cfg.models.dtype = "bfloat16"
    assert study.phase_sections(cfg, "report") != study.phase_sections(legacy, "report")
