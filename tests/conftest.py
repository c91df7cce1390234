"""Test-session settings.

Most of the suite's time is XLA compiling small programs that then run for milliseconds, so the
tests ask XLA's CPU backend for its cheapest code generation (about 30% less wall time for
tests/test_heads.py on 2 cores). Numerics are unchanged in kind (no fast-math; fp32 throughout),
and every tolerance in the suite holds. Set before jax is imported anywhere; inherited by the
subprocesses of tests/test_study.py. Benchmarks and the study itself keep XLA's defaults.
"""

import os

_FLAG = "--xla_backend_optimization_level=0"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

# Scripts the tests run (tests/test_study.py) turn on the persistent compilation cache in
# ~/.cache: the suite stays hermetic (compiles afresh) unless JAXCIRC_COMPILE_CACHE names a dir.
os.environ.setdefault("JAXCIRC_COMPILE_CACHE", "0")
