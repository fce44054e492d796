"""API-server semantics through the real kubernetes client and plain HTTP."""

import threading

import kubernetes
import pytest

from tests.kubeemu import patches
from tests.kubeemu.rest import RestError
from tests.kubeemu_tests.crd import WIDGET_CRD, WIDGETS, widget


@pytest.fixture
def core(cluster):
    with cluster.api_client() as client:
        yield kubernetes.client.CoreV1Api(client)


@pytest.fixture
def widgets(cluster):
    cluster.install_crd(WIDGET_CRD)
    return cluster.rest


def test_metadata_generate_name_and_list_shape(cluster, core):
    a = core.create_namespaced_config_map(
        "default", {"metadata": {"generateName": "cm-"}, "data": {"k": "v"}}
    )
    b = core.create_namespaced_config_map("default", {"metadata": {"generateName": "cm-"}})
    assert a.metadata.name.startswith("cm-") and a.metadata.name != b.metadata.name
    assert a.metadata.uid != b.metadata.uid and a.metadata.creation_timestamp is not None
    assert int(b.metadata.resource_version) > int(a.metadata.resource_version)
    body = cluster.rest.request("GET", "/api/v1/namespaces/default/configmaps")
    assert body["kind"] == "ConfigMapList" and body["apiVersion"] == "v1"
    assert int(body["metadata"]["resourceVersion"]) >= int(b.metadata.resource_version)
    with pytest.raises(kubernetes.client.ApiException) as exc:
        core.create_namespaced_config_map("default", {"metadata": {"name": a.metadata.name}})
    assert exc.value.status == 409 and '"AlreadyExists"' in exc.value.body
    with pytest.raises(kubernetes.client.ApiException) as exc:
        core.read_namespaced_config_map("absent", "default")
    assert exc.value.status == 404 and '"kind": "Status"' in exc.value.body


def test_cluster_wide_lists_and_discovery(cluster, core):
    cluster.rest.request("POST", "/api/v1/namespaces", {"metadata": {"name": "other"}})
    for ns in ("default", "other"):
        core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}})
    assert [n.metadata.name for n in core.list_namespace().items] == ["default", "other"]
    assert sorted(p.metadata.namespace for p in core.list_pod_for_all_namespaces().items) == [
        "default",
        "other",
    ]
    assert cluster.rest.request("GET", "/api/v1")["groupVersion"] == "v1"
    with pytest.raises(kubernetes.client.ApiException) as exc:
        core.create_namespaced_pod("absent", {"metadata": {"name": "p"}, "spec": {"containers": []}})
    assert exc.value.status == 404


def test_selectors_on_list_and_watch(cluster, core):
    for name, tier in (("a", "web"), ("b", "db"), ("c", "web")):
        core.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": {"tier": tier}}})
    listed = core.list_namespaced_config_map("default", label_selector="tier in (web)")
    assert [i.metadata.name for i in listed.items] == ["a", "c"]
    assert [
        i.metadata.name
        for i in core.list_namespaced_config_map(
            "default", field_selector="metadata.name!=a", label_selector="tier=web"
        ).items
    ] == ["c"]
    events = []
    watch = kubernetes.watch.Watch()
    stream = watch.stream(
        core.list_namespaced_config_map,
        "default",
        label_selector="tier=db",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=5,
    )
    core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"tier": "db"}}})
    core.patch_namespaced_config_map("b", "default", {"metadata": {"labels": {"tier": "cache"}}})
    for event in stream:
        events.append((event["type"], event["object"].metadata.name))
        if len(events) == 2:
            watch.stop()
    # the watch started after the list: "a" entered the selection, "b" left it
    assert events == [("ADDED", "a"), ("DELETED", "b")]


def test_watch_replays_history_as_json_stream(cluster, widgets):
    first = widgets.request("POST", WIDGETS, widget("w1"))
    widgets.request("PATCH", f"{WIDGETS}/w1", {"spec": {"size": 2}}, content_type=patches.MERGE_PATCH)
    widgets.request("DELETE", f"{WIDGETS}/w1")
    seen = []
    for event in widgets.watch(
        WIDGETS, {"resourceVersion": first["metadata"]["resourceVersion"], "timeoutSeconds": "1"}
    ):
        seen.append(event["type"])
    assert seen == ["MODIFIED", "DELETED"]


def test_status_subresource_generation_and_conflicts(widgets):
    created = widgets.request("POST", WIDGETS, {**widget("w", size=1), "status": {"phase": "Ignored"}})
    assert "status" not in created and created["metadata"]["generation"] == 1
    path = f"{WIDGETS}/w"
    after_status = widgets.request(
        "PATCH",
        f"{path}/status",
        {"status": {"phase": "Ready"}, "spec": {"size": 9}},
        content_type=patches.MERGE_PATCH,
    )
    assert after_status["status"] == {"phase": "Ready"} and after_status["spec"] == {"size": 1}
    assert after_status["metadata"]["generation"] == 1
    labelled = widgets.request(
        "PATCH",
        path,
        {"metadata": {"labels": {"x": "y"}}, "status": {"phase": "No"}},
        content_type=patches.STRATEGIC_MERGE_PATCH,
    )
    assert labelled["metadata"]["generation"] == 1 and labelled["status"] == {"phase": "Ready"}
    replaced = widgets.request("PUT", path, {**labelled, "spec": {"size": 2}})
    assert replaced["metadata"]["generation"] == 2
    with pytest.raises(RestError) as exc:  # stale resourceVersion in PUT
        widgets.request("PUT", path, {**labelled, "spec": {"size": 3}})
    assert exc.value.code == 409 and exc.value.status["reason"] == "Conflict"
    with pytest.raises(RestError) as exc:  # stale resourceVersion in a merge patch
        widgets.request(
            "PATCH",
            path,
            {"metadata": {"resourceVersion": "1"}, "spec": {"size": 4}},
            content_type=patches.MERGE_PATCH,
        )
    assert exc.value.code == 409
    with pytest.raises(RestError) as exc:  # a failed JSON-patch test is 422, as kopf expects
        widgets.request(
            "PATCH",
            path,
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
                {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
            ],
            content_type=patches.JSON_PATCH,
        )
    assert exc.value.code == 422
    current = replaced["metadata"]["resourceVersion"]
    patched = widgets.request(
        "PATCH",
        path,
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": current},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
        ],
        content_type=patches.JSON_PATCH,
    )
    assert patched["metadata"]["finalizers"] == ["f"]


def test_server_side_apply_creates_and_updates(widgets):
    apply = {"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}
    created = widgets.request(
        "PATCH", f"{WIDGETS}/w", apply, params={"fieldManager": "t"}, content_type=patches.APPLY_PATCH
    )
    assert created["metadata"]["uid"] and created["spec"] == {"size": 1}
    updated = widgets.request(
        "PATCH",
        f"{WIDGETS}/w",
        {**apply, "spec": {"size": 5}},
        params={"fieldManager": "t"},
        content_type=patches.APPLY_PATCH,
    )
    assert updated["metadata"]["uid"] == created["metadata"]["uid"] and updated["spec"] == {"size": 5}


def test_finalizers_and_cascade_deletion(cluster, core, widgets):
    owner = widgets.request(
        "POST", WIDGETS, {**widget("owner"), "metadata": {"name": "owner", "finalizers": ["x/y"]}}
    )
    ref = {"apiVersion": "example.dev/v1", "kind": "Widget", "name": "owner", "uid": owner["metadata"]["uid"]}
    child = core.create_namespaced_config_map(
        "default", {"metadata": {"name": "child", "ownerReferences": [ref]}}
    )
    child_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "child", "uid": child.metadata.uid}
    core.create_namespaced_secret(
        "default", {"metadata": {"name": "grandchild", "ownerReferences": [child_ref]}}
    )
    marked = widgets.request("DELETE", f"{WIDGETS}/owner")
    assert marked["metadata"]["deletionTimestamp"]
    assert widgets.request("GET", f"{WIDGETS}/owner")["metadata"]["deletionTimestamp"]
    assert core.read_namespaced_config_map("child", "default")
    widgets.request(
        "PATCH", f"{WIDGETS}/owner", {"metadata": {"finalizers": None}}, content_type=patches.MERGE_PATCH
    )
    for read in (
        lambda: widgets.request("GET", f"{WIDGETS}/owner"),
        lambda: core.read_namespaced_config_map("child", "default"),
        lambda: core.read_namespaced_secret("grandchild", "default"),
    ):
        with pytest.raises((RestError, kubernetes.client.ApiException)) as exc:
            read()
        assert getattr(exc.value, "code", None) == 404 or getattr(exc.value, "status", None) == 404


def test_events_logs_and_request_log(cluster, core):
    cluster.clear_request_log()
    events = kubernetes.client.EventsV1Api(cluster.api_client())
    body = {
        "metadata": {"generateName": "run."},
        "reason": "Started",
        "action": "Start",
        "type": "Normal",
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "t",
        "reportingInstance": "t",
        "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
    }
    assert events.create_namespaced_event("default", body).metadata.name.startswith("run.")
    core.create_namespaced_event(
        "default", {"metadata": {"generateName": "p."}, "involvedObject": {"name": "p"}}
    )
    core.create_namespaced_pod(
        "default", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
    )
    cluster.set_pod_log("default", "p", "line 1\nline 2\n")
    response = core.read_namespaced_pod_log("p", "default", _preload_content=False)
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.data.decode() == "line 1\nline 2\n"
    records = cluster.requests_from("OpenAPI-Generator")
    assert [(r.verb, r.api_group, r.resource, r.subresource, r.name) for r in records] == [
        ("create", "events.k8s.io", "events", "", ""),
        ("create", "", "events", "", ""),
        ("create", "", "pods", "", ""),
        ("get", "", "pods", "log", "p"),
    ]


def test_concurrent_clients_get_unique_resource_versions(cluster):
    versions, errors = [], []

    def create(i):
        try:
            obj = cluster.rest.request(
                "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"c{i}"}}
            )
            versions.append(int(obj["metadata"]["resourceVersion"]))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(versions)) == 20
    assert not cluster.internal_errors
