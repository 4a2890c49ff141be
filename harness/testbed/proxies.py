"""Toxiproxy: the real server as a subprocess, and every link of the topology as one of its proxies.

The client is toxiproxy-python. Where it falls short we call Toxiproxy's HTTP API directly, here
and nowhere else:
- it has no request timeouts (a wedged server would hang the harness), so every call goes through
  `_api()` with a deadline;
- it cannot update a toxic in place (POST /proxies/{proxy}/toxics/{toxic});
- its host/port live in a class attribute shared by the whole process, so we set it on each call.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer

from harness.errors import TestbedError
from harness.links import Link as Link  # its old home, kept for harness/nemesis (edited elsewhere)
from harness.procs import free_port, owned_env, parent_death_preexec
from harness.rundir import PROJECT_ROOT

TOOLS_BIN = PROJECT_ROOT / ".tools" / "bin"
TOXIPROXY_VERSION = "v2.12.0"
# Every toxiproxy-server the harness starts (process or container) gets these flags: its own
# per-proxy byte counters at GET /metrics, which the nemesis samples at each apply and heal.
SERVER_FLAGS = ("-proxy-metrics",)


def server_env() -> dict[str, str]:
    """Environment for every toxiproxy-server the harness starts. Go's scheduler on one thread:
    with GOMAXPROCS=1 Toxiproxy's CPU per payment fell from 0.74-0.82 to 0.46-0.49 ms (mostly kernel
    time handing each chunk between threads; benchmarks/cpu_per_payment.py) and the services sharing
    its cores got faster too; one core still carries about 2,000 payments/s. A GOMAXPROCS in the
    harness's own environment wins."""
    return {"GOMAXPROCS": os.environ.get("GOMAXPROCS") or "1"}


# The two counters Toxiproxy (2.5 and later) keeps per proxy and direction, in bytes. They are
# credited when a connection's direction ends (io.Copy returns), not while bytes flow, and
# `sent` only when the write ended without an error (a reset connection's bytes stay unsent).
METRICS = {"toxiproxy_proxy_received_bytes_total": "received", "toxiproxy_proxy_sent_bytes_total": "sent"}
INSTALL_HINT = (
    "build it once with `make tools` (needs Go: installs github.com/Shopify/toxiproxy/v2/cmd/server@"
    f"{TOXIPROXY_VERSION} into .tools/bin), or download a release binary of toxiproxy-server and set "
    "TOXIPROXY_SERVER=/path/to/toxiproxy-server"
)


class ToxiproxyError(TestbedError):
    """toxiproxy-server is missing, did not start, or refused a request."""


def find_server() -> Path | None:
    """The toxiproxy-server binary: $TOXIPROXY_SERVER, then .tools/bin, then $PATH."""
    env = os.environ.get("TOXIPROXY_SERVER")
    if env:
        return Path(env) if Path(env).is_file() else None
    local = TOOLS_BIN / "toxiproxy-server"
    if local.is_file():
        return local
    found = shutil.which("toxiproxy-server")
    return Path(found) if found else None


class ToxiproxyServer:
    """A toxiproxy-server process on a free loopback port, reset at start."""

    def __init__(self, log_path: Path, binary: Path | None = None, host: str = "127.0.0.1") -> None:
        self.binary = binary or find_server()
        self.host = host
        self.port = 0
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        if self.binary is None:
            raise ToxiproxyError("toxiproxy-server not found", fix=INSTALL_HINT)
        self.port = free_port(self.host)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "-host", self.host, "-port", str(self.port), *SERVER_FLAGS],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=parent_death_preexec,  # a Go binary cannot watch its parent for us
            env={**owned_env(), **server_env()},
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ToxiproxyError(f"toxiproxy-server exited with {self.proc.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError):
                if self.version():
                    self.reset()
                    return
            time.sleep(0.05)
        self.stop()
        raise ToxiproxyError(f"toxiproxy-server did not answer on {self.url} within {timeout_s:.0f}s")

    def version(self) -> str:
        with urllib.request.urlopen(self.url + "/version", timeout=1) as resp:
            raw = resp.read().decode().strip()
        try:
            version = str(json.loads(raw).get("version", raw))
        except (ValueError, AttributeError):
            version = raw
        # `go install` builds report "git"; ours is pinned by the Makefile, so say which one it is.
        if version == "git" and self.binary is not None and self.binary.parent == TOOLS_BIN:
            return f"{TOXIPROXY_VERSION} (built from source by make tools)"
        return version

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- the client --------------------------------------------------------------------------

    def _client(self) -> Toxiproxy:
        APIConsumer.host, APIConsumer.port = self.host, self.port
        return Toxiproxy()

    def _api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            raise ToxiproxyError(f"toxiproxy {method} {path}: HTTP {exc.code}: {detail}") from None
        return json.loads(raw) if raw.strip() else None

    def byte_counters(self, links: Iterable[Link]) -> dict[str, dict[str, dict[str, int]]]:
        """Toxiproxy's own byte counters of these links: {link name: {direction: {received, sent}}}.

        A link whose proxy has not yet closed a connection has no series yet: it counts zero. A
        server started without -proxy-metrics answers 404, which is an error (it cannot say)."""
        req = urllib.request.Request(self.url + "/metrics", method="GET")
        try:
            # Short: the nemesis reads these with its lock held, before an apply and after a heal.
            with urllib.request.urlopen(req, timeout=2) as resp:
                text = resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            # 404: a server started without the metrics flags (or older than 2.5) has no /metrics.
            raise ToxiproxyError(
                f"toxiproxy GET /metrics: HTTP {exc.code}",
                fix=f"start toxiproxy-server {TOXIPROXY_VERSION} with {' '.join(SERVER_FLAGS)}",
            ) from None
        by_proxy = parse_metrics(text)
        empty = {"received": 0, "sent": 0}
        return {
            link.name: {d: dict(by_proxy.get(link.proxy, {}).get(d, empty)) for d in ("upstream", "downstream")}
            for link in links
        }

    def reset(self) -> None:
        """Re-enable every proxy and remove every toxic."""
        self._api("POST", "/reset")

    def create(self, link: Link) -> None:
        # A fresh server at every run start holds no proxies; a name clash means a programming error.
        # Through _api, not the client library: on an error (a listen port taken) the library fails
        # with a KeyError, where this says what Toxiproxy answered.
        body = {"name": link.proxy, "listen": link.listen, "upstream": link.upstream, "enabled": True}
        self._api("POST", "/proxies", body)

    def delete(self, link: Link) -> None:
        self.delete_named(link.proxy)

    def delete_named(self, proxy: str) -> None:
        with contextlib.suppress(ToxiproxyError):  # already gone is deleted
            self._api("DELETE", f"/proxies/{proxy}")

    def proxies(self) -> dict[str, Any]:
        return self._api("GET", "/proxies")  # type: ignore[no-any-return]

    def add_toxic(
        self, link: Link, name: str, kind: str, attributes: dict[str, int], stream: str = "downstream",
        toxicity: float = 1.0,
    ) -> None:  # fmt: skip
        proxy = self._client().get_proxy(link.proxy)
        if proxy is None:
            raise ToxiproxyError(f"link {link.name} has no proxy on {self.url}")
        proxy.add_toxic(name=name, type=kind, attributes=attributes, stream=stream, toxicity=toxicity)

    def update_toxic(self, link: Link, name: str, attributes: dict[str, int], toxicity: float | None = None) -> None:
        # Not in toxiproxy-python: update in place, so a latency can change without a gap.
        body: dict[str, Any] = {"attributes": attributes}
        if toxicity is not None:
            body["toxicity"] = toxicity
        self._api("POST", f"/proxies/{link.proxy}/toxics/{name}", body)

    def remove_toxic(self, link: Link, name: str) -> None:
        with contextlib.suppress(ToxiproxyError):  # already gone is healed
            self._api("DELETE", f"/proxies/{link.proxy}/toxics/{name}")

    def set_enabled(self, link: Link, enabled: bool) -> None:
        proxy = self._client().get_proxy(link.proxy)
        if proxy is None:
            raise ToxiproxyError(f"link {link.name} has no proxy on {self.url}")
        if enabled:
            proxy.enable()
        else:
            proxy.disable()


def parse_metrics(text: str) -> dict[str, dict[str, dict[str, int]]]:
    """Toxiproxy's Prometheus text exposition -> {proxy: {direction: {received, sent}}} (bytes).

    Only the two per-proxy counters of METRICS are read; every other line is ignored."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for line in text.splitlines():
        name, brace, rest = line.partition("{")
        kind = METRICS.get(name.strip())
        if kind is None or not brace:
            continue
        labels_text, _, value = rest.rpartition("}")
        labels = dict(_LABEL.findall(labels_text))
        proxy, direction = labels.get("proxy"), labels.get("direction")
        try:
            count = int(float(value.split()[0]))
        except (ValueError, IndexError):
            continue
        if proxy is None or direction not in ("upstream", "downstream"):
            continue
        counts = out.setdefault(proxy, {}).setdefault(direction, {"received": 0, "sent": 0})
        counts[kind] += count
    return out


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
