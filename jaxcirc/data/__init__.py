"""jaxcirc.data."""
