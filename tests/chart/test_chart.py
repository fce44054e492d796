"""The tunix-operator Helm chart: lints, renders valid objects, least-privilege RBAC, strict values."""

from __future__ import annotations

import os
import tomllib

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.chart.chart_render import CHART_DIR, allows, chart_crds, notes, of_kind, rbac_rules, render

REPO = CHART_DIR.parents[1]
KUBE_VERSIONS = ["1.29", "1.32"]
CUSTOM_KINDS = {
    "ServiceMonitor": "Prometheus Operator CRD: kubernetes-validate has no schema for it",
    "ClusterKopfPeering": "kopf CRD: its schema is checked with the CRD in tests/api",
    "KopfPeering": "kopf CRD: its schema is checked with the CRD in tests/api",
}
CONFIGS = {
    "default": {},
    "namespaced": {"watchNamespaces": ["a", "b"]},
    "multi-replica": {"replicas": 3},
    "custom-image": {
        "image": {
            "repository": "registry.example.com/ml/tunix-operator",
            "tag": "1.2.3",
            "pullPolicy": "Always",
        },
        "imagePullSecrets": [{"name": "regcred"}],
        "trainer": {
            "image": "registry.example.com/ml/tunix-trainer:1.2.3-cuda",
            "artifactsBaseUri": "s3://tunix-artifacts/runs",
            "storageSecret": "tunix-s3",
        },
    },
    "everything": {
        "replicas": 2,
        "watchNamespaces": ["team-a"],
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "podDisruptionBudget": {"enabled": True},
        "serviceAccount": {"name": "custom-sa", "annotations": {"iam.example.com/role": "tunix"}},
        "extraArgs": ["--verbose"],
        "extraEnv": [{"name": "AWS_REGION", "value": "eu-west-1"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "ops", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
    },
}


def _deployment(objects: list[dict]) -> dict:
    (deployment,) = of_kind(objects, "Deployment")
    return deployment


def _container(objects: list[dict]) -> dict:
    (container,) = _deployment(objects)["spec"]["template"]["spec"]["containers"]
    return container


def _env(objects: list[dict]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in _container(objects)["env"]}


# --------------------------------------------------------------------------- lint and validity


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("kube_version", ["v1.29.0", "v1.32.0"])
def test_lint_strict_has_no_errors_or_warnings(config: str, kube_version: str) -> None:
    report = helm_python.lint(CHART_DIR, CONFIGS[config], strict=True, kube_version=kube_version)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_rendered_object_is_valid_kubernetes(config: str, version: str) -> None:
    objects = render(CONFIGS[config])
    validated = 0
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, version, strict=True)
        validated += 1
    assert validated >= 5


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_chart_crds_are_valid_apiextensions_objects(version: str) -> None:
    crds = chart_crds()
    assert {c["metadata"]["name"] for c in crds} == {
        "tunixruns.tunix.dev", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"
    }  # fmt: skip
    for crd in crds:
        kubernetes_validate.validate(crd, version, strict=True)


def test_chart_crds_are_the_generated_files() -> None:
    chart = helm_python.Chart.load(CHART_DIR)
    for crd in chart.crds:
        assert crd["data"] == (REPO / crd["name"]).read_text(), crd["name"]


def test_custom_kinds_are_rendered_only_where_expected() -> None:
    kinds = {o["kind"] for o in render(CONFIGS["everything"])}
    assert {"ServiceMonitor", "KopfPeering", "PodDisruptionBudget"} <= kinds
    assert not {"ServiceMonitor", "KopfPeering", "ClusterKopfPeering", "PodDisruptionBudget"} & {
        o["kind"] for o in render({})
    }


# --------------------------------------------------------------------------- metadata


def test_chart_versions_match_the_project() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2" and chart["name"] == "tunix-operator"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == project["version"]


def test_default_image_tag_is_the_app_version() -> None:
    assert _container(render({}))["image"] == "tunix-operator:0.1.0"


# --------------------------------------------------------------------------- deployment


def test_single_replica_runs_standalone() -> None:
    objects = render({})
    assert _container(objects)["args"] == ["--standalone"]
    assert _deployment(objects)["spec"]["strategy"] == {"type": "Recreate"}
    assert not of_kind(objects, "ClusterKopfPeering")


def test_multi_replica_runs_with_peering() -> None:
    objects = render(CONFIGS["multi-replica"])
    assert _deployment(objects)["spec"]["replicas"] == 3
    assert _container(objects)["args"] == ["--peering"]
    assert _env(objects)["TUNIX_PEERING_NAME"] == "tunix-operator"
    # Rolling, with the parameters set by the chart (owned by Helm, so an upgrade to one replica can
    # switch to Recreate: tests/chart/test_helm_install.py does it on a real API server).
    assert _deployment(objects)["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    (peering,) = of_kind(objects, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "tunix-operator"
    assert allows(rbac_rules(objects), "kopf.dev", "clusterkopfpeerings", "patch")
    assert not allows(rbac_rules(objects), "kopf.dev", "kopfpeerings", "patch")


def test_namespaced_peering_has_one_peering_object_per_namespace() -> None:
    objects = render({"replicas": 2, "watchNamespaces": ["a", "b"]})
    assert sorted(p["metadata"]["namespace"] for p in of_kind(objects, "KopfPeering")) == ["a", "b"]
    assert not of_kind(objects, "ClusterKopfPeering")
    for ns in ("a", "b"):
        assert allows(rbac_rules(objects, ns), "kopf.dev", "kopfpeerings", "patch")
    assert not allows(rbac_rules(objects), "kopf.dev", "clusterkopfpeerings", "patch")


def test_operator_settings_reach_the_environment() -> None:
    env = _env(render(CONFIGS["custom-image"]))
    assert env["TUNIX_WATCH_NAMESPACES"] == ""
    assert env["TUNIX_DEFAULT_IMAGE"] == "registry.example.com/ml/tunix-trainer:1.2.3-cuda"
    assert env["TUNIX_ARTIFACTS_BASE_URI"] == "s3://tunix-artifacts/runs"
    assert env["TUNIX_DEFAULT_STORAGE_SECRET"] == "tunix-s3"
    assert env["TUNIX_METRICS_PORT"] == "8080"
    assert env["TUNIX_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8081/healthz"
    assert env["TUNIX_MAX_CONCURRENT_RECONCILES"] == "8"
    assert _env(render({"maxConcurrentReconciles": 32}))["TUNIX_MAX_CONCURRENT_RECONCILES"] == "32"
    assert env["TUNIX_MAX_PROGRESS_READS_PER_SECOND"] == "15"
    assert _env(render({"maxProgressReadsPerSecond": 2.5}))["TUNIX_MAX_PROGRESS_READS_PER_SECOND"] == "2.5"
    assert _env(render(CONFIGS["namespaced"]))["TUNIX_WATCH_NAMESPACES"] == "a,b"
    # Unset trainer defaults are left out, so the operator's own defaults apply.
    assert not {"TUNIX_DEFAULT_IMAGE", "TUNIX_ARTIFACTS_BASE_URI", "TUNIX_DEFAULT_STORAGE_SECRET"} & set(
        _env(render({}))
    )


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_operator_parses_the_rendered_settings(config: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The env and args the chart renders are accepted by the operator's own parser."""
    main = pytest.importorskip("tunix_operator.__main__")
    objects = render(CONFIGS[config])
    for name in [n for n in os.environ if n.startswith("TUNIX_")]:
        monkeypatch.delenv(name)
    for name, value in _env(objects).items():
        if name.startswith("TUNIX_") and value is not None:
            monkeypatch.setenv(name, value)
    settings = main.load_settings(main.parse_args(_container(objects)["args"]))
    replicas = CONFIGS[config].get("replicas", 1)
    assert settings.watch_namespaces == tuple(CONFIGS[config].get("watchNamespaces", ()))
    assert settings.standalone is (replicas == 1)
    assert settings.peering_name == "tunix-operator"
    assert settings.metrics_port == 8080
    assert settings.liveness_endpoint == "http://0.0.0.0:8081/healthz"
    assert settings.max_concurrent_reconciles == 8
    trainer = CONFIGS[config].get("trainer", {})
    if "image" in trainer:
        assert settings.default_image == trainer["image"]
    if "artifactsBaseUri" in trainer:
        assert settings.artifacts_base_uri == trainer["artifactsBaseUri"]
    if "storageSecret" in trainer:
        assert settings.default_storage_secret == trainer["storageSecret"]
    # every TUNIX_* variable the chart sets is a setting the operator reads (no silent no-ops)
    known = {"TUNIX_" + name.upper() for name in type(settings).model_fields}
    assert {n for n in _env(objects) if n.startswith("TUNIX_")} <= known


def test_custom_image() -> None:
    objects = render(CONFIGS["custom-image"])
    container = _container(objects)
    assert container["image"] == "registry.example.com/ml/tunix-operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert _deployment(objects)["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_probes_ports_and_tmp_volume() -> None:
    objects = render({})
    container = _container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    volumes = _deployment(objects)["spec"]["template"]["spec"]["volumes"]
    assert {v["name"]: v for v in volumes}["tmp"]["emptyDir"]
    (service,) = of_kind(objects, "Service")
    assert service["spec"]["ports"][0]["port"] == 8080
    assert service["spec"]["selector"] == _deployment(objects)["spec"]["selector"]["matchLabels"]


def test_restricted_security_context() -> None:
    objects = render({})
    pod = _deployment(objects)["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(objects)["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["runAsNonRoot"] is True and container["runAsUser"] == 10001


def test_service_monitor_and_pdb() -> None:
    objects = render(CONFIGS["everything"])
    (monitor,) = of_kind(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    (pdb,) = of_kind(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert _container(objects)["args"] == ["--peering", "--verbose"]
    assert _deployment(objects)["spec"]["template"]["spec"]["serviceAccountName"] == "custom-sa"
    (account,) = of_kind(objects, "ServiceAccount")
    assert account["metadata"]["name"] == "custom-sa"


def test_notes_show_the_next_commands() -> None:
    text = notes()
    assert "kubectl apply -f examples/" in text and "kubectl get trun -w" in text
    assert "every namespace" in text
    assert "a, b" in notes({"watchNamespaces": ["a", "b"]})


# --------------------------------------------------------------------------- RBAC

# What the operator calls (proved against a running operator in tests/integration/test_rbac_coverage.py).
OPERATOR_NEEDS = [
    ("tunix.dev", "tunixruns", ["list", "watch", "patch"]),
    ("tunix.dev", "tunixruns/status", ["patch"]),
    ("tunix.dev", "tunixruns/finalizers", ["update"]),
    ("batch", "jobs", ["list", "watch", "create", "delete"]),
    ("", "pods", ["list", "watch"]),
    ("", "services", ["create"]),
    ("", "persistentvolumeclaims", ["create"]),
    ("", "secrets", ["get"]),
    ("", "events", ["create"]),
]
NEVER = [
    ("tunix.dev", "tunixruns", "update"),
    ("", "configmaps", "create"),  # run.yaml travels in the Job's pod template
    ("", "persistentvolumeclaims", "delete"),
    ("", "services", "delete"),
    ("", "secrets", "list"),
    ("", "secrets", "watch"),
    ("", "pods", "create"),
    ("", "pods/log", "get"),
    ("", "pods/exec", "create"),
    ("tunix.dev", "tunixruns", "create"),
    ("tunix.dev", "tunixruns", "delete"),
    ("", "namespaces", "create"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "create"),
    ("rbac.authorization.k8s.io", "roles", "create"),
]


def test_cluster_wide_mode_grants_everything_through_one_cluster_role() -> None:
    objects = render({})
    assert not of_kind(objects, "Role") and not of_kind(objects, "RoleBinding")
    (role,) = of_kind(objects, "ClusterRole")
    (binding,) = of_kind(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tunix-tunix-operator", "namespace": "tunix-system"}
    ]
    rules = role["rules"]
    for group, resource, verbs in OPERATOR_NEEDS:
        for verb in verbs:
            assert allows(rules, group, resource, verb), (group, resource, verb)
    assert allows(rules, "apiextensions.k8s.io", "customresourcedefinitions", "watch")
    # kopf reads namespaces only to serve a list of them; cluster-wide it does not.
    assert not allows(rules, "", "namespaces", "watch")


def test_namespaced_mode_grants_runs_only_in_watched_namespaces() -> None:
    objects = render(CONFIGS["namespaced"])
    roles = of_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["a", "b"]
    for binding in bindings:
        assert binding["subjects"][0]["namespace"] == "tunix-system"
    for ns in ("a", "b"):
        rules = rbac_rules(objects, ns)
        for group, resource, verbs in OPERATOR_NEEDS:
            for verb in verbs:
                assert allows(rules, group, resource, verb), (ns, group, resource, verb)
    # Nothing cluster-scoped: the operator turns kopf's namespace and CRD scanning off in this mode.
    assert of_kind(objects, "ClusterRole") == [] and of_kind(objects, "ClusterRoleBinding") == []
    assert not allows(rbac_rules(objects, "c"), "tunix.dev", "tunixruns", "list")


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_nothing_beyond_least_privilege(config: str) -> None:
    objects = render(CONFIGS[config])
    namespaces = CONFIGS[config].get("watchNamespaces") or [None]
    for ns in namespaces:
        rules = rbac_rules(objects, ns)
        for group, resource, verb in NEVER:
            assert not allows(rules, group, resource, verb), (config, group, resource, verb)
        assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in rules)


def test_role_and_cluster_role_share_one_rule_list() -> None:
    cluster = of_kind(render({}), "ClusterRole")[0]["rules"]
    role = of_kind(render({"watchNamespaces": ["a"]}), "Role")[0]["rules"]
    assert all(rule in cluster for rule in role)


def test_rbac_can_be_disabled() -> None:
    objects = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "existing"}})
    assert not {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ServiceAccount"} & {
        o["kind"] for o in objects
    }
    assert _deployment(objects)["spec"]["template"]["spec"]["serviceAccountName"] == "existing"


# --------------------------------------------------------------------------- values schema


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": -1}, "/replicas"),
        ({"replicas": "3"}, "/replicas"),
        ({"replica": 2}, "'replica' not allowed"),
        ({"watchNamespaces": "a"}, "/watchNamespaces"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
        ({"watchNamespaces": ["a", "a"]}, "/watchNamespaces"),
        ({"image": {"repo": "x"}}, "'repo' not allowed"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"metrics": {"port": 70000}}, "/metrics/port"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "'enable' not allowed"),
        ({"trainer": {"imag": "x"}}, "'imag' not allowed"),
    ],
)
def test_invalid_values_are_refused_with_a_clear_message(values: dict, message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as info:
        render(values)
    assert message in str(info.value)


def test_service_monitor_needs_the_service() -> None:
    with pytest.raises(helm_python.HelmError, match=r"needs metrics\.service\.enabled"):
        render({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})


def test_default_values_satisfy_the_schema() -> None:
    chart = helm_python.Chart.load(CHART_DIR)
    chart.validate_schema(chart.values)
    assert chart.schema["additionalProperties"] is False
