"""The smoke study of the GPT-2 stand-in alone, one worker: the config the across-process tests
run through scripts/run_study.py (a list setting cannot be overridden by a flag).

    python scripts/run_study.py --config=tests/e2e/gpt2_smoke_config.py --workdir=W \
        --config.models.cache_dir=C --config.mesh.data=2 --config.mesh.model=2
"""

from configs import demo


def get_config():
    cfg = demo.get_config("smoke")
    cfg.models.families = ["gpt2"]
    cfg.workers = 1
    return cfg
