"""deploy/kubernetes: every overlay renders, is valid for Kubernetes, and keeps the properties that matter."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from config import role
from tests.deploy.conftest import KUSTOMIZE, OVERLAYS, ROOT, tool

# The oldest Kubernetes we support, and the newest the validator knows.
VALIDATED_VERSIONS = ("1.33.0", "latest")
DJINN_IMAGE = "ghcr.io/djinn/djinn"
overlays = pytest.mark.parametrize("overlay", OVERLAYS)


def kinds(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    [doc] = [doc for doc in kinds(docs, kind) if doc["metadata"]["name"] == name]
    return doc


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    """(workload name, pod spec) of every Deployment and Job."""
    workloads = [doc for doc in docs if doc["kind"] in {"Deployment", "Job"}]
    return [(doc["metadata"]["name"], doc["spec"]["template"]["spec"]) for doc in workloads]


def containers(docs: list[dict]) -> list[tuple[str, dict]]:
    """(workload name, container) of every container and init container."""
    return [
        (name, container)
        for name, spec in pod_specs(docs)
        for container in spec.get("initContainers", []) + spec["containers"]
    ]


def secret_keys_documented() -> set[str]:
    example = yaml.safe_load((KUSTOMIZE / "base" / "secret.example.yaml").read_text())
    return set(example["stringData"])


@overlays
@pytest.mark.parametrize("version", VALIDATED_VERSIONS)
def test_every_overlay_is_valid_kubernetes_strictly(rendered, overlay, version):
    tool("kubernetes-validate")
    from kubernetes_validate.utils import latest_version

    version = latest_version() if version == "latest" else version
    result = subprocess.run(
        [tool("kubernetes-validate"), "--kubernetes-version", version, "--strict", "--quiet", "-"],
        input=rendered[overlay],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr


@overlays
def test_every_long_running_container_has_liveness_and_readiness_probes(resources, overlay):
    deployments = kinds(resources[overlay], "Deployment")
    unprobed = [
        (doc["metadata"]["name"], container["name"])
        for doc in deployments
        for container in doc["spec"]["template"]["spec"]["containers"]
        if "livenessProbe" not in container or "readinessProbe" not in container
    ]

    assert len(deployments) == 5
    assert unprobed == []


@overlays
def test_every_image_is_pinned_to_a_version(resources, overlay):
    images = {container["image"] for _, container in containers(resources[overlay])}
    unpinned = [image for image in images if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")]

    assert unpinned == []
    assert {image.rsplit(":", 1)[0] for image in images} == {DJINN_IMAGE, "docker.io/edoburu/pgbouncer"}


def test_the_gpu_overlay_runs_the_cuda_image(resources):
    images = {container["image"] for _, container in containers(resources["gpu"])}

    assert {image for image in images if image.startswith(DJINN_IMAGE)} == {f"{DJINN_IMAGE}:0.1.0-cuda"}


@overlays
def test_beat_runs_as_exactly_one_replica_replaced_not_rolled(resources, overlay):
    beat = named(resources[overlay], "Deployment", "djinn-beat")

    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert not [hpa for hpa in kinds(resources[overlay], "HorizontalPodAutoscaler")
                if hpa["spec"]["scaleTargetRef"]["name"] == "djinn-beat"]  # fmt: skip


@overlays
def test_every_container_requests_and_limits_cpu_and_memory(resources, overlay):
    missing = [
        (workload, container["name"], kind, resource)
        for workload, container in containers(resources[overlay])
        for kind in ("requests", "limits")
        for resource in ("cpu", "memory")
        if resource not in container.get("resources", {}).get(kind, {})
    ]

    assert missing == []


@overlays
def test_every_pod_runs_as_a_non_root_user_on_a_read_only_root_with_a_writable_tmp(resources, overlay):
    for workload, spec in pod_specs(resources[overlay]):
        assert spec["securityContext"]["runAsNonRoot"] is True, workload
        if workload != "djinn-pgbouncer":  # the pgbouncer image's own user
            assert spec["securityContext"]["runAsUser"] == 10001, workload
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, workload
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, workload
            assert "/tmp" in {mount["mountPath"] for mount in container["volumeMounts"]}, workload


@overlays
def test_no_secret_is_rendered(resources, overlay):
    assert kinds(resources[overlay], "Secret") == []


@overlays
def test_the_autoscaler_scales_the_web_deployment(resources, overlay):
    [hpa] = kinds(resources[overlay], "HorizontalPodAutoscaler")

    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "djinn-web"}
    assert named(resources[overlay], "Deployment", "djinn-web")


def test_only_the_inference_worker_asks_for_a_gpu_and_only_in_the_gpu_overlay(resources):
    def gpus(overlay):
        return {
            (workload, kind): container["resources"][kind]["nvidia.com/gpu"]
            for workload, container in containers(resources[overlay])
            for kind in ("requests", "limits")
            if "nvidia.com/gpu" in container["resources"].get(kind, {})
        }

    worker = named(resources["gpu"], "Deployment", "djinn-inference-worker")["spec"]["template"]["spec"]

    assert gpus("gpu") == {("djinn-inference-worker", "requests"): 1, ("djinn-inference-worker", "limits"): 1}
    assert gpus("cpu") == {}
    assert worker["nodeSelector"] and worker["tolerations"][0]["key"] == "nvidia.com/gpu"


@overlays
def test_the_migration_job_runs_migrate_against_postgresql_itself(resources, overlay):
    [job] = kinds(resources[overlay], "Job")
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}

    assert container["args"] == ["migrate"]
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "POSTGRES_URL"


@overlays
def test_each_workload_runs_a_role_of_the_image(resources, overlay):
    ours = [(name, container) for name, container in containers(resources[overlay]) if container["name"] != "pgbouncer"]

    # The image's entry point (config.role) picks the command: no manifest repeats one.
    assert [container["name"] for _, container in ours if "command" in container] == []
    assert sorted((name, container["name"], container["args"]) for name, container in ours) == [
        ("djinn-beat", "beat", ["beat"]),
        ("djinn-inference-worker", "inference-worker", ["inference-worker"]),
        ("djinn-inference-worker", "wait-for-migrations", ["migrate", "--check"]),
        ("djinn-migrate", "migrate", ["migrate"]),
        ("djinn-web", "web", ["web"]),
        ("djinn-worker", "worker", ["worker"]),
    ]
    assert {container["args"][0] for _, container in ours} == set(role.roles())


@overlays
def test_the_inference_worker_drains_within_its_grace_period(resources, overlay):
    [spec] = [spec for name, spec in pod_specs(resources[overlay]) if name == "djinn-inference-worker"]
    env = {item["name"]: item["value"] for item in spec["containers"][0]["env"]}

    assert 0 < int(env["DJINN_INFERENCE_DRAIN_S"]) < spec["terminationGracePeriodSeconds"] - 10


@overlays
def test_budgets_and_services_select_pods_that_exist(resources, overlay):
    docs = resources[overlay]
    pod_labels = [doc["spec"]["template"]["metadata"]["labels"] for doc in kinds(docs, "Deployment")]

    def selects_a_pod(selector: dict) -> bool:
        return any(selector.items() <= labels.items() for labels in pod_labels)

    budgets = kinds(docs, "PodDisruptionBudget")
    services = kinds(docs, "Service")

    assert {doc["metadata"]["name"] for doc in budgets} == {"djinn-web", "djinn-inference-worker", "djinn-pgbouncer"}
    assert [b["metadata"]["name"] for b in budgets if not selects_a_pod(b["spec"]["selector"]["matchLabels"])] == []
    assert [doc["metadata"]["name"] for doc in services if not selects_a_pod(doc["spec"]["selector"])] == []
    for deployment in kinds(docs, "Deployment"):
        assert (
            deployment["spec"]["selector"]["matchLabels"].items()
            <= deployment["spec"]["template"]["metadata"]["labels"].items()
        )


@overlays
def test_services_target_ports_the_pods_name(resources, overlay):
    docs = resources[overlay]
    for service in kinds(docs, "Service"):
        [deployment] = [
            doc
            for doc in kinds(docs, "Deployment")
            if service["spec"]["selector"].items() <= doc["spec"]["template"]["metadata"]["labels"].items()
        ]
        pod = deployment["spec"]["template"]["spec"]
        ports = {port["name"] for container in pod["containers"] for port in container["ports"]}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports, service["metadata"]["name"]


@overlays
def test_environment_comes_from_defined_config_keys_and_documented_secret_keys(resources, overlay):
    docs = resources[overlay]
    config_maps = {doc["metadata"]["name"]: set(doc["data"]) for doc in kinds(docs, "ConfigMap")}
    documented = secret_keys_documented()
    for workload, container in containers(docs):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in config_maps, workload
            else:
                assert source["secretRef"]["name"] == "djinn-secrets", workload
        for item in container.get("env", []):
            ref = item.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                assert ref["configMapKeyRef"]["key"] in config_maps[ref["configMapKeyRef"]["name"]], workload
            if "secretKeyRef" in ref:
                assert ref["secretKeyRef"]["name"] == "djinn-secrets", workload
                assert ref["secretKeyRef"]["key"] in documented, workload


def test_the_documented_secret_holds_what_every_process_needs():
    documented = secret_keys_documented()
    readme = (ROOT / "README.md").read_text()

    assert {"DJANGO_SECRET_KEY", "DATABASE_URL", "POSTGRES_URL", "REDIS_URL"} <= documented
    assert [key for key in documented if f"`{key}`" not in readme] == []


def test_the_example_secret_is_left_out_of_the_kustomization():
    base = yaml.safe_load((KUSTOMIZE / "base" / "kustomization.yaml").read_text())

    assert "secret.example.yaml" not in base["resources"]


def test_the_gpu_overlay_runs_the_engine_on_cuda(resources):
    def device(overlay):
        maps = kinds(resources[overlay], "ConfigMap")
        [config] = [doc for doc in maps if doc["metadata"]["name"].startswith("djinn-config-")]
        return config["data"]["DJINN_DEVICE"]

    assert (device("cpu"), device("gpu")) == ("cpu", "cuda")


@overlays
def test_the_manifests_run_the_images_entry_point_as_its_own_user(resources, overlay):
    containerfile = (ROOT / "Containerfile").read_text()
    [user] = [line.split()[1] for line in containerfile.splitlines() if line.startswith("USER ")]
    [entrypoint] = [line.split(None, 1)[1] for line in containerfile.splitlines() if line.startswith("ENTRYPOINT ")]

    assert entrypoint == '["djinn"]'  # deploy/container/djinn: python -m config.role "$@"
    for name, spec in pod_specs(resources[overlay]):
        if name != "djinn-pgbouncer":
            context = spec["securityContext"]
            assert f"{context['runAsUser']}:{context['runAsGroup']}" == user, name
