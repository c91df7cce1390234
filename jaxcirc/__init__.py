"""jaxcirc: emotion circuits in small language models, on JAX/Flax."""
