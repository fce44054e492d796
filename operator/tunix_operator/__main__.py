"""``tunix-operator`` / ``python -m tunix_operator``: run the operator with kopf."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Sequence

import kopf
import kubernetes

from tunix_operator.handlers import RetriesAsWarnings, build_registry
from tunix_operator.kube import KubeClient
from tunix_operator.metrics import OperatorMetrics
from tunix_operator.reconciler import Reconciler
from tunix_operator.settings import OperatorSettings, SettingsError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tunix-operator", description=__doc__)
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=None,
        help="Watch this namespace (repeatable; default: TUNIX_WATCH_NAMESPACES or all).",
    )
    parser.add_argument(
        "--standalone", action="store_true", default=None, help="No peering (a single replica)."
    )
    parser.add_argument("--peering", action="store_true", help="Use kopf peering (several replicas).")
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus port; 0 disables.")
    parser.add_argument("--liveness", default=None, help="kopf liveness endpoint URL.")
    parser.add_argument(
        "--kubeconfig", default=None, help="Kubeconfig file (default: in-cluster or ~/.kube)."
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


def load_settings(args: argparse.Namespace) -> OperatorSettings:
    standalone = False if args.peering else args.standalone
    return OperatorSettings.from_env(
        watch_namespaces=tuple(args.namespace) if args.namespace else None,
        standalone=standalone,
        metrics_port=args.metrics_port,
        liveness_endpoint=args.liveness,
        log_level="DEBUG" if args.verbose else None,
    )


def api_client(kubeconfig: str | None) -> kubernetes.client.ApiClient:
    """A client for in-cluster config, else the kubeconfig (``$KUBECONFIG`` or ~/.kube/config)."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            return kubernetes.client.ApiClient(configuration)
        except kubernetes.config.ConfigException:
            pass
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)


def connection_info(configuration: kubernetes.client.Configuration) -> kopf.ConnectionInfo:
    """kopf credentials equal to a loaded kubernetes client configuration."""
    keys = configuration.api_key or {}
    header = keys.get("BearerToken") or keys.get("authorization") or ""  # older clients: "authorization"
    scheme, _, token = header.partition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        scheme=scheme or None,
        token=token or None,
    )


# Allocations between two collections of the cyclic garbage collector's youngest generation
# (CPython's default: 700). See tune_gc.
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Collect young garbage every ``GC_YOUNG_THRESHOLD`` allocations instead of every 700.

    The operator holds every watched run, Job and pod in memory, and each watch event allocates a
    few hundred objects. At CPython's default the young collections come often enough to promote
    objects into full collections of that whole heap every few seconds of a burst: about 17% of the
    operator's CPU in a burst of 1,000-1,500 runs (docs/PERFORMANCE.md, "Sixth pass"). Reference
    counting still frees at once everything that is not in a cycle; only cyclic garbage waits
    longer (the peak RSS did not change). The older generations keep CPython's thresholds.
    """
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args)
    except SettingsError as exc:  # a usage error, as argparse's: exit 2, no traceback
        print(f"tunix-operator: {exc}", file=sys.stderr)
        return 2
    kopf.configure(
        verbose=settings.log_level == "DEBUG",
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger().setLevel(settings.log_level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RetriesAsWarnings())
    metrics = OperatorMetrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    client = api_client(args.kubeconfig)
    reconciler = Reconciler(KubeClient(client), settings)
    login = None
    if args.kubeconfig:  # kopf's default login would read the default kubeconfig instead
        info = connection_info(client.configuration)
        login = lambda **_: info  # noqa: E731
    registry = build_registry(reconciler, settings, metrics, login=login)
    tune_gc()  # after the imports and set-up: they made little cyclic garbage
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=settings.standalone,
            peering_name=settings.peering_name,
            namespaces=list(settings.watch_namespaces),
            clusterwide=not settings.watch_namespaces,
            liveness_endpoint=settings.liveness_endpoint or None,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
