"""``--kubeconfig``: kopf logs in with the kubeconfig's credentials, not anonymously."""

from __future__ import annotations

import pathlib

import yaml

from tunix_operator.__main__ import api_client, connection_info


def test_a_token_kubeconfig_gives_kopf_the_token(tmp_path: pathlib.Path) -> None:
    kubeconfig = tmp_path / "operator.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443",
                                                   "insecure-skip-tls-verify": True}}],
            "users": [{"name": "u", "user": {"token": "secret-token"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        })
    )  # fmt: skip
    info = connection_info(api_client(str(kubeconfig)).configuration)
    assert (info.scheme, info.token) == ("Bearer", "secret-token")
    assert info.server == "https://127.0.0.1:6443" and info.insecure
