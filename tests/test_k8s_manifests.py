"""deploy/k8s/: every manifest checked offline, and the files checked against each other.

No cluster is reachable here (docs/kubernetes.md says what was never run), so this is the whole of
what is verified about the Kubernetes files:

- core kinds (Namespace, ConfigMap, Service, StatefulSet, Deployment, ServiceAccount, Role,
  RoleBinding) against the Kubernetes JSON schemas of K8S_VERSION that the kubernetes-validate
  package ships, in their strict variant: a misspelt or unknown field is an error, a wrong type too;
- custom resources (the Locust operator's LocustTest, Chaos Mesh's NetworkChaos and PodChaos)
  against structural schemas written below from the operator's CRD and Chaos Mesh's documentation,
  covering the fields docs/kubernetes.md relies on (unknown fields are errors here, where an API
  server would prune them silently);
- what no schema sees: selectors that select a workload, target ports that name a container port,
  ConfigMaps, Services, Roles that exist, the mock's own model accepting system.json, the harness's
  own loader (harness/target.py) accepting deploy/k8s/target.yaml, and every address agreeing
  between system.json, toxiproxy.json, the Services, the LocustTest and the target file;
- the real toxiproxy-server accepting toxiproxy.json (its listeners moved to loopback).

The broken variants at the end must each be caught, with the file and the field named.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from harness import target as targets
from harness.links import Link
from harness.procs import free_port
from harness.testbed.proxies import find_server
from mock_switch.config import SystemConfig

ROOT = Path(__file__).resolve().parents[1]
K8S_DIR = ROOT / "deploy" / "k8s"
TARGET = "target.yaml"  # the one YAML under deploy/k8s/ that is a harness target file, not a manifest
K8S_VERSION = "1.30"  # the schemas checked against (kubernetes-validate ships 1.25 to 1.37)
NAMESPACE = "payswitch"
DOMAIN = f"{NAMESPACE}.svc.cluster.local"  # the cluster domain is assumed to be the default
LINKS_SERVICE = "toxiproxy-links"
WORKLOADS = ("Deployment", "StatefulSet")
# Locust's own options the LocustTest uses; the others must be the locustfile's (harness/load/locustfile.py).
LOCUST_OPTIONS = {"-f", "--headless", "--users", "--spawn-rate", "--run-time"}

# -- custom resources: structural schemas of the fields relied on -----------------------------------

_STR = {"type": "string"}
_STR_MAP = {"type": "object", "additionalProperties": _STR}
_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
_METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "namespace"],
    "properties": {"name": _NAME, "namespace": _NAME, "labels": _STR_MAP, "annotations": _STR_MAP},
}
# A Go duration (time.ParseDuration), as Chaos Mesh's `duration` fields take.
_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"}
_RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        k: {"type": "object", "additionalProperties": {"type": ["string", "integer"]}} for k in ("requests", "limits")
    },
}


def _custom(api_version: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": api_version}, "kind": _STR, "metadata": _METADATA, "spec": spec},
    }


# LocustTest: the CRD locusttests.locust.io of the official operator (chart 0.1.6, as its CRD file
# and docs.locust.io's "Kubernetes Operator" page describe it).
_LOCUST_ROLE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"labels": _STR_MAP, "annotations": _STR_MAP, "resources": _RESOURCES},
}
LOCUSTTEST = _custom(
    "locust.io/v1",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["workers"],
        "properties": {
            "image": _STR,
            "imagePullPolicy": {"enum": ["IfNotPresent", "Always", "Never"]},
            "imagePullSecrets": {
                "type": "array",
                "items": {"type": "object", "required": ["name"], "properties": {"name": _STR}},
            },
            "workers": {"type": "integer", "minimum": 1},
            "args": _STR,  # one string: the operator splits it (shlex) after --master / --worker ...
            "env": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {"name": _STR, "value": _STR},
                },
            },
            "master": _LOCUST_ROLE,
            "worker": _LOCUST_ROLE,
            "labels": _STR_MAP,
            "annotations": _STR_MAP,
            "locustfile": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "content": _STR,
                    "configMap": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {"name": _NAME},
                    },
                },
                "oneOf": [{"required": ["content"]}, {"required": ["configMap"]}],
            },
            "metrics": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"intervalSeconds": {"type": "integer"}},
            },
        },
    },
)

# Chaos Mesh (chaos-mesh.org/v1alpha1): the selector of "Define the Scope of Chaos Experiments".
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "namespaces": {"type": "array", "items": _STR},
        "labelSelectors": _STR_MAP,
        "expressionSelectors": {"type": "array", "items": {"type": "object"}},
        "annotationSelectors": _STR_MAP,
        "fieldSelectors": _STR_MAP,
        "podPhaseSelectors": {"type": "array", "items": _STR},
        "nodeSelectors": _STR_MAP,
        "nodes": {"type": "array", "items": _STR},
        "pods": {"type": "object", "additionalProperties": {"type": "array", "items": _STR}},
    },
}
_MODE = {"enum": ["one", "all", "fixed", "fixed-percent", "random-max-percent"]}


def _netem(field: str, *more: str) -> dict[str, Any]:
    props = {name: _STR for name in (field, "correlation", *more)}
    return {"type": "object", "additionalProperties": False, "required": [field], "properties": props}


_DELAY = _netem("latency", "jitter")
_DELAY["properties"]["reorder"] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["reorder", "gap"],
    "properties": {"reorder": _STR, "correlation": _STR, "gap": {"type": "integer"}},
}
_NETWORK_ACTIONS = ["netem", "delay", "loss", "duplicate", "corrupt", "partition", "bandwidth"]
NETWORKCHAOS = _custom(
    "chaos-mesh.org/v1alpha1",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["action", "mode", "selector"],
        "properties": {
            "action": {"enum": _NETWORK_ACTIONS},
            "mode": _MODE,
            "value": _STR,
            "selector": _SELECTOR,
            "containerNames": {"type": "array", "items": _STR},
            "duration": _DURATION,
            "direction": {"enum": ["to", "from", "both"]},
            "target": {
                "type": "object",
                "additionalProperties": False,
                "required": ["mode", "selector"],
                "properties": {"mode": _MODE, "value": _STR, "selector": _SELECTOR},
            },
            "externalTargets": {"type": "array", "items": _STR},
            "device": _STR,
            "delay": _DELAY,
            "loss": _netem("loss"),
            "duplicate": _netem("duplicate"),
            "corrupt": _netem("corrupt"),
            "bandwidth": {
                "type": "object",
                "additionalProperties": False,
                "required": ["rate", "limit", "buffer"],
                "properties": {
                    "rate": _STR,
                    "limit": {"type": "integer", "minimum": 1},
                    "buffer": {"type": "integer", "minimum": 1},
                    "peakrate": {"type": "integer", "minimum": 0},
                    "minburst": {"type": "integer", "minimum": 0},
                },
            },
        },
        # the action's own parameters must be there
        "allOf": [
            {"if": {"properties": {"action": {"const": a}}}, "then": {"required": [a]}}
            for a in ("delay", "loss", "duplicate", "corrupt", "bandwidth")
        ],
    },
)
PODCHAOS = _custom(
    "chaos-mesh.org/v1alpha1",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["action", "mode", "selector"],
        "properties": {
            "action": {"enum": ["pod-kill", "pod-failure", "container-kill"]},
            "mode": _MODE,
            "value": _STR,
            "selector": _SELECTOR,
            "containerNames": {"type": "array", "items": _STR},
            "duration": _DURATION,
            "gracePeriod": {"type": "integer", "minimum": 0},
        },
        "allOf": [
            {"if": {"properties": {"action": {"const": "pod-failure"}}}, "then": {"required": ["duration"]}},
            {"if": {"properties": {"action": {"const": "container-kill"}}}, "then": {"required": ["containerNames"]}},
        ],
    },
)
CUSTOM_SCHEMAS = {
    ("locust.io/v1", "LocustTest"): LOCUSTTEST,
    ("chaos-mesh.org/v1alpha1", "NetworkChaos"): NETWORKCHAOS,
    ("chaos-mesh.org/v1alpha1", "PodChaos"): PODCHAOS,
}

# -- reading the files -------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """YAML with duplicate keys refused (PyYAML would keep the last one silently)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )  # fmt: skip
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


class Doc:
    """One manifest (one YAML document) and where it came from."""

    def __init__(self, rel: str, body: dict[str, Any]) -> None:
        self.rel = rel
        self.body = body
        self.kind = str(body.get("kind"))
        self.name = str((body.get("metadata") or {}).get("name"))

    def where(self, path: str = "") -> str:
        return f"{self.rel}: {self.kind}/{self.name}" + (f": {path}" if path else "")


def _path(parts: Iterator[Any] | Any) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def read_manifests(root: Path, problems: list[str]) -> list[Doc]:
    docs: list[Doc] = []
    files = sorted(root.rglob("*.yaml")) + sorted(root.rglob("*.yml"))
    if not files:
        problems.append(f"{root}: no YAML files")
    for path in files:
        rel = path.relative_to(root).as_posix()
        if rel == TARGET:
            continue
        try:
            bodies = list(yaml.load_all(path.read_text(), Loader=_StrictLoader))  # a SafeLoader
        except yaml.YAMLError as exc:
            problems.append(f"{rel}: not valid YAML: {exc}")
            continue
        for i, body in enumerate(b for b in bodies if b is not None):
            if not isinstance(body, dict) or "apiVersion" not in body or "kind" not in body:
                problems.append(f"{rel}: document {i + 1} is not a Kubernetes object (no apiVersion and kind)")
                continue
            docs.append(Doc(rel, body))
    return docs


# -- the checks ----------------------------------------------------------------------------------------


def check_schemas(docs: list[Doc], problems: list[str]) -> None:
    for doc in docs:
        custom = CUSTOM_SCHEMAS.get((doc.body["apiVersion"], doc.kind))
        if custom is not None:
            validator = jsonschema.Draft202012Validator(custom)
            for err in sorted(validator.iter_errors(doc.body), key=lambda e: list(e.absolute_path)):
                problems.append(f"{doc.where(_path(err.absolute_path))}: {err.message}")
            continue
        try:
            kubernetes_validate.validate(doc.body, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc.where(_path(exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(
                f"{doc.where()}: no schema for {doc.body['apiVersion']} {doc.kind}: add one to CUSTOM_SCHEMAS"
                " in tests/test_k8s_manifests.py (from the resource's CRD) or use a core kind"
            )


def _template_labels(doc: Doc) -> dict[str, str]:
    return dict(doc.body["spec"]["template"]["metadata"].get("labels") or {})


def _containers(doc: Doc) -> list[dict[str, Any]]:
    return list(doc.body["spec"]["template"]["spec"].get("containers") or [])


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_references(docs: list[Doc], problems: list[str]) -> None:
    by_kind: dict[str, dict[str, Doc]] = {}
    for doc in docs:
        by_kind.setdefault(doc.kind, {})[doc.name] = doc
    workloads = [d for d in docs if d.kind in WORKLOADS]
    services = by_kind.get("Service", {})
    configmaps = by_kind.get("ConfigMap", {})

    for doc in docs:
        ns = (doc.body.get("metadata") or {}).get("namespace")
        if doc.kind == "Namespace":
            if doc.name != NAMESPACE:
                problems.append(f"{doc.where('metadata.name')}: the namespace is {NAMESPACE!r}")
        elif ns != NAMESPACE:
            problems.append(f"{doc.where('metadata.namespace')}: {ns!r}, every object belongs in {NAMESPACE!r}")

    for w in workloads:
        spec = w.body["spec"]
        match = spec["selector"].get("matchLabels") or {}
        if not _selects(match, _template_labels(w)):
            problems.append(
                f"{w.where('spec.selector.matchLabels')}: {match} does not select the pod template's labels"
            )
        volumes = {v["name"]: v for v in spec["template"]["spec"].get("volumes") or []}
        claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
        for name, volume in volumes.items():
            cm = (volume.get("configMap") or {}).get("name")
            if cm is not None and cm not in configmaps:
                problems.append(f"{w.where(f'volumes.{name}.configMap.name')}: no ConfigMap {cm!r}")
        for c in _containers(w):
            for m in c.get("volumeMounts") or []:
                if m["name"] not in volumes and m["name"] not in claims:
                    at = "containers.{}.volumeMounts.{}".format(c["name"], m["name"])
                    problems.append(f"{w.where(at)}: no such volume")
        if w.kind == "StatefulSet":
            governing = services.get(spec["serviceName"])
            if governing is None or governing.body["spec"].get("clusterIP") != "None":
                problems.append(
                    f"{w.where('spec.serviceName')}: {spec['serviceName']!r} is not a headless Service here"
                )

    for svc in services.values():
        selector = svc.body["spec"].get("selector") or {}
        chosen = [w for w in workloads if _selects(selector, _template_labels(w))]
        if len(chosen) != 1:
            problems.append(f"{svc.where('spec.selector')}: {selector} selects {len(chosen)} workloads, not 1")
            continue
        ports = [p for c in _containers(chosen[0]) for p in c.get("ports") or []]
        for i, port in enumerate(svc.body["spec"].get("ports") or []):
            tp = port.get("targetPort", port["port"])
            if not any(p.get("name") == tp or p["containerPort"] == tp for p in ports):
                problems.append(
                    f"{svc.where(f'spec.ports.{i}.targetPort')}: {tp!r} is no container port of {chosen[0].where()}"
                )

    for rb in by_kind.get("RoleBinding", {}).values():
        ref = rb.body["roleRef"]
        if ref["kind"] == "Role" and ref["name"] not in by_kind.get("Role", {}):
            problems.append(f"{rb.where('roleRef.name')}: no Role {ref['name']!r}")
        for i, subject in enumerate(rb.body.get("subjects") or []):
            if subject["kind"] == "ServiceAccount" and subject["name"] not in by_kind.get("ServiceAccount", {}):
                problems.append(f"{rb.where(f'subjects.{i}.name')}: no ServiceAccount {subject['name']!r}")

    for doc in docs:
        if doc.kind in ("NetworkChaos", "PodChaos"):
            spec = doc.body.get("spec") or {}
            for where, sel in (("spec.selector", spec.get("selector")), ("spec.target.selector",
                               (spec.get("target") or {}).get("selector"))):  # fmt: skip
                labels = (sel or {}).get("labelSelectors")
                if labels and not any(_selects(labels, _template_labels(w)) for w in workloads):
                    problems.append(f"{doc.where(where + '.labelSelectors')}: {labels} selects no pod of deploy/k8s")


def _configmap_json(docs: list[Doc], name: str, key: str, problems: list[str]) -> tuple[Doc | None, Any]:
    for doc in docs:
        if doc.kind == "ConfigMap" and doc.name == name:
            try:
                return doc, json.loads(doc.body["data"][key])
            except (KeyError, ValueError) as exc:
                problems.append(f"{doc.where(f'data.{key}')}: not a JSON document: {exc}")
                return doc, None
    problems.append(f"deploy/k8s: no ConfigMap {name!r} with {key}")
    return None, None


def _service_ports(docs: list[Doc], name: str) -> set[int]:
    return {p["port"] for d in docs if d.kind == "Service" and d.name == name for p in d.body["spec"]["ports"]}


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def check_addresses(root: Path, docs: list[Doc], problems: list[str]) -> None:
    """The target file loads with the harness's loader, and every address agrees with it."""
    path = root / TARGET
    try:
        target = targets.load(path)
    except targets.TargetError as exc:
        problems.append(f"{TARGET}: {exc}")
        return
    if target.missing_links():
        problems.append(f"{TARGET}: links: {target.missing_links()} missing")

    def service_url(what: str, url: str) -> None:
        host, port = _split(url.removeprefix("http://"))
        name = host.removesuffix(f".{DOMAIN}")
        if host == name or port not in _service_ports(docs, name):
            problems.append(f"{TARGET}: {what}: {url} is not a port of a Service of deploy/k8s ({DOMAIN})")

    service_url("switch.url", target.switch.url)
    for p in target.participants:
        service_url(f"participants.{p.code}.url", p.url)
    links_ports = _service_ports(docs, LINKS_SERVICE)
    for name, addr in target.links.items():
        host, port = _split(addr.listen)
        if host != f"{LINKS_SERVICE}.{DOMAIN}" or port not in links_ports:
            problems.append(f"{TARGET}: links.{name}.listen: {addr.listen} is not a port of Service {LINKS_SERVICE}")
        service_url(f"links.{name}.upstream", f"http://{addr.upstream}")

    doc, proxies = _configmap_json(docs, "toxiproxy-config", "toxiproxy.json", problems)
    if doc is not None and proxies is not None:
        want = [
            {"name": Link(n, a.listen, a.upstream).proxy, "listen": f"0.0.0.0:{_split(a.listen)[1]}",
             "upstream": a.upstream, "enabled": True}
            for n, a in target.links.items()
        ]  # fmt: skip
        if proxies != want:
            wrong = sorted(
                {str(w["name"]) for w in want if w not in proxies}
                | {str(p.get("name")) for p in proxies if p not in want}
            )
            problems.append(f"{doc.where('data.toxiproxy.json')}: proxies {wrong} differ from {TARGET}'s links")

    doc, raw = _configmap_json(docs, "payswitch-system", "system.json", problems)
    if doc is not None and raw is not None:
        try:
            system = SystemConfig.model_validate(raw)
        except ValueError as exc:
            problems.append(f"{doc.where('data.system.json')}: mock_switch refuses it: {exc}")
        else:
            if [b.code for b in system.banks] != target.codes:
                problems.append(f"{doc.where('data.system.json')}: banks differ from {TARGET}'s participants")
            for code in target.codes:
                dial = f"http://{target.links[f'switch->{code}'].listen}"
                if system.switch.bank_urls.get(code) != dial:
                    problems.append(f"{doc.where(f'data.system.json switch.bank_urls.{code}')}: must be {dial}")
                if code in [b.code for b in system.banks]:
                    dial = f"http://{target.links[f'{code}->switch'].listen}"
                    if system.bank(code).switch_url != dial:
                        problems.append(f"{doc.where(f'data.system.json banks.{code}.switch_url')}: must be {dial}")

    check_load(docs, target, problems)


def check_load(docs: list[Doc], target: targets.Target, problems: list[str]) -> None:
    """The LocustTest's arguments are options Locust or the locustfile has, its customers dial the
    customers->BANK links, and its system.json is in the ConfigMap the operator mounts."""
    known = LOCUST_OPTIONS | set(
        re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", (ROOT / "harness/load/locustfile.py").read_text())
    )
    for doc in docs:
        if doc.kind != "LocustTest":
            continue
        spec = doc.body.get("spec") or {}
        args = shlex.split(str(spec.get("args", "")))
        values = dict(zip(args, [*args[1:], ""], strict=True))
        for arg in args:
            if arg.startswith("-") and arg.split("=")[0] not in known:
                problems.append(f"{doc.where('spec.args')}: {arg} is an option of neither Locust nor the locustfile")
        want = ",".join(f"{c}=http://{target.links[f'customers->{c}'].listen}" for c in target.codes)
        if values.get("--bank-urls") != want:
            problems.append(f"{doc.where('spec.args')}: --bank-urls must be {want}")
        mounted = ((spec.get("locustfile") or {}).get("configMap") or {}).get("name")
        system_json = values.get("--system-json", "")
        maps = {d.name: d for d in docs if d.kind == "ConfigMap"}
        key = system_json.removeprefix("/home/locust/")  # where the operator mounts the ConfigMap
        if mounted not in maps or key not in (maps[mounted].body.get("data") or {}):
            problems.append(
                f"{doc.where('spec.locustfile.configMap.name')}: --system-json {system_json} is not a key of"
                f" ConfigMap {mounted!r} mounted at /home/locust"
            )


def check_tree(root: Path) -> list[str]:
    problems: list[str] = []
    docs = read_manifests(root, problems)
    check_schemas(docs, problems)
    if not problems:  # cross-references assume the shapes the schemas promise
        check_references(docs, problems)
        check_addresses(root, docs, problems)
    return problems


# -- the tests -----------------------------------------------------------------------------------------


def test_every_manifest_passes() -> None:
    assert check_tree(K8S_DIR) == []


def test_every_kind_is_checked() -> None:
    """The tree holds what docs/kubernetes.md describes, each kind against a schema."""
    problems: list[str] = []
    kinds = {d.kind for d in read_manifests(K8S_DIR, problems)}
    assert problems == []
    assert {"Namespace", "ConfigMap", "Service", "StatefulSet", "Deployment", "Role", "RoleBinding"} <= kinds
    assert {"LocustTest", "NetworkChaos", "PodChaos"} <= kinds


def test_the_target_file_loads_with_the_harness_loader() -> None:
    target = targets.load(K8S_DIR / TARGET)
    assert target.codes == ["ACME", "BETA", "CRED"]
    assert target.missing_links() == []
    # no pid files across pods: the loader refuses process faults for it, saying why
    assert "processes.switch.pid_file" in (target.process_fault_problem("crash", "switch") or "")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, copy)
    return copy


def _edit(root: Path, rel: str, kind: str, change: Callable[[dict[str, Any]], None]) -> None:
    path = root / rel
    bodies = [b for b in yaml.safe_load_all(path.read_text()) if b is not None]
    hits = [b for b in bodies if b.get("kind") == kind]
    assert hits, f"{rel} has no {kind}"
    change(hits[0])
    path.write_text(yaml.safe_dump_all(bodies, sort_keys=False))


def _container(body: dict[str, Any]) -> dict[str, Any]:
    return body["spec"]["template"]["spec"]["containers"][0]


def _replace(key: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        assert old in body["data"][key]
        body["data"][key] = body["data"][key].replace(old, new)

    return edit


def _system(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        raw = json.loads(body["data"]["system.json"])
        change(raw)
        body["data"]["system.json"] = json.dumps(raw)

    return edit


BROKEN: dict[str, tuple[str, str, Callable[[dict[str, Any]], None], list[str]]] = {
    # id: (file, kind, change, what the problem must name)
    "replicas-not-an-integer": (
        "system/21-bank-acme.yaml", "StatefulSet", lambda b: b["spec"].update(replicas="one"),
        ["system/21-bank-acme.yaml", "StatefulSet/acme", "spec.replicas"],
    ),
    "misspelt-container-field": (
        "system/30-toxiproxy.yaml", "Deployment", lambda b: _container(b).update(imagePulPolicy="Always"),
        ["system/30-toxiproxy.yaml", "Deployment/toxiproxy", "containers.0", "imagePulPolicy"],
    ),
    "pvc-without-size": (
        "system/20-switch.yaml", "StatefulSet",
        lambda b: b["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"].update(storage=[1]),
        ["system/20-switch.yaml", "volumeClaimTemplates.0.spec.resources.requests.storage"],
    ),
    "target-port-not-a-container-port": (
        "system/20-switch.yaml", "Service", lambda b: b["spec"]["ports"][0].update(targetPort="htp"),
        ["system/20-switch.yaml", "Service/switch", "spec.ports.0.targetPort", "'htp'"],
    ),
    "chaos-action-unknown": (
        "chaos/network-disconnect-beta.yaml", "NetworkChaos", lambda b: b["spec"].update(action="disconnect"),
        ["chaos/network-disconnect-beta.yaml", "NetworkChaos/disconnect-beta", "spec.action"],
    ),
    "chaos-delay-without-latency": (
        "chaos/network-delay-switch-to-beta.yaml", "NetworkChaos", lambda b: b["spec"]["delay"].pop("latency"),
        ["chaos/network-delay-switch-to-beta.yaml", "spec.delay", "'latency' is a required property"],
    ),
    "chaos-selects-nothing": (
        "chaos/network-disconnect-beta.yaml", "NetworkChaos",
        lambda b: b["spec"]["selector"]["labelSelectors"].update({"app.kubernetes.io/name": "bta"}),
        ["chaos/network-disconnect-beta.yaml", "spec.selector.labelSelectors", "selects no pod"],
    ),
    "podchaos-grace-negative": (
        "chaos/pod-kill-switch.yaml", "PodChaos", lambda b: b["spec"].update(gracePeriod=-1),
        ["chaos/pod-kill-switch.yaml", "PodChaos/kill-switch", "spec.gracePeriod"],
    ),
    "locusttest-no-workers": (
        "load/locusttest.yaml", "LocustTest", lambda b: b["spec"].update(workers=0),
        ["load/locusttest.yaml", "LocustTest/payswitch-load", "spec.workers"],
    ),
    "locusttest-unknown-field": (
        "load/locusttest.yaml", "LocustTest", lambda b: b["spec"].update(users=2),
        ["load/locusttest.yaml", "LocustTest/payswitch-load", "'users' was unexpected"],
    ),
    "locusttest-unknown-option": (
        "load/locusttest.yaml", "LocustTest", lambda b: b["spec"].update(args=b["spec"]["args"] + " --rat 50"),
        ["load/locusttest.yaml", "spec.args", "--rat"],
    ),
    "system-json-refused-by-the-mock": (
        "system/10-system-config.yaml", "ConfigMap", _system(lambda s: s["switch"].update(payee_timeout_s=5.0)),
        ["system/10-system-config.yaml", "ConfigMap/payswitch-system", "payee_timeout_s"],
    ),
    "system-json-dials-the-wrong-link": (
        "system/10-system-config.yaml", "ConfigMap",
        _system(lambda s: s["switch"]["bank_urls"].update(BETA="http://beta.payswitch.svc.cluster.local:8080")),
        ["system/10-system-config.yaml", "switch.bank_urls.BETA", "9115"],
    ),
    "proxy-listens-elsewhere": (
        "system/30-toxiproxy.yaml", "ConfigMap",
        _replace("toxiproxy.json", "0.0.0.0:9113", "0.0.0.0:9193"),
        ["system/30-toxiproxy.yaml", "data.toxiproxy.json", "customers__to__BETA"],
    ),
    "service-of-two-workloads": (
        "system/22-bank-beta.yaml", "Service",
        lambda b: b["spec"].update(selector={"app.kubernetes.io/component": "bank"}),
        ["system/22-bank-beta.yaml", "Service/beta", "spec.selector", "selects 3 workloads"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_manifest_is_caught(tree: Path, case: str) -> None:
    rel, kind, change, named = BROKEN[case]
    _edit(tree, rel, kind, change)
    problems = check_tree(tree)
    assert any(all(n in p for n in named) for p in problems), problems


def test_a_broken_target_file_is_caught(tree: Path) -> None:
    text = (tree / TARGET).read_text()
    (tree / TARGET).write_text(text.replace('"toxiproxy-links.payswitch.svc.cluster.local:9110"', '"toxiproxy-links"'))
    problems = check_tree(tree)
    assert any(TARGET in p and "links.customers->ACME.listen" in p and "HOST:PORT" in p for p in problems), problems


def test_a_target_dialling_a_port_no_service_has_is_caught(tree: Path) -> None:
    text = (tree / TARGET).read_text()
    (tree / TARGET).write_text(text.replace("cluster.local:9116", "cluster.local:9196"))
    problems = check_tree(tree)
    assert any(TARGET in p and "links.customers->CRED.listen" in p for p in problems), problems


def test_a_duplicate_key_is_caught(tree: Path) -> None:
    path = tree / "system/00-namespace.yaml"
    path.write_text(path.read_text().replace("  name: payswitch\n", "  name: payswitch\n  name: payswitch2\n"))
    problems = check_tree(tree)
    assert any("system/00-namespace.yaml" in p and "duplicate key 'name'" in p for p in problems), problems


def test_a_stray_yaml_is_caught(tree: Path) -> None:
    (tree / "notes.yaml").write_text("just: notes\n")
    assert any(p.startswith("notes.yaml: document 1 is not a Kubernetes object") for p in check_tree(tree))


def test_an_unknown_kind_is_caught(tree: Path) -> None:
    (tree / "chaos/stress.yaml").write_text(
        "apiVersion: chaos-mesh.org/v1alpha1\nkind: StressChaos\nmetadata: {name: s, namespace: payswitch}\n"
    )
    assert any("chaos/stress.yaml: StressChaos/s" in p and "no schema" in p for p in check_tree(tree))


@contextlib.contextmanager
def _toxiproxy(config: Path, port: int) -> Iterator[str]:
    binary = find_server()
    if binary is None:
        pytest.skip("toxiproxy-server is not installed (make tools)")
    proc = subprocess.Popen(
        [str(binary), "-host", "127.0.0.1", "-port", str(port), "-config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_toxiproxy_accepts_the_proxies_config(tmp_path: Path) -> None:
    """The real toxiproxy-server creates every proxy of toxiproxy.json at start (-config), with the
    listeners moved from 0.0.0.0 to free loopback ports: nothing binds outside loopback here."""
    problems: list[str] = []
    _, proxies = _configmap_json(read_manifests(K8S_DIR, problems), "toxiproxy-config", "toxiproxy.json", problems)
    assert problems == []
    for proxy in proxies:
        proxy["listen"] = f"127.0.0.1:{free_port()}"
    config = tmp_path / "toxiproxy.json"
    config.write_text(json.dumps(proxies))
    with _toxiproxy(config, free_port()) as api:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(api + "/proxies", timeout=2) as resp:
                    created = json.loads(resp.read())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    assert {n: (p["upstream"], p["enabled"]) for n, p in created.items()} == {
        p["name"]: (p["upstream"], True) for p in proxies
    }
