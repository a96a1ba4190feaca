"""Each check has teeth: a deliberately broken deploy file makes it report the fault.

File edits go through the whole pipeline (kustomize render, schemas, cross-checks) on a copy
of k8s/; the other faults are applied to the rendered documents or the parsed files.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import deploy_checks as checks

Doc = dict[str, Any]


def broken_k8s(tmp_path: Path, file: str, pattern: str, replacement: str) -> Path:
    k8s = tmp_path / "k8s"
    shutil.copytree(checks.K8S, k8s, ignore=shutil.ignore_patterns("training"))
    path = k8s / file
    text, count = re.subn(pattern, replacement, path.read_text(), count=1, flags=re.MULTILINE)
    assert count == 1, f"{pattern!r} not in {file}"
    path.write_text(text)
    return k8s


FILE_FAULTS = {
    "unknown field": (
        "base/deployment.yaml",
        r"^(\s+)automountServiceAccountToken: false$",
        r"\g<0>\n\1restartPolicyy: Always",
        "'restartPolicyy' was unexpected",
    ),
    "wrong type": (
        "base/deployment.yaml",
        r"^  replicas: 2$",
        '  replicas: "2"',
        "'2' is not of type 'integer'",
    ),
    "metric that does not exist": (
        "overlays/keda/scaledobject.yaml",
        r"mmserve_requests_in_flight",
        "mmserve_requests_inflight",
        "metric mmserve_requests_inflight is not exported",
    ),
    "probe path that is not a route": (
        "base/deployment.yaml",
        r"(readinessProbe:\n\s+httpGet:\n\s+path: )/health/ready",
        r"\1/healthz",
        "readinessProbe path '/healthz' is not a GET route",
    ),
    "custom resource unknown field": (
        "overlays/keda/scaledobject.yaml",
        r"^  pollingInterval: 15$",
        "  pollingIntervall: 15",
        "'pollingIntervall' was unexpected",
    ),
    "trigger metadata that is not a string": (
        "overlays/keda/scaledobject.yaml",
        r'threshold: "8"',
        "threshold: 8",
        "8 is not of type 'string'",
    ),
    "KServe predictor field": (
        "kserve/inferenceservice.yaml",
        r"^    minReplicas: 2$",
        "    minReplica: 2",
        "'minReplica' was unexpected",
    ),
    "KServe pod spec field": (
        "kserve/inferenceservice.yaml",
        r"^(\s+)readOnlyRootFilesystem: true$",
        r"\1readOnlyRootFileSystem: true",
        "'readOnlyRootFileSystem' was unexpected",
    ),
}


@pytest.mark.parametrize("fault", FILE_FAULTS)
def test_a_broken_manifest_file_fails_the_checks(fault: str, tmp_path: Path) -> None:
    file, pattern, replacement, expected = FILE_FAULTS[fault]
    problems = checks.k8s_problems(broken_k8s(tmp_path, file, pattern, replacement))
    assert any(expected in p for p in problems), problems


def test_a_manifest_kustomize_cannot_render_fails(tmp_path: Path) -> None:
    k8s = broken_k8s(tmp_path, "base/kustomization.yaml", r"  - pdb.yaml\n", "  - pbd.yaml\n")
    with pytest.raises(checks.RenderError, match=r"pbd\.yaml"):
        checks.k8s_problems(k8s)


def container(docs: list[Doc]) -> Doc:
    (deployment,) = checks.of_kind(docs, "Deployment")
    found = checks.server_container(deployment["spec"]["template"]["spec"])
    assert found is not None
    return found


def pod(docs: list[Doc]) -> Doc:
    (deployment,) = checks.of_kind(docs, "Deployment")
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


def set_env(docs: list[Doc], name: str, value: str) -> None:
    env = container(docs).setdefault("env", [])
    env[:] = [e for e in env if e["name"] != name] + [{"name": name, "value": value}]


def configmap(docs: list[Doc]) -> Doc:
    data: Doc = next(
        d for d in checks.of_kind(docs, "ConfigMap") if "MMSERVE_PORT" in d.get("data", {})
    )["data"]
    return data


RENDERED_FAULTS: dict[str, tuple[Callable[[list[Doc]], Any], str]] = {
    "liveness on the readiness path": (
        lambda d: container(d)["livenessProbe"]["httpGet"].update(path="/health/ready"),
        "livenessProbe uses the readiness path",
    ),
    "grace period shorter than the drain": (
        lambda d: pod(d).update(terminationGracePeriodSeconds=30),
        "terminationGracePeriodSeconds 30 < preStop 5 + drain 30 + margin 5",
    ),
    "longer drain without a longer grace period": (
        lambda d: configmap(d).update(MMSERVE_SHUTDOWN_TIMEOUT_S="60"),
        "terminationGracePeriodSeconds 45 < preStop 5 + drain 60",
    ),
    "no preStop": (lambda d: container(d).pop("lifecycle"), "no preStop sleep"),
    "root user": (
        lambda d: pod(d)["securityContext"].update(runAsUser=0),
        "runAsUser 0 is not the Dockerfile's uid 10001",
    ),
    "env name that is not a setting": (
        lambda d: set_env(d, "MMSERVE_DECODE_THREAD", "1"),
        "MMSERVE_DECODE_THREAD is not a setting",
    ),
    "setting with an invalid value": (
        lambda d: configmap(d).update(MMSERVE_MAX_QUEUE_ITEMS="many"),
        "invalid settings",
    ),
    "container port not MMSERVE_PORT": (
        lambda d: configmap(d).update(MMSERVE_PORT="9000"),
        "container ports [8000] are not [9000]",
    ),
    "Service to another port": (
        lambda d: checks.of_kind(d, "Service")[0]["spec"]["ports"][0].update(targetPort=9000),
        "does not reach port 8000",
    ),
    "CPU limit": (
        lambda d: container(d)["resources"]["limits"].update(cpu="2"),
        "a CPU limit",
    ),
    "writable root filesystem": (
        lambda d: container(d)["securityContext"].update(readOnlyRootFilesystem=False),
        "root filesystem is not read-only",
    ),
    "threads per worker": (
        lambda d: set_env(d, "MMSERVE_DECODE_THREADS", "4"),
        "MMSERVE_DECODE_THREADS is not 2",
    ),
    "workers from the node": (
        lambda d: set_env(d, "MMSERVE_WORKERS", "4"),
        "MMSERVE_WORKERS is not taken from the CPU request",
    ),
    "scrape port": (
        lambda d: checks.of_kind(d, "Deployment")[0]["spec"]["template"]["metadata"][
            "annotations"
        ].update({"prometheus.io/port": "9090"}),
        "prometheus.io/port is '9090', not 8000",
    ),
    "rollout that takes a pod away first": (
        lambda d: checks.of_kind(d, "Deployment")[0]["spec"]["strategy"]["rollingUpdate"].update(
            maxUnavailable=1
        ),
        "rolling update is not maxSurge 1, maxUnavailable 0",
    ),
}


@pytest.mark.parametrize("fault", RENDERED_FAULTS)
def test_a_broken_rendered_manifest_fails_the_cross_checks(fault: str) -> None:
    change, expected = RENDERED_FAULTS[fault]
    docs = copy.deepcopy(checks.render(checks.K8S / "base"))
    assert checks.manifest_problems({"base": docs, **overlays()}) == []
    change(docs)
    problems = checks.manifest_problems({"base": docs, **overlays()})
    assert any(expected in p for p in problems), problems


@functools.cache
def rendered_overlays() -> dict[str, list[Doc]]:
    return {name: checks.render(checks.K8S / name) for name in checks.KUSTOMIZATIONS[1:]}


def overlays() -> dict[str, list[Doc]]:
    return copy.deepcopy(rendered_overlays())


def test_an_autoscaler_in_the_base_or_a_second_one_fails() -> None:
    rendered = checks.render_all()
    (hpa,) = checks.autoscalers(rendered["overlays/hpa"])
    in_base = {**rendered, "base": rendered["base"] + [hpa]}
    assert any("base: holds an autoscaler" in p for p in checks.exclusivity_problems(in_base))
    both = {**rendered, "overlays/keda": rendered["overlays/keda"] + [hpa]}
    problems = checks.exclusivity_problems(both)
    assert any("2 autoscalers for mmserve" in p for p in problems), problems
    renamed = copy.deepcopy(rendered)
    (scaled,) = checks.autoscalers(renamed["overlays/keda"])
    scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"] = "other"
    problems = checks.exclusivity_problems(renamed)
    assert any("do not own one same HPA" in p for p in problems), problems
    pinned = copy.deepcopy(rendered["overlays/hpa"])
    checks.of_kind(pinned, "Deployment")[0]["spec"]["replicas"] = 2
    assert any("still sets replicas" in p for p in checks.target_problems(pinned))


COMPOSE_FAULTS: dict[str, tuple[Callable[[Doc], Any], str]] = {
    "one replica": (
        lambda c: c["services"]["replica"]["deploy"].update(replicas=1),
        "replicas 1 is not an int >= 2",
    ),
    "replicas as a string": (
        lambda c: c["services"]["replica"]["deploy"].update(replicas="2"),
        "replicas '2' is not an int >= 2",
    ),
    "host port on the replicas": (
        lambda c: c["services"]["replica"].update(ports=["8000:8000"]),
        "publishes a host port",
    ),
    "balancer that does not wait for health": (
        lambda c: c["services"]["lb"].update(depends_on=["replica"]),
        "does not wait for replica service_healthy",
    ),
    "unknown service key": (
        lambda c: c["services"]["replica"].update(stop_grace=40),
        "'stop_grace' was unexpected",
    ),
    "env name that is not a setting": (
        lambda c: c["services"]["replica"]["environment"].update(MMSERVE_MODEL="x"),
        "MMSERVE_MODEL is not a setting",
    ),
    "grace shorter than the drain": (
        lambda c: c["services"]["replica"].update(stop_grace_period="10s"),
        "stop_grace_period is shorter than the drain",
    ),
}


@pytest.mark.parametrize("fault", COMPOSE_FAULTS)
def test_a_broken_compose_file_fails(fault: str) -> None:
    change, expected = COMPOSE_FAULTS[fault]
    compose = copy.deepcopy(checks.load_compose())
    assert checks.compose_problems(compose) == []
    change(compose)
    problems = checks.compose_problems(compose)
    assert any(expected in p for p in problems), problems


HAPROXY_FAULTS = {
    "health check on a path that is not a route": (
        "uri /health/ready",
        "uri /healthz",
        "health check uri '/healthz' is not a readiness route",
    ),
    "round robin": ("balance leastconn", "balance roundrobin", "balance is not leastconn"),
    "server timeout under the request deadline": (
        "timeout server 35s",
        "timeout server 20s",
        "timeout server is not longer than the 30 s deadline",
    ),
    "slow health checks": ("inter 1s fastinter 250ms", "inter 5s", "stays in rotation up to 10 s"),
    "servers on another port": ("replica:8000", "replica:8080", "servers on port 8080"),
}


@pytest.mark.parametrize("fault", HAPROXY_FAULTS)
def test_a_broken_haproxy_config_fails_the_cross_checks(fault: str) -> None:
    old, new, expected = HAPROXY_FAULTS[fault]
    text = checks.HAPROXY_CONFIG.read_text()
    assert old in text
    problems = checks.haproxy_problems(text.replace(old, new), checks.load_compose())
    assert any(expected in p for p in problems), problems


def test_haproxy_refuses_a_broken_config(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    text = checks.HAPROXY_CONFIG.read_text()
    config.write_text(text.replace("balance leastconn", "balance leastconnections"))
    (problem,) = checks.haproxy_check(config)
    assert "balance only supports" in problem and "Fatal errors" in problem
