"""The smoke study of two stand-ins (GPT-2 and Pythia: two models, so the alignment and the
cross-model phases run), one worker: the config the mesh and across-process tests run, each in
its own process (a list setting cannot be overridden by a flag).

    python scripts/run_study.py --config=tests/e2e/smoke_config.py --workdir=W \
        --config.models.cache_dir=C --config.mesh.data=2 --config.mesh.model=2
"""

from configs import demo


def get_config():
    cfg = demo.get_config("smoke")
    cfg.models.families = ["gpt2", "gpt_neox"]
    cfg.workers = 1
    return cfg
