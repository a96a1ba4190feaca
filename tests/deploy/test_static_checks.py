"""The committed deploy files pass every offline check, quickly, and the checks have teeth
where the layout itself is the guarantee (HPA and KEDA never together, the minimum
Kubernetes version, the hot-reload variant)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.support import deploy_checks as checks

STATIC_BUDGET_S = 10.0


def test_every_offline_check_passes_within_10_s() -> None:
    started = time.perf_counter()
    problems = checks.all_static_problems()
    elapsed = time.perf_counter() - started
    print(f"\nevery offline check of k8s/, compose and HAProxy: {elapsed:.2f} s")
    assert problems == []
    assert elapsed < STATIC_BUDGET_S


def test_checks_cover_every_kustomization_and_both_kubernetes_versions() -> None:
    found = {
        str(path.parent.relative_to(checks.K8S))
        for path in checks.K8S.rglob("kustomization.yaml")
        if path.read_text().find("kind: Component") < 0
        and not path.is_relative_to(checks.K8S / "training")
    }
    assert found == set(checks.KUSTOMIZATIONS)
    low, high = checks.kubernetes_versions()
    assert low == checks.MIN_KUBERNETES and tuple(map(int, high.split("."))) > (1, 27)


def test_below_the_minimum_version_the_disruption_budget_is_refused() -> None:
    docs = checks.render(checks.K8S / "base")
    problems = checks.kubernetes_schema_problems(docs, "1.25")
    assert any("unhealthyPodEvictionPolicy" in p for p in problems), problems


def copy_k8s(tmp_path: Path) -> Path:
    target = tmp_path / "k8s"
    shutil.copytree(checks.K8S, target, ignore=shutil.ignore_patterns("training"))
    return target


def test_hpa_and_keda_cannot_be_rendered_together(tmp_path: Path) -> None:
    k8s = copy_k8s(tmp_path)
    both = k8s / "overlays" / "both"
    both.mkdir()
    (both / "kustomization.yaml").write_text("resources: [../hpa, ../keda]\n")
    with pytest.raises(checks.RenderError, match="already registered id"):
        checks.render(both)
    # One layer up, the HPA overlay's HPA and the ScaledObject's are one same object.
    rendered = checks.render_all(k8s)
    (hpa,) = checks.autoscalers(rendered["overlays/hpa"])
    (scaled,) = checks.autoscalers(rendered["overlays/keda"])
    assert checks.hpa_name(hpa) == checks.hpa_name(scaled) == "mmserve"


def test_the_hot_reload_variant_renders_and_passes(tmp_path: Path) -> None:
    copy_k8s(tmp_path)
    overlay = tmp_path / "mine"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../k8s/overlays/keda]\ncomponents: [../k8s/components/pvc-model-store]\n"
    )
    docs = checks.render(overlay)
    low, high = checks.kubernetes_versions()
    for version in (low, high):
        assert checks.kubernetes_schema_problems(docs, version) == []
        assert checks.custom_resource_problems(docs, version) == []
    assert checks.workload_problems(docs) == []
    (deployment,) = checks.of_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert not pod.get("initContainers")
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert models == {
        "name": "models",
        "persistentVolumeClaim": {"claimName": "mmserve-models", "readOnly": True},
    }
    container = checks.server_container(pod)
    assert container is not None
    env = checks.container_env(container, docs)
    assert "MMSERVE_MODEL_VERSION" not in env  # unpinned: follows the newest version
    assert float(env["MMSERVE_RELOAD_POLL_S"] or 0) > 0
    assert checks.of_kind(docs, "PersistentVolumeClaim")


def test_a_missing_tool_fails_with_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(checks.ToolMissing, match="install kubectl"):
        checks.render(checks.K8S / "base")
    with pytest.raises(checks.ToolMissing, match="apt-get install -y haproxy"):
        checks.haproxy_check(checks.HAPROXY_CONFIG)
