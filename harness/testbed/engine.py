"""Which Docker engine the docker backend talks to, resolved explicitly and in one place.

The order is the Docker CLI's:

1. `DOCKER_HOST`: `unix://PATH`, `tcp://HOST:PORT` or `ssh://[USER@]HOST[:PORT]`. For tcp://, TLS
   comes from `DOCKER_TLS_VERIFY` (any non-empty value: TLS with the server checked against
   `ca.pem` and a client certificate `cert.pem` / `key.pem`, all three read from `DOCKER_CERT_PATH`,
   default `~/.docker`) or `DOCKER_TLS` (TLS without checking the server; a client certificate is
   used when the folder has one).
2. Else the current Docker context: `DOCKER_CONTEXT`, or `currentContext` of `config.json` in
   `DOCKER_CONFIG` (default `~/.docker`); its endpoint is `Endpoints.docker.Host` of
   `contexts/meta/<sha256 of the name>/meta.json`, its TLS material
   `contexts/tls/<sha256 of the name>/docker/{ca,cert,key}.pem`. docker-py's `from_env` ignores
   contexts, which is why this module exists. The context `default` means the local socket.
3. Else the local socket, `unix:///var/run/docker.sock`.

Every mistake (a malformed URL, a certificate file that is not there, a context without metadata)
is an `EngineConfigError` naming the variable or context file and the fix, raised before any
connection is tried.

Where the harness reaches what the engine publishes (`Engine.address`): the containers' ports are
published on the engine's host, so the harness, Locust and the ledger snapshots dial that host:
- unix:// : the engine is on this machine; `127.0.0.1`, ports published on loopback only, and
  the run directory is shared with the engine (ledgers and the configuration are bind-mounted);
- tcp:// : the URL's host; ssh:// : the ssh host (the engine's own machine). Ports are published on
  that address when it is a loopback one (127.0.0.2 stays 127.0.0.2), else on all of the engine host's interfaces
  (0.0.0.0: the system under test is reachable from its network for the run). The run directory is
  NOT shared: the configuration is copied into each container and the ledgers copied back out
  when the run ends (`Engine.shares_files` is False), whatever the host is (a tcp:// engine on
  loopback may be a tunnel to another machine).
- `HARNESS_DOCKER_ADDRESS` overrides the address (a NAT, a tunnel, a name the engine's host has on
  the harness's network). With a unix:// socket forwarded from another machine, setting it to that
  machine's (non-loopback) address also says the run directory is not shared.
- ssh:// needs docker-py's optional paramiko package; the connection goes through the system's `ssh`
  client (its config and agent, as the Docker CLI's does).
"""

from __future__ import annotations

import hashlib
import importlib.util
import ipaddress
import json
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import TestbedError

if TYPE_CHECKING:
    from docker import DockerClient

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
ADDRESS_ENV = "HARNESS_DOCKER_ADDRESS"
TLS_FILES = ("ca.pem", "cert.pem", "key.pem")


class DockerUnavailable(TestbedError):
    """No Docker engine can be reached (or the SDK is missing); the message says which and why."""


class EngineConfigError(DockerUnavailable):
    """DOCKER_HOST, the TLS variables or the Docker context say something that cannot work."""


@dataclass(frozen=True)
class Tls:
    verify: bool  # check the server's certificate against ca
    ca: Path | None
    cert: Path | None
    key: Path | None
    origin: str  # where the files came from, for messages


@dataclass(frozen=True)
class Engine:
    """A resolved engine endpoint: how to connect, where its published ports are, whence it came."""

    host_url: str  # unix://..., tcp://HOST:PORT, ssh://[USER@]HOST[:PORT]
    source: str  # "DOCKER_HOST", "context 'x' (DOCKER_CONTEXT)", "default socket" ...
    tls: Tls | None = None
    address_override: str | None = None

    @property
    def scheme(self) -> str:
        return self.host_url.split("://", 1)[0]

    @property
    def shares_files(self) -> bool:
        """Does the engine see this machine's files (bind mounts of the run directory work)? Only a
        unix socket whose published ports are on this machine (a socket forwarded from another host
        is told apart by HARNESS_DOCKER_ADDRESS naming that host)."""
        return self.scheme == "unix" and _is_loopback(self.address)

    @property
    def address(self) -> str:
        """The host the harness dials to reach a port the engine published."""
        if self.address_override:
            return self.address_override
        if self.scheme == "unix":
            return "127.0.0.1"
        host = urllib.parse.urlsplit(self.host_url).hostname or ""
        return "127.0.0.1" if host == "localhost" else host

    @property
    def publish_ip(self) -> str:
        """The engine host's interface the containers' ports are published on."""
        address = self.address.strip("[]")
        if address == "localhost":
            return "127.0.0.1"
        # A loopback address is bound as it is (127.0.0.2 is not 127.0.0.1); a remote host: all its interfaces.
        return address if _is_loopback(address) else "0.0.0.0"

    def describe(self) -> str:
        """One line for environment.json and messages: the URL, its security and where it came from."""
        if self.scheme == "tcp":
            if self.tls is None:
                security = "plain TCP, no TLS"
            elif self.tls.verify:
                security = "TLS, server verified, client certificate" if self.tls.cert else "TLS, server verified"
            else:
                security = "TLS without verifying the server"
            return f"{self.host_url} ({security}; from {self.source})"
        return f"{self.host_url} (from {self.source})"

    def url_for_http(self, port: int) -> str:
        host = self.address
        if ":" in host and not host.startswith("["):  # an IPv6 literal
            host = f"[{host}]"
        return f"http://{host}:{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_url(url: str, origin: str) -> str:
    """A DOCKER_HOST-style URL, validated; `origin` names where it came from for the message."""
    fix = "use unix:///var/run/docker.sock, tcp://HOST:2376 or ssh://USER@HOST"
    if "://" not in url:
        raise EngineConfigError(f"{origin} is {url!r}: not a URL with a scheme", fix=fix)
    scheme = url.split("://", 1)[0]
    if scheme not in ("unix", "tcp", "ssh"):
        raise EngineConfigError(f"{origin} is {url!r}: the scheme {scheme}:// is not one the harness supports", fix=fix)
    parts = urllib.parse.urlsplit(url)
    if scheme == "unix":
        if not parts.path:
            raise EngineConfigError(f"{origin} is {url!r}: no socket path", fix=fix)
        return url
    try:
        port = parts.port
    except ValueError:
        raise EngineConfigError(f"{origin} is {url!r}: the port is not a number from 1 to 65535", fix=fix) from None
    if not parts.hostname:
        raise EngineConfigError(f"{origin} is {url!r}: no host", fix=fix)
    if scheme == "tcp" and port is None:
        raise EngineConfigError(f"{origin} is {url!r}: no port (the engine's TLS port is usually 2376)", fix=fix)
    if parts.path not in ("", "/"):
        raise EngineConfigError(f"{origin} is {url!r}: a {scheme}:// endpoint has no path", fix=fix)
    return url.rstrip("/")


def _tls_files(folder: Path, origin: str, need_client: bool, need_ca: bool) -> Tls:
    """The TLS material of one folder; missing files are an error naming the folder and the file."""
    present = {name: folder / name for name in TLS_FILES if (folder / name).is_file()}
    needed = [n for n, want in (("ca.pem", need_ca), ("cert.pem", need_client), ("key.pem", need_client)) if want]
    missing = [n for n in needed if n not in present]
    if missing:
        where = f"{folder}" if folder.is_dir() else f"{folder} (no such folder)"
        raise EngineConfigError(
            f"{origin}: TLS needs {', '.join(missing)} in {where}",
            fix="point DOCKER_CERT_PATH at the folder holding ca.pem, cert.pem and key.pem "
            "(or unset DOCKER_TLS_VERIFY for an engine without TLS)",
        )
    if ("cert.pem" in present) != ("key.pem" in present):
        raise EngineConfigError(
            f"{origin}: {folder} has {'cert.pem' if 'cert.pem' in present else 'key.pem'} without its pair",
            fix="put both cert.pem and key.pem of the client certificate there, or neither",
        )
    return Tls(need_ca, present.get("ca.pem"), present.get("cert.pem"), present.get("key.pem"), str(folder))


def _config_dir(env: Mapping[str, str], home: Path) -> Path:
    return Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"


def _from_context(name: str, origin: str, config_dir: Path) -> Engine:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta_path = config_dir / "contexts" / "meta" / digest / "meta.json"
    label = f"Docker context {name!r} ({origin})"
    if not meta_path.is_file():
        raise EngineConfigError(
            f"{label}: no metadata at {meta_path}",
            fix=f"create it (docker context create {name} --docker host=...), or choose another context "
            "(DOCKER_CONTEXT, or currentContext in config.json)",
        )
    try:
        meta = json.loads(meta_path.read_text())
        docker = meta["Endpoints"]["docker"]
        host = docker["Host"]
        if not isinstance(host, str):
            raise TypeError("Host is not a string")
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineConfigError(
            f"{label}: {meta_path} has no readable Endpoints.docker.Host ({type(exc).__name__}: {exc})",
            fix=f"recreate the context (docker context rm {name}; docker context create {name} --docker host=...)",
        ) from None
    url = _check_url(host, f"{label}'s Endpoints.docker.Host")
    tls = None
    tls_dir = config_dir / "contexts" / "tls" / digest / "docker"
    if url.startswith("tcp://") and tls_dir.is_dir():
        verify = not bool(docker.get("SkipTLSVerify", False))
        tls = _tls_files(tls_dir, label, need_client=False, need_ca=verify)
    return Engine(url, label, tls, address_override=None)


def resolve(env: Mapping[str, str] | None = None, home: Path | None = None) -> Engine:
    """The engine the environment names (see the module's docstring for the order and the rules)."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    engine = _resolve(env, home)
    override = env.get(ADDRESS_ENV, "").strip()
    if override:
        return Engine(engine.host_url, engine.source, engine.tls, address_override=override)
    return engine


def _resolve(env: Mapping[str, str], home: Path) -> Engine:
    host = env.get("DOCKER_HOST", "").strip()
    if host:
        url = _check_url(host, "DOCKER_HOST")
        tls = None
        if url.startswith("tcp://") and (env.get("DOCKER_TLS_VERIFY") or env.get("DOCKER_TLS")):
            verify = bool(env.get("DOCKER_TLS_VERIFY"))
            folder = Path(env["DOCKER_CERT_PATH"]) if env.get("DOCKER_CERT_PATH") else home / ".docker"
            origin = "DOCKER_TLS_VERIFY" if verify else "DOCKER_TLS"
            origin += (
                f" with DOCKER_CERT_PATH={folder}" if env.get("DOCKER_CERT_PATH") else f" (certificates in {folder})"
            )
            tls = _tls_files(folder, origin, need_client=verify, need_ca=verify)
        return Engine(url, "DOCKER_HOST", tls)
    config_dir = _config_dir(env, home)
    name = env.get("DOCKER_CONTEXT", "").strip()
    origin = "DOCKER_CONTEXT"
    if not name:
        config = config_dir / "config.json"
        if config.is_file():
            try:
                name = str(json.loads(config.read_text()).get("currentContext") or "")
            except (ValueError, AttributeError) as exc:
                raise EngineConfigError(
                    f"{config} is not a JSON object ({exc})", fix="repair or remove it (the Docker CLI writes it)"
                ) from None
            origin = f"currentContext of {config}"
    if name and name != "default":
        return _from_context(name, origin, config_dir)
    return Engine(DEFAULT_SOCKET, "default socket")


def connect(engine: Engine, timeout_s: int = 120) -> DockerClient:
    """A client of that engine, checked with a ping; DockerUnavailable naming the endpoint otherwise."""
    try:
        import docker
        from docker.errors import DockerException
        from docker.tls import TLSConfig
    except ImportError:
        raise DockerUnavailable("the Docker SDK for Python is not installed (pip install docker)") from None
    if engine.scheme == "ssh" and importlib.util.find_spec("paramiko") is None:
        raise DockerUnavailable(
            f"{engine.describe()}: docker-py needs the paramiko package for ssh:// endpoints, and it is not installed",
            fix="install it into the harness's environment (.venv/bin/pip install paramiko), or forward the engine's "
            "socket yourself (ssh -NL /tmp/engine.sock:/var/run/docker.sock USER@HOST) and set "
            "DOCKER_HOST=unix:///tmp/engine.sock with HARNESS_DOCKER_ADDRESS=HOST",
        )
    tls: TLSConfig | bool = False
    if engine.tls is not None:
        cert = (str(engine.tls.cert), str(engine.tls.key)) if engine.tls.cert and engine.tls.key else None
        ca = str(engine.tls.ca) if engine.tls.verify and engine.tls.ca else None
        tls = TLSConfig(client_cert=cert, ca_cert=ca, verify=ca if ca else False)
    try:
        # ssh:// goes through the system's ssh client (no paramiko needed), as the Docker CLI does.
        if engine.tls is None:
            client = docker.DockerClient(
                base_url=engine.host_url, timeout=timeout_s, use_ssh_client=engine.scheme == "ssh"
            )
        else:
            # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override the session's CA (its trust_env),
            # which would check the engine against the system's CAs instead of ca.pem: the client is made
            # with the oldest API version (no request yet), told not to read the environment, and only
            # then asks the engine for its API version, as docker-py's version="auto" does.
            client = docker.DockerClient(base_url=engine.host_url, tls=tls, timeout=timeout_s, version="1.24")
            client.api.trust_env = False
            client.api._version = str(client.api.version(api_version=False)["ApiVersion"])  # type: ignore[attr-defined]
        client.ping()
    except DockerException as exc:
        raise DockerUnavailable(
            f"no Docker engine answered at {engine.describe()}: {_short(exc)}",
            fix=_fix_for(engine),
        ) from None
    except OSError as exc:  # an ssl/socket failure docker-py did not wrap
        raise DockerUnavailable(
            f"no Docker engine answered at {engine.describe()}: {type(exc).__name__}: {exc}", fix=_fix_for(engine)
        ) from None
    return client


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."


def _fix_for(engine: Engine) -> str:
    if engine.scheme == "unix":
        return "start the engine (dockerd) or give this user access to its socket, or set DOCKER_HOST"
    if engine.scheme == "ssh":
        return "check that `ssh` reaches that host without a password prompt and that docker runs there"
    if engine.tls is not None:
        return (
            "check that the engine listens there with TLS, and that the certificates in "
            f"{engine.tls.origin} are the ones it trusts (and that its certificate names that host)"
        )
    return "check that the engine listens there (dockerd -H tcp://...), or set DOCKER_TLS_VERIFY for a TLS engine"
