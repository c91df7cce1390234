"""jaxcirc.demo."""
