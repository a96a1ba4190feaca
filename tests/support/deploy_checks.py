"""Offline checks of the deploy files (k8s/, docker-compose.yml, deploy/haproxy.cfg).

No cluster and no Docker engine are needed: manifests are rendered by ``kubectl kustomize``,
validated against the Kubernetes OpenAPI schemas bundled by ``kubernetes-validate``
(strict: unknown fields fail), custom resources against the small schemas in
``tests/support/schemas/``, the compose file against the compose specification, the HAProxy
configuration by ``haproxy -c``, and all of them against the code (routes, ports, settings,
metrics, the Dockerfile's user). Every check returns a list of problems: empty is a pass.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

KUSTOMIZATIONS = ("base", "overlays/hpa", "overlays/keda", "kserve")
"""Every kustomization a user applies on its own (relative to k8s/)."""
AUTOSCALING_OVERLAYS = ("overlays/hpa", "overlays/keda")

TRAINING = "training"
"""The multi-worker training Job (relative to k8s/), applied on its own beside a serving
overlay with the pvc-model-store component; not one of KUSTOMIZATIONS (no server in it)."""
MODEL_STORE_COMPONENT = "components/pvc-model-store"

MIN_KUBERNETES = "1.27"
"""PodDisruptionBudget.unhealthyPodEvictionPolicy is beta and on by default from 1.27."""

TERMINATION_MARGIN_S = 5
"""Least time left, after the preStop sleep and the drain bound, to close the model."""

Doc = dict[str, Any]


class ToolMissing(RuntimeError):
    """A command-line tool the checks need is not installed."""


class RenderError(RuntimeError):
    """kustomize refused to render a kustomization."""


# ---------------------------------------------------------------------------- rendering


def require(tool: str, how: str) -> str:
    """The path of ``tool``, or ToolMissing saying how to get it."""
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(f"{tool} is not installed: {how}")
    return path


KUBECTL_HINT = (
    "install kubectl (it embeds kustomize), e.g. `apt-get install kubectl` from the "
    "Kubernetes apt repository or https://kubernetes.io/docs/tasks/tools/"
)
HAPROXY_HINT = "install it with `apt-get update && apt-get install -y haproxy` (.ci/run does)"


def render(directory: Path) -> list[Doc]:
    """``kubectl kustomize directory``, parsed; RenderError (with kustomize's message) when
    it cannot be rendered."""
    kubectl = require("kubectl", KUBECTL_HINT)
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_all(k8s: Path = K8S) -> dict[str, list[Doc]]:
    """Every kustomization in KUSTOMIZATIONS, rendered."""
    return {name: render(k8s / name) for name in KUSTOMIZATIONS}


def kubernetes_versions() -> tuple[str, str]:
    """The minimum version the manifests need and the newest kubernetes-validate bundles."""
    return MIN_KUBERNETES, kv_utils.major_minor(kv_utils.latest_version())


def of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc.get("kind") == kind]


def where(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# ------------------------------------------------------------------ schema validation

CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.yaml",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice.yaml",
}


def kubernetes_schema_problems(docs: Iterable[Doc], version: str) -> list[str]:
    """Built-in kinds against Kubernetes ``version``'s schema, strict (unknown fields fail);
    kinds with a schema of ours are left to ``custom_resource_problems``; any other kind is
    a problem (nothing may go unchecked)."""
    problems = []
    for doc in docs:
        if (doc.get("apiVersion"), doc.get("kind")) in CUSTOM_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            problems.append(f"{where(doc)} (Kubernetes {version}): {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{where(doc)}: {exc.message}")
    return problems


@functools.cache
def schema_registry() -> Registry[Any]:
    """Our schemas by their ``$id`` (their file names), so they can refer to each other."""
    registry: Registry[Any] = Registry()
    for path in sorted(SCHEMAS.glob("*.yaml")):
        schema = yaml.safe_load(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        registry = registry.with_resource(path.name, Resource.from_contents(schema))
    return registry


def custom_validator(name: str) -> jsonschema.Draft202012Validator:
    registry = schema_registry()
    return jsonschema.Draft202012Validator(registry[name].contents, registry=registry)


def custom_resource_problems(docs: Iterable[Doc], version: str) -> list[str]:
    """ScaledObject and InferenceService against our schemas (the fields we use, nothing
    else); the pod spec an InferenceService embeds against Kubernetes ``version``'s Pod."""
    problems = []
    for doc in docs:
        name = CUSTOM_SCHEMAS.get((str(doc.get("apiVersion")), str(doc.get("kind"))))
        if name is None:
            continue
        validator = custom_validator(name)
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
            path = ".".join(str(part) for part in error.path)
            problems.append(f"{where(doc)}: {path}: {error.message}")
        if doc.get("kind") == "InferenceService":
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "predictor"},
                "spec": predictor_pod_spec(doc),
            }
            problems += [
                f"{where(doc)} spec.predictor as a pod spec: {p.split(': ', 1)[1]}"
                for p in kubernetes_schema_problems([pod], version)
            ]
    return problems


PREDICTOR_ONLY_FIELDS = frozenset({"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget"})
"""InferenceService predictor fields that are KServe's own; the rest is a Kubernetes pod spec."""


def predictor_pod_spec(doc: Doc) -> Doc:
    predictor: Doc = doc.get("spec", {}).get("predictor", {})
    return {k: v for k, v in predictor.items() if k not in PREDICTOR_ONLY_FIELDS}


# ----------------------------------------------------------------- facts from the code


@functools.cache
def setting_env_names() -> frozenset[str]:
    """``MMSERVE_*`` names of every Settings field (read from the class, so new fields
    count as soon as they exist)."""
    from service.serving.settings import Settings

    prefix = str(Settings.model_config.get("env_prefix", ""))
    return frozenset(f"{prefix}{name}".upper() for name in Settings.model_fields)


@functools.cache
def is_get_route(path: str) -> bool:
    """Whether the application answers GET on ``path`` (matched by its own router, so
    routes left out of the OpenAPI schema count; building the app loads no model)."""
    from starlette.routing import Match

    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] == Match.FULL for route in app_routes())


@functools.cache
def app_routes() -> tuple[Any, ...]:
    from service.serving.app import create_app

    return tuple(create_app().router.routes)


METRIC_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created", ""),
    "info": ("_info",),
}


@functools.cache
def exported_metrics() -> frozenset[str]:
    """Every sample name ``GET /metrics`` can carry for the service's own metrics."""
    from prometheus_client.metrics import MetricWrapperBase

    from service.serving import metrics

    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names |= {family.name + s for s in METRIC_SUFFIXES[family.type]}
    return frozenset(names)


def dockerfile() -> str:
    """The Dockerfile with continuation lines joined."""
    return re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())


def dockerfile_uid() -> int:
    (uid,) = re.findall(r"useradd\b[^\n]*--uid (\d+)", dockerfile())
    return int(uid)


def dockerfile_env(name: str) -> str:
    (value,) = re.findall(rf"\b{name}=(\S+)", dockerfile())
    return str(value)


def settings_default(field: str) -> Any:
    from service.serving.settings import Settings

    return Settings.model_fields[field].default


# --------------------------------------------------------------- manifest cross-checks


def pod_specs(docs: Iterable[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(owner, pod spec) for every Deployment and InferenceService predictor."""
    for doc in docs:
        if doc.get("kind") == "Deployment":
            yield doc, doc["spec"]["template"]["spec"]
        elif doc.get("kind") == "InferenceService":
            yield doc, doc["spec"]["predictor"]


def server_container(pod: Doc) -> Doc | None:
    """The container running the mmserve image."""
    for container in pod.get("containers", []):
        if str(container.get("image", "")).split(":")[0].rsplit("/", 1)[-1] == "mmserve":
            found: Doc = container
            return found
    return None


def container_env(container: Doc, docs: list[Doc]) -> dict[str, str | None]:
    """The container's environment as the kubelet builds it; values from the downward API
    are None (known only on the node)."""
    maps = {doc["metadata"]["name"]: doc.get("data", {}) for doc in of_kind(docs, "ConfigMap")}
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is not None:
            env.update(maps.get(ref["name"], {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = maps.get(ref["name"], {}).get(ref["key"])
        else:
            env[item["name"]] = None
    return env


def named_port(container: Doc, port: Any) -> int | None:
    """A probe's or Service's port (a number or a port name) as the container's number."""
    if isinstance(port, int):
        return port
    for item in container.get("ports", []):
        if item.get("name") == port:
            return int(item["containerPort"])
    return None


def prestop_seconds(container: Doc) -> float | None:
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0] == "sleep":
        return float(command[1])
    return None


def probe_problems(owner: str, container: Doc, port: int) -> list[str]:
    problems = []
    paths = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container.get(probe, {}).get("httpGet")
        if get is None:
            problems.append(f"{owner}: no HTTP {probe}")
            continue
        paths[probe] = get.get("path")
        if not is_get_route(str(get.get("path"))):
            problems.append(f"{owner}: {probe} path {get.get('path')!r} is not a GET route")
        if named_port(container, get.get("port")) != port:
            problems.append(f"{owner}: {probe} port {get.get('port')!r} is not {port}")
    ready = {paths.get("startupProbe"), paths.get("readinessProbe")}
    if paths.get("livenessProbe") in ready:
        problems.append(
            f"{owner}: livenessProbe uses the readiness path, which turns 503 during a drain"
        )
    return problems


def security_problems(owner: str, pod: Doc, container: Doc) -> list[str]:
    problems = []
    uid = dockerfile_uid()
    pod_ctx, ctx = pod.get("securityContext", {}), container.get("securityContext", {})
    run_as = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    if run_as != uid:
        problems.append(f"{owner}: runAsUser {run_as} is not the Dockerfile's uid {uid}")
    if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
        problems.append(f"{owner}: runAsNonRoot is not set")
    seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
    if seccomp.get("type") != "RuntimeDefault":
        problems.append(f"{owner}: seccompProfile is not RuntimeDefault")
    if ctx.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{owner}: the root filesystem is not read-only")
    if ctx.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{owner}: allowPrivilegeEscalation is not false")
    if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append(f"{owner}: capabilities are not all dropped")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tmp = [m for m in container.get("volumeMounts", []) if m.get("mountPath") == "/tmp"]
    if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}) or tmp[0].get("readOnly"):
        problems.append(f"{owner}: no writable emptyDir at /tmp")
    return problems


THREAD_SETTINGS = {
    "MMSERVE_DECODE_THREADS": "2",
    "MMSERVE_INTRA_OP_THREADS": "1",
    "MMSERVE_INTER_OP_THREADS": "1",
}
"""Per worker process: one TensorFlow thread, since the workers already fill the requested
cores, and two decode threads, which measured best per worker on a 2-core machine."""


def resource_problems(owner: str, container: Doc) -> list[str]:
    problems = []
    resources_ = container.get("resources", {})
    if "cpu" not in resources_.get("requests", {}):
        problems.append(f"{owner}: no CPU request")
    if "cpu" in resources_.get("limits", {}):
        problems.append(f"{owner}: a CPU limit (throttles a latency-bound server)")
    by_name = {item["name"]: item for item in container.get("env", [])}
    ref = by_name.get("MMSERVE_WORKERS", {}).get("valueFrom", {}).get("resourceFieldRef", {})
    if ref.get("resource") != "requests.cpu" or ref.get("containerName") not in (
        None,
        container["name"],
    ):
        problems.append(f"{owner}: MMSERVE_WORKERS is not taken from the CPU request")
    for name, value in THREAD_SETTINGS.items():
        if by_name.get(name, {}).get("value") != value:
            problems.append(f"{owner}: {name} is not {value} (per worker process)")
    return problems


def settings_problems(owner: str, env: dict[str, str | None]) -> list[str]:
    """MMSERVE_* names must be settings, and their values valid settings."""
    from pydantic import ValidationError

    from service.serving.settings import Settings

    known = setting_env_names()
    problems = [
        f"{owner}: {name} is not a setting"
        for name in sorted(env)
        if name.startswith("MMSERVE_") and name not in known
    ]
    values = {
        name.removeprefix("MMSERVE_").lower(): value
        for name, value in env.items()
        if name in known and value is not None
    }
    try:
        Settings.model_validate(values)  # the values alone: no environment, no .env
    except ValidationError as exc:
        problems.append(f"{owner}: invalid settings: {exc}")
    return problems


def grace_problems(owner: str, pod: Doc, container: Doc, env: dict[str, str | None]) -> list[str]:
    pre_stop = prestop_seconds(container)
    if pre_stop is None:
        return [f"{owner}: no preStop sleep (the pod would drain before leaving the endpoints)"]
    drain = float(env.get("MMSERVE_SHUTDOWN_TIMEOUT_S") or settings_default("shutdown_timeout_s"))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < pre_stop + drain + TERMINATION_MARGIN_S:
        return [
            f"{owner}: terminationGracePeriodSeconds {grace} < preStop {pre_stop:g} + drain "
            f"{drain:g} + margin {TERMINATION_MARGIN_S}"
        ]
    return []


def workload_problems(docs: list[Doc]) -> list[str]:
    """Per pod spec: probes, ports, settings, grace period, security, resources."""
    problems = []
    for owner_doc, pod in pod_specs(docs):
        owner = where(owner_doc)
        container = server_container(pod)
        if container is None:
            problems.append(f"{owner}: no container runs the mmserve image")
            continue
        env = container_env(container, docs)
        port = int(env.get("MMSERVE_PORT") or settings_default("port"))
        declared = [int(p["containerPort"]) for p in container.get("ports", [])]
        if declared != [port]:
            problems.append(f"{owner}: container ports {declared} are not [{port}] (MMSERVE_PORT)")
        problems += probe_problems(owner, container, port)
        problems += settings_problems(owner, env)
        problems += grace_problems(owner, pod, container, env)
        problems += security_problems(owner, pod, container)
        problems += resource_problems(owner, container)
        problems += scrape_problems(owner_doc, port)
    return problems


def scrape_problems(owner_doc: Doc, port: int) -> list[str]:
    if owner_doc["kind"] == "Deployment":
        annotations = owner_doc["spec"]["template"]["metadata"].get("annotations", {})
        keys = ("prometheus.io/port", "prometheus.io/path")
    else:
        annotations = owner_doc["metadata"].get("annotations", {})
        keys = ("prometheus.kserve.io/port", "prometheus.kserve.io/path")
    owner = where(owner_doc)
    problems = []
    if annotations.get(keys[0]) != str(port):
        problems.append(f"{owner}: {keys[0]} is {annotations.get(keys[0])!r}, not {port}")
    if not is_get_route(str(annotations.get(keys[1]))):
        problems.append(f"{owner}: {keys[1]} {annotations.get(keys[1])!r} is not a GET route")
    return problems


def service_problems(docs: list[Doc]) -> list[str]:
    """Each Service selects the server pods and targets the server's port."""
    problems = []
    deployments = of_kind(docs, "Deployment")
    for service in of_kind(docs, "Service"):
        selector = service["spec"].get("selector", {})
        matched = [
            d
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        if len(matched) != 1:
            problems.append(f"{where(service)}: selects {len(matched)} Deployments, not 1")
            continue
        container = server_container(matched[0]["spec"]["template"]["spec"])
        assert container is not None
        wanted = int(container_env(container, docs).get("MMSERVE_PORT") or 0)
        for item in service["spec"]["ports"]:
            if named_port(container, item.get("targetPort", item["port"])) != wanted:
                problems.append(f"{where(service)}: port {item} does not reach port {wanted}")
    return problems


def rollout_problems(docs: list[Doc]) -> list[str]:
    """The rollout and disruption rules (values no schema can require)."""
    problems = []
    for deployment in of_kind(docs, "Deployment"):
        rolling = deployment["spec"].get("strategy", {}).get("rollingUpdate", {})
        if (rolling.get("maxSurge"), rolling.get("maxUnavailable")) != (1, 0):
            problems.append(
                f"{where(deployment)}: rolling update is not maxSurge 1, maxUnavailable 0"
            )
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        spec = pdb["spec"]
        if (spec.get("maxUnavailable"), spec.get("unhealthyPodEvictionPolicy")) != (
            1,
            "AlwaysAllow",
        ):
            problems.append(f"{where(pdb)}: not maxUnavailable 1 with AlwaysAllow")
    return problems


METRIC_NAME = re.compile(r"\bmmserve_[a-zA-Z0-9_]+")


def keda_problems(docs: list[Doc]) -> list[str]:
    """KEDA's Prometheus queries name metrics the service exports, and the fallback can work
    (KEDA applies it only to AverageValue triggers)."""
    problems = []
    exported = exported_metrics()
    for scaled in of_kind(docs, "ScaledObject"):
        for trigger in scaled["spec"].get("triggers", []):
            if trigger.get("type") != "prometheus":
                continue
            query = str(trigger.get("metadata", {}).get("query", ""))
            names = set(METRIC_NAME.findall(query))
            if not names:
                problems.append(f"{where(scaled)}: the query names no mmserve metric: {query}")
            for name in sorted(names - exported):
                problems.append(f"{where(scaled)}: the query's metric {name} is not exported")
            if "fallback" in scaled["spec"] and trigger.get("metricType") != "AverageValue":
                problems.append(f"{where(scaled)}: fallback needs metricType AverageValue")
    return problems


def target_problems(docs: list[Doc]) -> list[str]:
    """Autoscalers target a Deployment of the same render, which leaves them the replica
    count."""
    problems = []
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    for scaler in autoscalers(docs):
        target = scaler["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            problems.append(f"{where(scaler)}: targets {target}, not a Deployment here")
        elif "replicas" in deployments[target]["spec"]:
            problems.append(f"{where(scaler)}: the Deployment still sets replicas")
    return problems


def autoscalers(docs: Iterable[Doc]) -> list[Doc]:
    return [d for d in docs if d.get("kind") in ("HorizontalPodAutoscaler", "ScaledObject")]


def hpa_name(scaler: Doc) -> str:
    """The HPA object an autoscaler owns in the cluster (KEDA makes one for a ScaledObject)."""
    if scaler["kind"] == "HorizontalPodAutoscaler":
        return str(scaler["metadata"]["name"])
    config = scaler["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
    return str(config.get("name", f"keda-hpa-{scaler['metadata']['name']}"))


def exclusivity_problems(rendered: dict[str, list[Doc]]) -> list[str]:
    """HPA and KEDA never together: no render holds more than one autoscaler per workload,
    the base none, and both overlays own the same HPA object (the KEDA one adopting the
    plain one), so the cluster can only ever hold one."""
    problems = []
    for name, docs in rendered.items():
        targets = [s["spec"]["scaleTargetRef"]["name"] for s in autoscalers(docs)]
        if name == "base" and targets:
            problems.append("base: holds an autoscaler; they belong in one overlay each")
        for target in sorted(set(targets)):
            if targets.count(target) > 1:
                problems.append(f"{name}: {targets.count(target)} autoscalers for {target}")
    owned = {
        name: [hpa_name(s) for s in autoscalers(rendered[name])] for name in AUTOSCALING_OVERLAYS
    }
    if any(len(v) != 1 for v in owned.values()) or len({v[0] for v in owned.values()}) != 1:
        problems.append(f"the autoscaling overlays do not own one same HPA: {owned}")
    for scaled in of_kind(rendered["overlays/keda"], "ScaledObject"):
        annotations = scaled["metadata"].get("annotations", {})
        if annotations.get("scaledobject.keda.sh/transfer-hpa-ownership") != "true":
            problems.append(f"{where(scaled)}: does not adopt the HPA overlays/hpa makes")
    return problems


def manifest_problems(rendered: dict[str, list[Doc]]) -> list[str]:
    """Every cross-check of the rendered manifests with the code and the issue's rules."""
    problems = []
    for name, docs in rendered.items():
        for check in (
            workload_problems,
            service_problems,
            rollout_problems,
            keda_problems,
            target_problems,
        ):
            problems += [f"{name}: {p}" for p in check(docs)]
    return problems + exclusivity_problems(rendered)


# -------------------------------------------------------------- the training Job


def trainer_container(pod: Doc) -> Doc | None:
    """The container running the mmserve-train image."""
    for container in pod.get("containers", []):
        if str(container.get("image", "")).split(":")[0].rsplit("/", 1)[-1] == "mmserve-train":
            found: Doc = container
            return found
    return None


def serving_claim(k8s: Path = K8S) -> Doc:
    """The PersistentVolumeClaim the hot-reload servers mount (the model store)."""
    docs = [d for d in yaml.safe_load_all((k8s / MODEL_STORE_COMPONENT / "pvc.yaml").read_text())]
    (claim,) = of_kind(docs, "PersistentVolumeClaim")
    return claim


def served_model_name(k8s: Path = K8S) -> str:
    """MMSERVE_MODEL_NAME in base/model.env: the model the servers serve."""
    for line in (k8s / "base" / "model.env").read_text().splitlines():
        if line.startswith("MMSERVE_MODEL_NAME="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("base/model.env names no MMSERVE_MODEL_NAME")


def trainer_args(container: Doc) -> Any:
    """The container's command line parsed by the trainer's own parser (None: refused)."""
    import contextlib
    import io

    from service.training.cli import build_parser

    command = [*container.get("command", []), *container.get("args", [])]
    if command[:1] != ["mmserve-train"]:
        return None
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return build_parser().parse_args([str(a) for a in command[1:]])
    except SystemExit:
        return None


def training_problems(docs: list[Doc], claim: Doc, model_name: str) -> list[str]:
    """The Indexed Job, its headless Service and the trainer's command line agree: N pods
    at once, each finding the others by name, one model store shared with the servers."""
    jobs = of_kind(docs, "Job")
    if len(jobs) != 1:
        return [f"{len(jobs)} Jobs, expected one"]
    (job,) = jobs
    owner, spec = where(job), job["spec"]
    pod = spec["template"]["spec"]
    problems = []
    if spec.get("completionMode") != "Indexed":
        problems.append(f"{owner}: completionMode is not Indexed (no JOB_COMPLETION_INDEX)")
    workers = spec.get("completions")
    if spec.get("parallelism") != workers:
        problems.append(
            f"{owner}: parallelism {spec.get('parallelism')} is not completions {workers}: "
            "every worker must run at once"
        )
    if pod.get("restartPolicy") != "Never" or spec.get("backoffLimit") != 0:
        problems.append(f"{owner}: a failed worker is retried, but cannot rejoin the run")
    if not spec.get("activeDeadlineSeconds"):
        problems.append(f"{owner}: no activeDeadlineSeconds (a worker waits for the others)")
    container = trainer_container(pod)
    if container is None:
        return [*problems, f"{owner}: no container runs the mmserve-train image"]
    args = trainer_args(container)
    if args is None:
        return [*problems, f"{owner}: the command is not a valid mmserve-train command line"]
    if args.distribute != "multiworker":
        problems.append(f"{owner}: --distribute is {args.distribute}, not multiworker")
    if args.workers != workers:
        problems.append(f"{owner}: --workers {args.workers} is not completions {workers}")
    ports = {int(p["containerPort"]) for p in container.get("ports", [])}
    subdomain = pod.get("subdomain")
    services = [s for s in of_kind(docs, "Service") if s["metadata"]["name"] == subdomain]
    if not services:
        problems.append(f"{owner}: subdomain {subdomain!r} is no Service: no worker DNS names")
    else:
        (service,) = services
        svc = service["spec"]
        if svc.get("clusterIP") != "None":
            problems.append(f"{where(service)}: not headless (clusterIP: None)")
        labels = spec["template"]["metadata"].get("labels", {})
        if not svc.get("selector") or any(
            labels.get(k) != v for k, v in svc.get("selector", {}).items()
        ):
            problems.append(f"{where(service)}: its selector does not select the workers")
        for port in svc.get("ports", []):
            if named_port(container, port.get("targetPort", port["port"])) not in ports:
                problems.append(f"{where(service)}: port {port['port']} is no worker port")
        address = str(args.worker_address)
        host, _, port = address.rpartition(":")
        if host != f"{job['metadata']['name']}-{{index}}.{subdomain}":
            problems.append(
                f"{owner}: --worker-address {address!r} is not "
                f"{job['metadata']['name']}-{{index}}.{subdomain}:PORT (the pods' DNS names)"
            )
        if not port.isdigit() or int(port) not in ports:
            problems.append(f"{owner}: --worker-address port {port} is not a container port")
    problems += model_store_problems(owner, pod, container, args, claim)
    name = args.name or ("demo" if args.demo else None)
    if name != model_name:
        problems.append(f"{owner}: publishes {name!r}; the servers serve {model_name!r}")
    problems += security_problems(owner, pod, container)
    resources_ = container.get("resources", {})
    if "cpu" not in resources_.get("requests", {}) or "cpu" in resources_.get("limits", {}):
        problems.append(f"{owner}: no CPU request, or a CPU limit (every step waits for all)")
    return problems


def model_store_problems(owner: str, pod: Doc, container: Doc, args: Any, claim: Doc) -> list[str]:
    """--model-store is a writable mount of the claim the servers read."""
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    mount = mounts.get(str(args.model_store))
    if mount is None:
        return [f"{owner}: --model-store {args.model_store} is not a mounted volume"]
    volume = next((v for v in pod.get("volumes", []) if v["name"] == mount["name"]), {})
    pvc = volume.get("persistentVolumeClaim", {})
    problems = []
    if pvc.get("claimName") != claim["metadata"]["name"]:
        problems.append(
            f"{owner}: --model-store is not the servers' claim {claim['metadata']['name']}"
        )
    if mount.get("readOnly") or pvc.get("readOnly"):
        problems.append(f"{owner}: the model store is mounted read-only")
    if "ReadWriteMany" not in claim["spec"].get("accessModes", []):
        problems.append(f"{where(claim)}: not ReadWriteMany: the trainer cannot write it")
    return problems


def training_manifest_problems(k8s: Path = K8S) -> list[str]:
    """k8s/training rendered, against the schemas of both versions, and cross-checked."""
    docs = render(k8s / TRAINING)
    problems = []
    for version in kubernetes_versions():
        problems += kubernetes_schema_problems(docs, version)
    problems += training_problems(docs, serving_claim(k8s), served_model_name(k8s))
    return [f"{TRAINING}: {p}" for p in problems]


# ------------------------------------------------------------------- compose and haproxy


def load_compose(path: Path = ROOT / "docker-compose.yml") -> Doc:
    data: Doc = yaml.safe_load(path.read_text())
    return data


@functools.cache
def compose_schema() -> Doc:
    """The compose specification's schema, as vendored by check-jsonschema."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: Doc = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return schema


SCALE_SERVICE, BALANCER = "replica", "lb"


def compose_problems(compose: Doc) -> list[str]:
    """The compose file against the compose specification, plus what a schema can't say."""
    validator = jsonschema.Draft202012Validator(compose_schema())
    problems = [
        f"compose: {'.'.join(str(p) for p in e.path)}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    services = compose.get("services", {})
    replica, balancer = services.get(SCALE_SERVICE, {}), services.get(BALANCER, {})
    replicas = replica.get("deploy", {}).get("replicas")
    if type(replicas) is not int or replicas < 2:
        problems.append(f"compose: {SCALE_SERVICE} replicas {replicas!r} is not an int >= 2")
    if replica.get("ports"):
        problems.append(f"compose: {SCALE_SERVICE} publishes a host port (replicas would clash)")
    condition = balancer.get("depends_on", {})
    if (
        not isinstance(condition, dict)
        or condition.get(SCALE_SERVICE, {}).get("condition") != "service_healthy"
    ):
        problems.append(f"compose: {BALANCER} does not wait for {SCALE_SERVICE} service_healthy")
    if "scale" not in replica.get("profiles", []) or "scale" not in balancer.get("profiles", []):
        problems.append(f"compose: {SCALE_SERVICE} and {BALANCER} are not in the scale profile")
    if replica.get("healthcheck") != services.get("api", {}).get("healthcheck"):
        problems.append(f"compose: {SCALE_SERVICE} health check differs from api's")
    for name, service in services.items():
        environment = service.get("environment", {})
        names = (
            environment
            if isinstance(environment, dict)
            else [item.split("=", 1)[0] for item in environment]
        )
        problems += [
            f"compose: {name}: {env} is not a setting"
            for env in names
            if env.startswith("MMSERVE_") and env not in setting_env_names()
        ]
    drain = float(settings_default("shutdown_timeout_s"))
    if stop_grace_seconds(replica) < drain + TERMINATION_MARGIN_S:
        problems.append(f"compose: {SCALE_SERVICE} stop_grace_period is shorter than the drain")
    return problems


def stop_grace_seconds(service: Doc) -> float:
    """compose's stop_grace_period (default 10 s) in seconds."""
    text = str(service.get("stop_grace_period", "10s"))
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|s|m|h)", text))


HAPROXY_CONFIG = ROOT / "deploy" / "haproxy.cfg"


def haproxy_check(config: Path) -> list[str]:
    """``haproxy -c``: the configuration as HAProxy itself parses it."""
    haproxy = require("haproxy", HAPROXY_HINT)
    result = subprocess.run(
        [haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0:
        return [f"haproxy -c {config.name}: {result.stdout}{result.stderr}".strip()]
    return []


def haproxy_directives(text: str) -> list[list[str]]:
    """Each configuration line, split into words, comments dropped."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [shlex.split(line) for line in lines if line]


def haproxy_problems(text: str, compose: Doc) -> list[str]:
    """The balancer's configuration against the code and the compose file."""
    problems = []
    lines = haproxy_directives(text)
    first = {words[0]: words for words in reversed(lines)}
    check = [w for w in lines if w[:2] == ["http-check", "send"]]
    uri = check[0][check[0].index("uri") + 1] if check and "uri" in check[0] else None
    if not is_get_route(str(uri)) or not str(uri).endswith("/ready"):
        problems.append(f"haproxy: health check uri {uri!r} is not a readiness route")
    if first.get("balance") != ["balance", "leastconn"]:
        problems.append("haproxy: balance is not leastconn")
    templates = [w for w in lines if w[0] == "server-template"]
    image_port = dockerfile_env("MMSERVE_PORT")
    replica = compose.get("services", {}).get(SCALE_SERVICE, {})
    for words in templates:
        host, _, port = words[3].rpartition(":")
        if port != image_port:
            problems.append(f"haproxy: servers on port {port}, the image serves {image_port}")
        if host != SCALE_SERVICE:
            problems.append(f"haproxy: servers resolve {host!r}, not the {SCALE_SERVICE} service")
        if int(words[2]) < int(replica.get("deploy", {}).get("replicas", 0)):
            problems.append("haproxy: fewer server slots than compose replicas")
    if not templates:
        problems.append("haproxy: no server-template for the replicas")
    problems += rotation_problems(lines)
    timeout = next((w for w in lines if w[:2] == ["timeout", "server"]), None)
    deadline = float(settings_default("request_timeout_s"))
    if timeout is None or haproxy_seconds(timeout[2]) <= deadline:
        problems.append(f"haproxy: timeout server is not longer than the {deadline:g} s deadline")
    bind = first.get("bind", ["bind", ""])[1].rpartition(":")[2]
    published = [str(p).rpartition(":")[2] for p in compose["services"][BALANCER]["ports"]]
    if bind not in published:
        problems.append(f"haproxy: binds port {bind}, compose publishes {published}")
    return problems


LEAVE_ROTATION_S = 2.0
"""Longest a draining replica may stay in the balancer's rotation (the issue's ~2 s)."""


def rotation_problems(lines: list[list[str]]) -> list[str]:
    """Health checks take a failing replica out within LEAVE_ROTATION_S: the first failed
    check comes within ``inter``, the next ``fall - 1`` every ``fastinter``."""
    options = next((w for w in lines if w[0] == "default-server"), [])
    if "check" not in options:
        return ["haproxy: servers are not health-checked"]

    def value(name: str, default: str) -> str:
        return options[options.index(name) + 1] if name in options else default

    inter = haproxy_seconds(value("inter", "2s"))
    fastinter = haproxy_seconds(value("fastinter", value("inter", "2s")))
    bound = inter + (int(value("fall", "3")) - 1) * fastinter
    if bound > LEAVE_ROTATION_S:
        return [f"haproxy: a failing replica stays in rotation up to {bound:g} s"]
    return []


def haproxy_seconds(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h|d)?", value).groups()  # type: ignore[union-attr]
    scale = {"us": 1e-6, "ms": 1e-3, None: 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(number) * scale[unit]


# ------------------------------------------------------------------------- everything


def k8s_problems(k8s: Path = K8S) -> list[str]:
    """Every offline check of a k8s/ tree: render, schemas at the minimum and the newest
    Kubernetes version, custom resources, cross-checks."""
    rendered = render_all(k8s)
    problems = []
    for version in kubernetes_versions():
        for name, docs in rendered.items():
            problems += [f"{name}: {p}" for p in kubernetes_schema_problems(docs, version)]
            problems += [f"{name}: {p}" for p in custom_resource_problems(docs, version)]
    return problems + manifest_problems(rendered)


def all_static_problems() -> list[str]:
    """Every offline check of the committed deploy files: what the suite requires empty."""
    compose = load_compose()
    return [
        *k8s_problems(),
        *training_manifest_problems(),
        *compose_problems(compose),
        *haproxy_check(HAPROXY_CONFIG),
        *haproxy_problems(HAPROXY_CONFIG.read_text(), compose),
    ]


def mutated(docs: list[Doc], kind: str, change: Any) -> list[Doc]:
    """A deep copy of ``docs`` where ``change`` edited the first document of ``kind``."""
    copied = copy.deepcopy(docs)
    change(of_kind(copied, kind)[0])
    return copied
