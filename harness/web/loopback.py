"""Which requests the harness's web servers serve: DNS rebinding and cross-site requests are refused.

Both servers (the chaos control API, harness/web/control.py, and Locust's web UI with the Chaos
tab, harness/web/panel.py) listen on 127.0.0.1 only, yet a browser can still be made to reach them:
- a page of another site can send a request to http://127.0.0.1:PORT; its Origin header gives it
  away (Locust answers every Origin with CORS headers, so it must be refused here);
- DNS rebinding: a name the attacker controls is re-pointed at 127.0.0.1 once the page has loaded.
  The browser then sees one origin and sends no Origin at all, but the Host header still carries
  the attacker's name.
So a request is served only when its Host is a loopback name with the port the server listens on,
and when it carries an Origin, that Origin is the server's own. Stdlib only: imported both by the
harness process and inside Locust.
"""

from __future__ import annotations

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def host_refusal(host: str | None, port: int) -> str | None:
    """Why a request with this Host header is refused, or None when it names this server."""
    if host is not None and host.lower() in {f"{name}:{port}" for name in LOOPBACK_NAMES}:
        return None
    return (
        f"Host {host!r} refused: this server answers only as 127.0.0.1:{port}"
        " (another name pointing here is how DNS rebinding looks)"
    )


def origin_refusal(origin: str | None, host: str) -> str | None:
    """Why a request with this Origin header is refused, or None (no Origin, or the page's own)."""
    if origin is None or origin.lower() == f"http://{host.lower()}":
        return None
    return f"cross-origin request from {origin[:100]!r} refused: only pages of http://{host} may call it"
