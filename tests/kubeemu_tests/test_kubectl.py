"""The real kubectl binary against the emulator."""

import subprocess

import yaml

from tests.kubeemu.fixtures import KUBECTL, kubectl
from tests.kubeemu_tests.crd import WIDGET_CRD, widget


def _apply(kubeconfig, obj, *args):
    return kubectl(kubeconfig, "apply", *args, "-f", "-", input=yaml.safe_dump(obj))


def test_kubectl_workflow_on_a_custom_resource(kubeconfig, cluster):
    _apply(kubeconfig, WIDGET_CRD)
    assert "w1 created" in _apply(kubeconfig, widget("w1", size=3)).stdout
    assert "w1" in kubectl(kubeconfig, "get", "wdg").stdout
    assert kubectl(kubeconfig, "get", "widget", "w1", "-o", "jsonpath={.spec.size}").stdout == "3"
    kubectl(
        kubeconfig,
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Done"}}',
    )
    kubectl(kubeconfig, "wait", "--for=jsonpath={.status.phase}=Done", "widget/w1", "--timeout=10s")
    kubectl(kubeconfig, "label", "widget", "w1", "team=ml")
    assert (
        kubectl(kubeconfig, "get", "widgets", "-l", "team=ml", "-o", "name").stdout.strip()
        == "widget.example.dev/w1"
    )
    described = kubectl(kubeconfig, "describe", "widget", "w1").stdout
    assert "team=ml" in described and "Phase:  Done" in described
    assert "serverside-applied" in _apply(kubeconfig, widget("w1", size=4), "--server-side").stdout
    assert kubectl(kubeconfig, "get", "widget", "w1", "-o", "jsonpath={.spec.size}").stdout == "4"
    kubectl(kubeconfig, "delete", "widget", "w1", "--wait", "--timeout=10s")
    assert kubectl(kubeconfig, "get", "widgets", "-o", "name").stdout == ""
    assert not cluster.internal_errors


def test_kubectl_get_watch_streams_changes(kubeconfig, cluster):
    cluster.install_crd(WIDGET_CRD)
    _apply(kubeconfig, widget("w1"))
    env = {"KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(kubeconfig.parent / "kube-cache")}
    with subprocess.Popen(
        [KUBECTL, "get", "widgets", "-w", "-o", "name"], env=env, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout.readline().strip() == "widget.example.dev/w1"
            _apply(kubeconfig, widget("w2"))
            assert proc.stdout.readline().strip() == "widget.example.dev/w2"
        finally:
            proc.kill()


def test_kubectl_apply_of_built_in_objects(kubeconfig):
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}}
    _apply(kubeconfig, config_map)
    _apply(kubeconfig, {**config_map, "data": {"a": "2"}})
    assert kubectl(kubeconfig, "get", "cm", "cm", "-o", "jsonpath={.data.a}").stdout == "2"
    assert "default" in kubectl(kubeconfig, "get", "namespaces").stdout
