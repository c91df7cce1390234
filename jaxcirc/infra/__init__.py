"""jaxcirc.infra."""
