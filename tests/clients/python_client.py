#!/usr/bin/env python3
"""The official Python client (PyPI `kubernetes`) against a kulisse cluster.

Run by tests/tests/clients.rs as

    python3 tests/clients/python_client.py KUBECONFIG

against `kulisse up --nodes 2 --fast-failover`. It uses the client the way a Python program
talking to a real Kubernetes cluster would: `config.load_kube_config` reads the kubeconfig
(https server, the cluster CA in certificate-authority-data, a bearer token), and the typed
APIs (CoreV1Api, AppsV1Api) turn every answer into the client's models, which check the
fields the OpenAPI spec marks as required: a response shape kulisse gets wrong fails here.

Steps, each printing one line `OK <step> <json>` (or `FAIL <step> <error>` and exit code 1):

  list-pods-all-namespaces   GET /api/v1/pods (every namespace)
  configmap-create           POST a ConfigMap
  configmap-read             GET it back: same uid, data and resourceVersion
  deployment-apply           server-side apply of a Deployment (PATCH, apply-patch+yaml)
  watch-pod-added            a watch on pods from the resourceVersion of a list taken before
                             the apply sees the ADDED event of a pod the Deployment made
  deployment-read            GET the Deployment until its status shows the rollout done
  list-pods-after            the pods of the Deployment, decoded as V1Pod models
"""

import json
import sys
import time
import traceback

NAMESPACE = "default"
APP = "py-web"
MANAGER = "kulisse-python-test"
# Every request has a timeout: a server that never answers fails the step, never hangs it.
REQUEST_TIMEOUT = 30
WATCH_SECONDS = 60
ROLLOUT_SECONDS = 90

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": APP, "labels": {"app": APP}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": APP}},
        "template": {
            "metadata": {"labels": {"app": APP}},
            "spec": {
                "containers": [
                    {
                        "name": "httpd",
                        "image": "localhost/busybox:latest",
                        "command": ["httpd", "-f", "-p", "8080", "-h", "/"],
                        "ports": [{"containerPort": 8080}],
                    }
                ]
            },
        },
    },
}


def ok(step, detail):
    print(f"OK {step} {json.dumps(detail, sort_keys=True, default=str)}", flush=True)


def fail(step, err):
    print(f"FAIL {step} {err}", flush=True)
    traceback.print_exc(file=sys.stderr)
    sys.exit(1)


def api_error(e):
    """An ApiException as one line: status, reason and the server's Status message."""
    body = getattr(e, "body", None)
    try:
        body = json.loads(body).get("message", body)
    except Exception:  # noqa: BLE001 - the body is not JSON: show it as it is
        pass
    return f"{type(e).__name__}: status={getattr(e, 'status', None)} reason={getattr(e, 'reason', None)} message={body!r}"


def describe(e):
    from kubernetes.client.exceptions import ApiException

    if isinstance(e, ApiException):
        return api_error(e)
    return f"{type(e).__name__}: {e}"


def main():
    if len(sys.argv) != 2:
        print("usage: python_client.py KUBECONFIG", file=sys.stderr)
        sys.exit(2)
    kubeconfig = sys.argv[1]

    try:
        from kubernetes import client, config, watch
    except ImportError as e:
        print(f"FAIL import the Python package 'kubernetes' is not installed ({e}); pip install kubernetes", flush=True)
        sys.exit(3)

    step = "load-kubeconfig"
    try:
        config.load_kube_config(config_file=kubeconfig)
        core = client.CoreV1Api()
        apps = client.AppsV1Api()
        ok(step, {"host": client.Configuration.get_default_copy().host})
    except Exception as e:  # noqa: BLE001 - every failure is reported as this step's
        fail(step, describe(e))

    step = "list-pods-all-namespaces"
    try:
        pods = core.list_pod_for_all_namespaces(_request_timeout=REQUEST_TIMEOUT)
        ok(step, {
            "kind": pods.kind,
            "count": len(pods.items),
            "resourceVersion": pods.metadata.resource_version,
        })
    except Exception as e:  # noqa: BLE001
        fail(step, describe(e))

    step = "configmap-create"
    try:
        cm = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="py-config", labels={"made-by": "python"}),
            data={"greeting": "hello from python", "answer": "42"},
        )
        created = core.create_namespaced_config_map(NAMESPACE, cm, _request_timeout=REQUEST_TIMEOUT)
        ok(step, {
            "name": created.metadata.name,
            "uid": created.metadata.uid,
            "resourceVersion": created.metadata.resource_version,
        })
    except Exception as e:  # noqa: BLE001
        fail(step, describe(e))

    step = "configmap-read"
    try:
        read = core.read_namespaced_config_map("py-config", NAMESPACE, _request_timeout=REQUEST_TIMEOUT)
        ok(step, {
            "name": read.metadata.name,
            "namespace": read.metadata.namespace,
            "sameUid": read.metadata.uid == created.metadata.uid,
            "sameResourceVersion": read.metadata.resource_version == created.metadata.resource_version,
            "data": read.data,
            "labels": read.metadata.labels,
            "creationTimestamp": read.metadata.creation_timestamp,
        })
    except Exception as e:  # noqa: BLE001
        fail(step, describe(e))

    # The informer pattern: list, remember the list's resourceVersion, then watch from it.
    # Everything that happens after the list (here: the Deployment's pods) arrives as events.
    step = "watch-start-list"
    try:
        before = core.list_namespaced_pod(NAMESPACE, label_selector=f"app={APP}", _request_timeout=REQUEST_TIMEOUT)
        start_rv = before.metadata.resource_version
        ok(step, {"count": len(before.items), "resourceVersion": start_rv})
    except Exception as e:  # noqa: BLE001
        fail(step, describe(e))

    step = "deployment-apply"
    try:
        applied = apps.patch_namespaced_deployment(
            APP,
            NAMESPACE,
            DEPLOYMENT,
            field_manager=MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
            _request_timeout=REQUEST_TIMEOUT,
        )
        managers = [m.manager for m in (applied.metadata.managed_fields or [])]
        ok(step, {
            "name": applied.metadata.name,
            "replicas": applied.spec.replicas,
            "generation": applied.metadata.generation,
            "managers": managers,
        })
    except Exception as e:  # noqa: BLE001
        fail(step, describe(e))

    step = "watch-pod-added"
    try:
        w = watch.Watch()
        seen = None
        events = []
        for event in w.stream(
            core.list_namespaced_pod,
            NAMESPACE,
            label_selector=f"app={APP}",
            resource_version=start_rv,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=WATCH_SECONDS + 10,
        ):
            pod = event["object"]
            events.append(f"{event['type']} {pod.metadata.name}")
            if event["type"] == "ADDED":
                seen = pod
                w.stop()
        if seen is None:
            fail(step, f"no ADDED event for a pod with app={APP} within {WATCH_SECONDS}s; events: {events}")
        owners = [f"{o.kind}/{o.name}" for o in (seen.metadata.owner_references or [])]
        ok(step, {
            "pod": seen.metadata.name,
            "type": "ADDED",
            "ownerReferences": owners,
            "image": seen.spec.containers[0].image,
        })
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001
        fail(step, describe(e))

    step = "deployment-read"
    try:
        deadline = time.monotonic() + ROLLOUT_SECONDS
        while True:
            d = apps.read_namespaced_deployment(APP, NAMESPACE, _request_timeout=REQUEST_TIMEOUT)
            s = d.status
            done = (
                s is not None
                and s.observed_generation == d.metadata.generation
                and s.replicas == 2
                and s.updated_replicas == 2
                and s.ready_replicas == 2
                and s.available_replicas == 2
            )
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        status = {
            "replicas": s.replicas if s else None,
            "updatedReplicas": s.updated_replicas if s else None,
            "readyReplicas": s.ready_replicas if s else None,
            "availableReplicas": s.available_replicas if s else None,
            "observedGeneration": s.observed_generation if s else None,
            "generation": d.metadata.generation,
            "conditions": [f"{c.type}={c.status}" for c in ((s.conditions if s else None) or [])],
        }
        if not done:
            fail(step, f"the Deployment did not report 2 ready, available replicas within {ROLLOUT_SECONDS}s: {json.dumps(status)}")
        ok(step, status)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001
        fail(step, describe(e))

    step = "list-pods-after"
    try:
        pods = core.list_pod_for_all_namespaces(label_selector=f"app={APP}", _request_timeout=REQUEST_TIMEOUT)
        ok(step, {
            "count": len(pods.items),
            "phases": sorted(p.status.phase for p in pods.items if p.status),
            "nodes": sorted(p.spec.node_name or "" for p in pods.items),
        })
    except Exception as e:  # noqa: BLE001
        fail(step, describe(e))

    print("DONE", flush=True)


if __name__ == "__main__":
    main()
