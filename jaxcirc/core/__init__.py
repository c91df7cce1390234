"""jaxcirc.core."""
