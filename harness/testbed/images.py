"""Images of the docker backend, built from docker/*.Dockerfile: offline when asked, never twice.

- **app** (`payswitch-chaos/app`): the switch and the banks (mock_switch) with only what they import
  (orjson, pydantic, uvloop), pinned to the versions of the host's environment so both
  backends run the same code. No package registry is reachable inside `docker build`, so the wheels
  are downloaded on the host, with pip, into a wheelhouse (.tools/wheelhouse) that the build copies
  in and installs with `pip install --no-index`.
- **base**: what the app image starts FROM. With a registry, an official slim Python image
  (`python:3.11-slim`, or `--base-image` / HARNESS_BASE_IMAGE). Offline (`harness images build
  --offline`): `payswitch-chaos/base:bookworm`, a Debian bookworm minbase with python3 and
  python3-venv made by debootstrap from the apt mirror this machine already uses (read from
  /etc/apt/sources.list* at run time) and imported through the SDK. Bookworm's Python is 3.11, like
  the wheels; the app build refuses a base whose Python differs from the host's.
- **toxiproxy** (`payswitch-chaos/toxiproxy`): the static toxiproxy-server that `make tools` builds
  (CGO_ENABLED=0) on an empty `scratch` image, the official image's layout. HARNESS_TOXIPROXY_IMAGE
  names another image to use instead (e.g. the official Toxiproxy image, pulled when missing).

Every image is labelled `payswitch-chaos.inputs=<sha256 of what it is made from>` (Dockerfile, base
image id, wheels, sources, binary) and tagged with its first 12 digits: a build whose inputs already
have an image is skipped. The app image also carries `payswitch-chaos.sources=<sha256 of
mock_switch and its Dockerfile>`, which is what a run looks for: a run after a code change rebuilds
the app image (from the local offline base when there is one), a run without one reuses it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import TestbedError
from harness.rundir import PROJECT_ROOT

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.images import Image

DOCKERFILES = PROJECT_ROOT / "docker"
WHEELHOUSE = PROJECT_ROOT / ".tools" / "wheelhouse"

INPUTS_LABEL = "payswitch-chaos.inputs"
SOURCES_LABEL = "payswitch-chaos.sources"
APP_REPO = "payswitch-chaos/app"
TOXIPROXY_REPO = "payswitch-chaos/toxiproxy"
OFFLINE_BASE = "payswitch-chaos/base:bookworm"
DEFAULT_BASE = "python:3.11-slim"
DEBIAN_SUITE = "bookworm"
DEBOOTSTRAP_PACKAGES = ("python3", "python3-venv")
# What mock_switch imports (see mock_switch/*.py; it serves and calls HTTP itself, so no aiohttp);
# Locust and the harness stay on the host.
APP_PACKAGES = ("orjson", "pydantic", "uvloop")
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"

Log = Callable[[str], None]


class ImageError(TestbedError):
    """An image could not be built or found; the message says what to do."""


@dataclass(frozen=True)
class Built:
    """One image of `build_all`: its tag, whether it was built now (False: reused) and how long it took."""

    role: str
    tag: str
    built: bool
    seconds: float


@dataclass(frozen=True)
class Images:
    """The images a docker run uses."""

    app: str
    toxiproxy: str


def _quiet(_: str) -> None:
    pass


def _sha256(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())  # hash of hashes: no ambiguity between neighbours
    return h.hexdigest()


def _find(client: DockerClient, ref: str) -> Image | None:
    from docker.errors import ImageNotFound

    try:
        return client.images.get(ref)
    except ImageNotFound:
        return None


# -- the wheelhouse --------------------------------------------------------------------------------


def requirements() -> str:
    """The app's packages pinned to the host's versions (both backends run the same code)."""
    try:
        return "".join(f"{name}=={md.version(name)}\n" for name in APP_PACKAGES)
    except md.PackageNotFoundError as exc:
        raise ImageError(f"{exc.name} is not installed on the host; run `make setup`") from None


def _constraints() -> str:
    # Transitive dependencies (pydantic-core, typing-extensions ...) pinned to the host's versions too.
    pins = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name and name != "payswitch-chaos":
            pins[name.lower()] = f"{name}=={dist.version}\n"
    return "".join(pins[k] for k in sorted(pins))


def wheelhouse(folder: Path = WHEELHOUSE, log: Log = _quiet) -> Path:
    """Download the app's wheels for the host's Python into `folder`, unless they are there already."""
    reqs = requirements()
    req_file = folder / "requirements.txt"
    complete = folder / ".complete"
    if complete.exists() and req_file.exists() and req_file.read_text() == reqs and list(folder.glob("*.whl")):
        return folder
    log(f"wheelhouse: downloading {', '.join(APP_PACKAGES)} for Python {PYTHON_VERSION} into {folder}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    req_file.write_text(reqs)
    constraints = folder / "constraints.txt"
    constraints.write_text(_constraints())
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--only-binary=:all:", "--dest", str(folder), "-r", str(req_file), "-c", str(constraints)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise ImageError(f"pip could not download the app's wheels into {folder}:\n{proc.stderr.strip()[-2000:]}")
    complete.touch()
    return folder


# -- the offline base image ------------------------------------------------------------------------


def apt_mirror(sources: Iterable[Path] | None = None) -> str:
    """The Debian archive this machine's apt uses (one-line `deb` entries or deb822 `.sources`)."""
    if sources is None:
        etc = Path("/etc/apt")
        sources = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list")),
                   *sorted((etc / "sources.list.d").glob("*.sources"))]  # fmt: skip
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(
                    (k.strip().lower(), v.strip())
                    for k, _, v in (line.partition(":") for line in stanza.splitlines() if not line.startswith("#"))
                    if v
                )
                if "deb" in fields.get("types", "").split() and DEBIAN_SUITE in fields.get("suites", "").split():
                    uri = fields.get("uris", "").split()
                    if uri:
                        return str(uri[0])
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == DEBIAN_SUITE:
                    return words[1]
    raise ImageError(
        f"no apt source for Debian {DEBIAN_SUITE} in /etc/apt/sources.list*; debootstrap needs a mirror"
        " (or build without --offline from an official Python image)"
    )


def build_offline_base(client: DockerClient, log: Log = _quiet) -> Built:
    """Debian minbase + python3 + python3-venv by debootstrap, imported as OFFLINE_BASE (about a minute)."""
    started = time.monotonic()
    mirror = apt_mirror()
    inputs = _sha256([DEBIAN_SUITE.encode(), ",".join(DEBOOTSTRAP_PACKAGES).encode(), b"minbase"])
    existing = _find(client, OFFLINE_BASE)
    if existing is not None and existing.labels.get(INPUTS_LABEL) == inputs:
        return Built("base", OFFLINE_BASE, False, time.monotonic() - started)
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed: `apt-get install debootstrap` (the offline base needs it)")
    if os.geteuid() != 0:
        raise ImageError("debootstrap must run as root to build the offline base image (try sudo)")
    log(f"base: debootstrap {DEBIAN_SUITE} minbase + {', '.join(DEBOOTSTRAP_PACKAGES)} (about a minute)")
    with tempfile.TemporaryDirectory(prefix="payswitch-base-") as tmp:
        root = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(DEBOOTSTRAP_PACKAGES)}",
               DEBIAN_SUITE, str(root), mirror]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip()[-2000:]
            raise ImageError(f"debootstrap failed (see {root}/debootstrap/debootstrap.log):\n{tail}")
        # An image needs no package caches or lists; they only make it bigger.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."], check=True, timeout=300)
        repo, tag = OFFLINE_BASE.split(":")
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            f"LABEL {INPUTS_LABEL}={inputs}",
            'CMD ["/bin/bash"]',
        ]
        client.api.import_image(src=str(tarball), repository=repo, tag=tag, changes=changes)
    log(f"base: imported {OFFLINE_BASE}")
    return Built("base", OFFLINE_BASE, True, time.monotonic() - started)


def choose_base(client: DockerClient, requested: str | None = None) -> str:
    """--base-image or HARNESS_BASE_IMAGE, else the offline base when it exists, else the official slim Python."""
    chosen = requested or os.environ.get("HARNESS_BASE_IMAGE")
    if chosen:
        return chosen
    return OFFLINE_BASE if _find(client, OFFLINE_BASE) is not None else DEFAULT_BASE


def _ensure_present(client: DockerClient, ref: str, offline: bool, log: Log) -> Image:
    found = _find(client, ref)
    if found is not None:
        return found
    if offline:
        hint = "`harness images build --offline` makes it" if ref == OFFLINE_BASE else "pull or build it first"
        raise ImageError(f"image {ref} is not on this Docker engine and --offline forbids pulling it; {hint}")
    from docker.errors import APIError

    log(f"pulling {ref}")
    try:
        return client.images.pull(ref)
    except APIError as exc:
        raise ImageError(
            f"could not pull {ref} ({exc.explanation or exc}); without a registry, run `harness images build --offline`"
        ) from None


# -- the app and Toxiproxy images ----------------------------------------------------------------


def _source_files() -> list[Path]:
    return sorted(p for p in (PROJECT_ROOT / "mock_switch").rglob("*.py") if "__pycache__" not in p.parts)


def sources_hash() -> str:
    """What the app image runs: mock_switch and the Dockerfile (a run needs an image with this label)."""
    files = [DOCKERFILES / "app.Dockerfile", *_source_files()]
    return _sha256(part for f in files for part in (str(f.relative_to(PROJECT_ROOT)).encode(), f.read_bytes()))


def _build(client: DockerClient, context: Path, dockerfile: str, tag: str, labels: dict[str, str],
           buildargs: dict[str, str] | None = None) -> None:  # fmt: skip
    from docker.errors import BuildError

    try:
        client.images.build(path=str(context), dockerfile=dockerfile, tag=tag, labels=labels, buildargs=buildargs,
                            rm=True, forcerm=True, pull=False)  # fmt: skip
    except BuildError as exc:
        lines = [str(chunk.get("stream", chunk.get("error", ""))).rstrip() for chunk in exc.build_log]
        tail = "\n".join(line for line in lines if line)[-3000:]
        raise ImageError(f"docker build of {tag} failed: {exc.msg}\n{tail}") from None


def build_app(client: DockerClient, base: str, offline: bool = False, log: Log = _quiet) -> Built:
    started = time.monotonic()
    base_image = _ensure_present(client, base, offline, log)
    wheels = wheelhouse(log=log)
    wheel_files = sorted(wheels.glob("*.whl"))
    sources = sources_hash()
    # The Dockerfile is an input too: editing it must rebuild the image.
    inputs = _sha256([(DOCKERFILES / "app.Dockerfile").read_bytes(), sources.encode(), str(base_image.id).encode(),
                      PYTHON_VERSION.encode(),
                      (wheels / "requirements.txt").read_bytes(), *(w.name.encode() for w in wheel_files)])  # fmt: skip
    tag = f"{APP_REPO}:{inputs[:12]}"
    if _find(client, tag) is not None:
        return Built("app", tag, False, time.monotonic() - started)
    log(f"app: building {tag} from {base}")
    with tempfile.TemporaryDirectory(prefix="payswitch-app-") as tmp:
        ctx = Path(tmp)
        shutil.copy2(DOCKERFILES / "app.Dockerfile", ctx / "app.Dockerfile")
        (ctx / "wheelhouse").mkdir()
        shutil.copy2(wheels / "requirements.txt", ctx / "wheelhouse" / "requirements.txt")
        for w in wheel_files:
            shutil.copy2(w, ctx / "wheelhouse" / w.name)
        for src in _source_files():
            dest = ctx / src.relative_to(PROJECT_ROOT)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        _build(client, ctx, "app.Dockerfile", tag, {INPUTS_LABEL: inputs, SOURCES_LABEL: sources},
               {"BASE_IMAGE": base, "PYTHON_VERSION": PYTHON_VERSION})  # fmt: skip
    return Built("app", tag, True, time.monotonic() - started)


def build_toxiproxy(client: DockerClient, log: Log = _quiet) -> Built:
    from harness.testbed.proxies import INSTALL_HINT, find_server

    started = time.monotonic()
    server = find_server()
    if server is None:
        raise ImageError(f"toxiproxy-server not found, so its image cannot be built; {INSTALL_HINT}")
    dockerfile = DOCKERFILES / "toxiproxy.Dockerfile"
    inputs = _sha256([dockerfile.read_bytes(), server.read_bytes()])
    tag = f"{TOXIPROXY_REPO}:{inputs[:12]}"
    if _find(client, tag) is not None:
        return Built("toxiproxy", tag, False, time.monotonic() - started)
    log(f"toxiproxy: building {tag} from {server}")
    with tempfile.TemporaryDirectory(prefix="payswitch-toxiproxy-") as tmp:
        ctx = Path(tmp)
        shutil.copy2(dockerfile, ctx / "toxiproxy.Dockerfile")
        shutil.copy2(server, ctx / "toxiproxy-server")
        _build(client, ctx, "toxiproxy.Dockerfile", tag, {INPUTS_LABEL: inputs})
    return Built("toxiproxy", tag, True, time.monotonic() - started)


def build_all(
    client: DockerClient, offline: bool = False, base_image: str | None = None, log: Log = _quiet
) -> list[Built]:
    """`harness images build`: the base (offline only), the app and the Toxiproxy image, each skipped when current."""
    built: list[Built] = []
    if offline and base_image is None and not os.environ.get("HARNESS_BASE_IMAGE"):
        built.append(build_offline_base(client, log))
        base = OFFLINE_BASE
    else:
        base = choose_base(client, base_image)
    built.append(build_app(client, base, offline, log))
    other = os.environ.get("HARNESS_TOXIPROXY_IMAGE")
    if other:
        started = time.monotonic()
        _ensure_present(client, other, offline, log)
        built.append(Built("toxiproxy", other, False, time.monotonic() - started))
    else:
        built.append(build_toxiproxy(client, log))
    return built


def ensure(client: DockerClient, log: Log = _quiet) -> Images:
    """The images for a run: the newest app image of the current sources (built if there is none) and Toxiproxy."""
    found = client.images.list(filters={"label": f"{SOURCES_LABEL}={sources_hash()}"})
    if found:
        newest = max(found, key=lambda img: str(img.attrs.get("Created", "")))
        app = next((t for t in newest.tags if t.startswith(APP_REPO + ":")), str(newest.id))
    else:
        app = build_app(client, choose_base(client), log=log).tag
    other = os.environ.get("HARNESS_TOXIPROXY_IMAGE")
    if other:
        _ensure_present(client, other, False, log)
        toxiproxy = other
    else:
        toxiproxy = build_toxiproxy(client, log).tag
    return Images(app=app, toxiproxy=toxiproxy)
