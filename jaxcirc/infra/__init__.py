"""jaxcirc.infra: what every runner leans on and no analysis needs.

artifacts      atomic writes, run directories, stages with stamps (resume), slug
progress       progress lines, per-thread labels, the interrupt flag
runlock        one run at a time per run directory
compile_cache  JAX's persistent compilation cache and a compile counter
rundiff        compare two run directories, ignoring timings
"""
