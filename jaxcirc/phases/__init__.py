"""jaxcirc.phases: one runner per phase of the study, behind one interface.

Every phase module defines

    NAME, VERSION      the phase and its code version (bumped when its outputs change meaning;
                       the study's stage keys include it, so old results are recomputed)
    Inputs             a dataclass of what the phase reads (records, activations, a model,
                       vectors), which the study loads from earlier stages of the run directory
    run(inputs, section, out_dir) -> dict | None
                       prepare, compute (jaxcirc.core), write the phase's files under out_dir;
                       returns the JSON-able summary (the study writes it as summary.json), or
                       None when the files say everything

`section` is the part of the config the phase reads (see `jaxcirc.study.phase_sections`), locked,
and exactly what the phase's stage key covers. A runner never imports another runner's files or
settings; the one shared piece is `phases.steering.run_steering`, which cross-model patching
calls to steer a model with mapped vectors exactly as the steering phase does.

    dataset      phase 1: the prompt sets          extract     phase 2: residual streams
    vectors      phases 3/3.5: vectors, probes     alignment   phase 6: cross-model maps
    steering     phases 4-5: steering, patching    heads       phase 7 (+ circuits, neurons,
    cross_model  mapped vectors steer other models              head_generation)
"""
