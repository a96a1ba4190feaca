"""The multi-worker training Job (k8s/training), offline: it renders, passes the Kubernetes
schemas, its pods build a TF_CONFIG naming each other by their DNS names, it publishes into
the servers' model store, and each cross-check reports a deliberately broken manifest."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from service.training.cluster import tf_config_from_index
from tests.support import deploy_checks as checks

Doc = dict[str, Any]
ADDRESS = "mmserve-train-{index}.mmserve-train:2222"


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return checks.render(checks.K8S / checks.TRAINING)


def check(docs: list[Doc]) -> list[str]:
    return checks.training_problems(docs, checks.serving_claim(), checks.served_model_name())


def test_the_training_job_renders_and_passes_every_check(docs: list[Doc]) -> None:
    assert checks.training_manifest_problems() == []
    assert sorted(d["kind"] for d in docs) == ["Job", "Service"]


def test_each_pod_names_every_worker_by_its_dns_name(docs: list[Doc]) -> None:
    (job,) = checks.of_kind(docs, "Job")
    container = checks.trainer_container(job["spec"]["template"]["spec"])
    assert container is not None
    args = checks.trainer_args(container)
    workers = job["spec"]["completions"]
    for index in range(workers):
        env = {"JOB_COMPLETION_INDEX": str(index)}
        config = json.loads(tf_config_from_index(args.workers, args.worker_address, env))
        assert config["cluster"]["worker"] == [
            f"mmserve-train-{i}.mmserve-train:2222" for i in range(workers)
        ]
        assert config["task"] == {"type": "worker", "index": index}


def set_args(job: Doc, change: Callable[[list[str]], list[str]]) -> None:
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["args"] = change(list(container["args"]))


def replace(args: list[str], old: str, new: str) -> list[str]:
    return [new if a == old else a for a in args]


def pod(job: Doc) -> Doc:
    spec: Doc = job["spec"]["template"]["spec"]
    return spec


FAULTS: dict[str, tuple[str, Callable[[Doc], None], str]] = {
    "more pods than workers": (
        "Job",
        lambda j: j["spec"].update(parallelism=3, completions=3),
        "--workers 2 is not completions 3",
    ),
    "not all at once": (
        "Job",
        lambda j: j["spec"].update(parallelism=1),
        "every worker must run at once",
    ),
    "no index": (
        "Job",
        lambda j: j["spec"].pop("completionMode"),
        "completionMode is not Indexed",
    ),
    "retried workers": (
        "Job",
        lambda j: j["spec"].update(backoffLimit=3),
        "cannot rejoin the run",
    ),
    "wrong worker host": (
        "Job",
        lambda j: set_args(j, lambda a: replace(a, ADDRESS, "w-{index}:2222")),
        "is not mmserve-train-{index}.mmserve-train:PORT",
    ),
    "wrong worker port": (
        "Job",
        lambda j: set_args(j, lambda a: replace(a, ADDRESS, ADDRESS.replace(":2222", ":9"))),
        "port 9 is not a container port",
    ),
    "no headless Service": (
        "Job",
        lambda j: pod(j).update(subdomain="elsewhere"),
        "subdomain 'elsewhere' is no Service",
    ),
    "a Service with a virtual IP": (
        "Service",
        lambda s: s["spec"].pop("clusterIP"),
        "not headless",
    ),
    "one machine only": (
        "Job",
        lambda j: set_args(j, lambda a: replace(a, "multiworker", "mirrored")),
        "--distribute is mirrored, not multiworker",
    ),
    "an invalid command line": (
        "Job",
        lambda j: set_args(j, lambda a: [*a, "--no-such-option"]),
        "not a valid mmserve-train command line",
    ),
    "a store the servers do not read": (
        "Job",
        lambda j: pod(j)["volumes"][0]["persistentVolumeClaim"].update(claimName="other"),
        "is not the servers' claim mmserve-models",
    ),
    "a read-only store": (
        "Job",
        lambda j: pod(j)["containers"][0]["volumeMounts"][0].update(readOnly=True),
        "mounted read-only",
    ),
    "another model name": (
        "Job",
        lambda j: set_args(j, lambda a: [*a, "--name", "other"]),
        "publishes 'other'; the servers serve 'demo'",
    ),
    "root": (
        "Job",
        lambda j: pod(j)["securityContext"].update(runAsUser=0),
        "runAsUser 0 is not the Dockerfile's uid",
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_broken_training_manifest_is_reported(docs: list[Doc], fault: str) -> None:
    kind, change, message = FAULTS[fault]
    assert check(docs) == []
    problems = check(checks.mutated(docs, kind, change))
    assert any(message in p for p in problems), problems


def test_a_claim_the_trainer_cannot_write_is_reported(docs: list[Doc]) -> None:
    claim = checks.serving_claim()
    claim["spec"]["accessModes"] = ["ReadOnlyMany"]
    problems = checks.training_problems(docs, claim, checks.served_model_name())
    assert any("not ReadWriteMany" in p for p in problems), problems
