"""Customer load: Locust process control, the locustfile (wiring only), customers, load shapes.

Nothing here but the locustfile imports Locust: it monkey-patches the standard library with gevent."""
