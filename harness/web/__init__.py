"""Front end for people at a browser: the chaos session, its control API, the Locust Chaos tab, `harness ui`."""
