"""Who is who in a multi-worker training cluster, from ``TF_CONFIG``; no TensorFlow here.

``TF_CONFIG`` names every task of the cluster and this process's own::

    {"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 1}}

The chief is task ``chief`` 0 when the cluster has one, else ``worker`` 0; it alone
publishes. In a Kubernetes Indexed Job every pod has the same command line and its own
``JOB_COMPLETION_INDEX``, from which :func:`tf_config_from_index` builds ``TF_CONFIG``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

JOB_INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in every pod of an Indexed Job


@dataclass(frozen=True)
class Role:
    """This process's place in the training cluster."""

    task_type: str | None  # None: no cluster (one process)
    task_id: int
    workers: int  # training tasks in the cluster: the chief (if any) and the workers
    chief: bool  # the one task that publishes

    def describe(self) -> str:
        if self.task_type is None:
            return "the only worker"
        return f"{self.task_type} {self.task_id} of {self.workers} workers"


ALONE = Role(None, 0, 1, True)


def role_in(cluster: Mapping[str, Any], task_type: str | None, task_id: int | None) -> Role:
    """The role of task ``task_type`` ``task_id`` in ``cluster`` (job name -> addresses)."""
    if task_type is None or not cluster:
        return ALONE
    if task_type not in ("chief", "worker"):
        raise ValueError(f"task type {task_type!r} does not train: use chief or worker")
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    tid = int(task_id or 0)
    chief = task_type == "chief" or ("chief" not in cluster and tid == 0)
    return Role(task_type, tid, workers, chief)


def tf_config_for_index(workers: int, address: str, index: int) -> dict[str, Any]:
    """``TF_CONFIG`` for worker ``index`` of ``workers`` whose addresses are ``address``
    with ``{index}`` replaced (in an Indexed Job under a headless Service:
    ``<job>-{index}.<service>:2222``, the pods' own host names)."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if "{index}" not in address:
        raise ValueError(f"--worker-address must contain {{index}}, got {address!r}")
    if not 0 <= index < workers:
        raise ValueError(f"worker index {index} is not in 0..{workers - 1}")
    hosts = [address.replace("{index}", str(i)) for i in range(workers)]
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}


def tf_config_from_index(
    workers: int, address: str, environ: Mapping[str, str] = os.environ
) -> str:
    """``TF_CONFIG`` (JSON) for this pod, from its ``JOB_COMPLETION_INDEX``."""
    raw = environ.get(JOB_INDEX_ENV)
    if raw is None or not raw.strip().isdigit():
        raise ValueError(
            f"--workers needs {JOB_INDEX_ENV} (set by a Kubernetes Indexed Job), got {raw!r}"
        )
    if environ.get("TF_CONFIG"):
        raise ValueError("TF_CONFIG is already set: drop --workers, or unset TF_CONFIG")
    return json.dumps(tf_config_for_index(workers, address, int(raw)))
