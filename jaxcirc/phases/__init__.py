"""jaxcirc.phases."""
