"""k8s/ renders with kustomize, validates against Kubernetes 1.30 (strict), and says what it should.

Offline: `kustomize build` (or `kubectl kustomize`) renders each tree, ``kubernetes_validate`` checks every
object against the bundled OpenAPI schemas, and the MLflow server's ``--allowed-hosts`` is tried on a real
``mlflow server`` process with the Host headers that in-cluster clients send.
"""

from __future__ import annotations

import functools
import http.client
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
# The oldest Kubernetes we support and a current one: an API removed or changed in between fails here.
K8S_VERSIONS = ("1.30.0", "1.34.0")
TREES = ("base", "overlays/example")
NAMESPACE = "crownsam"
# The one Secret the base refers to without defining it (made out of band or by an overlay).
EXTERNAL_SECRETS = {"mlflow-db"}


def _kustomize_cmd() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.fail("neither kustomize nor kubectl found: install kubectl (it builds kustomizations offline)")


def _render_dir(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([*_kustomize_cmd(), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kustomize failed on {path}:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@functools.cache
def render(tree: str) -> tuple[dict[str, Any], ...]:
    return tuple(_render_dir(K8S / tree))


def by_kind(objs, kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(objs) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def container(objs, kind: str, name: str) -> dict[str, Any]:
    containers = pod_spec(one(objs, kind, name))["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def arg_value(args: list[str], flag: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
    assert len(values) == 1, f"{flag}=... should appear once in {args}"
    return values[0]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """matchLabels semantics (all we use; matchExpressions are refused so nothing is missed)."""
    assert "matchExpressions" not in selector
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


# Image references: [registry/]path[:tag][@digest], lower-case path, a tag or a digest, never latest.
IMAGE_RE = re.compile(
    r"^(?:(?P<registry>[a-z0-9.-]+(?::\d+)?)/)?(?P<path>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


# ---------------------------------------------------------------------------------------------------------
# Rendering and schema validation


@pytest.mark.parametrize("tree", TREES)
def test_tree_renders_into_the_namespace(tree):
    objs = render(tree)
    kinds = {o["kind"] for o in objs}
    assert {
        "Namespace",
        "Deployment",
        "Service",
        "StatefulSet",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
        "ConfigMap",
    } <= kinds
    for o in objs:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == NAMESPACE, f"{o['kind']}/{o['metadata']['name']}"
        assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "crownsam"
    assert [o["metadata"]["name"] for o in by_kind(objs, "Namespace")] == [NAMESPACE]
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), "duplicate objects"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("tree", TREES)
def test_every_object_validates_strictly(tree, version):
    errors = []
    for o in render(tree):
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{o['kind']}/{o['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


def test_strict_validation_catches_a_misspelt_field():
    """The validator is really strict: an unknown field in a pod spec is an error, not ignored."""
    deployment = json.loads(json.dumps(one(render("base"), "Deployment", "mlflow")))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_gcs_key_component_renders_and_validates(tmp_path):
    """The optional key-file component (instead of Workload Identity) applies on top of an overlay."""
    rel = os.path.relpath(K8S, tmp_path)  # kustomize refuses absolute paths to bases
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {rel}/overlays/example\n"
        f"components:\n  - {rel}/components/gcs-key-secret\n"
    )
    objs = _render_dir(tmp_path)
    for o in objs:
        kubernetes_validate.validate(o, K8S_VERSIONS[0], strict=True)
    spec = pod_spec(one(objs, "Deployment", "mlflow"))
    c = spec["containers"][0]
    key_path = env_of(c)["GOOGLE_APPLICATION_CREDENTIALS"]["value"]
    mount = next(m for m in c["volumeMounts"] if key_path.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "mlflow-gcs-key"
    assert not by_kind(objs, "Secret") or all(s["metadata"]["name"] != "mlflow-gcs-key" for s in objs)


# ---------------------------------------------------------------------------------------------------------
# Pods: non-root, read-only, resources, probes, pinned images


@pytest.mark.parametrize("tree", TREES)
def test_pods_are_non_root_locked_down_and_sized(tree):
    for w in workloads(render(tree)):
        where = f"{tree}: {w['kind']}/{w['metadata']['name']}"
        spec = pod_spec(w)
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc["runAsUser"] > 0 and psc["runAsGroup"] > 0, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where  # none of them call the API
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), where
        for c in spec.get("initContainers", []) + spec["containers"]:
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False, where
            assert csc["readOnlyRootFilesystem"] is True, where
            assert csc["capabilities"]["drop"] == ["ALL"] and not csc["capabilities"].get("add"), where
            assert not csc.get("privileged"), where
            res = c["resources"]
            assert res["requests"]["cpu"] and res["requests"]["memory"], where
            assert res["limits"]["memory"], where
            assert "readinessProbe" in c and "livenessProbe" in c, where
            # Whatever the process writes goes to mounted volumes (the root filesystem is read-only).
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), where


@pytest.mark.parametrize("tree", TREES)
def test_images_are_pinned(tree):
    images = [c["image"] for w in workloads(render(tree)) for c in pod_spec(w)["containers"]]
    assert images
    for image in images:
        m = IMAGE_RE.match(image)
        assert m, f"not a valid image reference: {image}"
        assert m["tag"] or m["digest"], f"{image}: no tag or digest"
        assert m["tag"] != "latest", f"{image}: latest"


def test_example_overlay_points_at_a_registry():
    c = container(render("overlays/example"), "Deployment", "mlflow")
    m = IMAGE_RE.match(c["image"])
    assert m["registry"] and "." in m["registry"], c["image"]
    assert m["path"].endswith("crownsam-mlflow")


# ---------------------------------------------------------------------------------------------------------
# MLflow server


def service_hosts(objs) -> list[str]:
    """The Host headers an in-cluster client sends for the mlflow Service (name, port from the objects)."""
    svc = one(objs, "Service", "mlflow")
    ns = svc["metadata"]["namespace"]
    port = svc["spec"]["ports"][0]["port"]
    names = ["mlflow", f"mlflow.{ns}", f"mlflow.{ns}.svc", f"mlflow.{ns}.svc.cluster.local"]
    return [f"{n}:{port}" for n in names]


@pytest.mark.parametrize("tree", TREES)
def test_mlflow_server_command(tree):
    objs = render(tree)
    c = container(objs, "Deployment", "mlflow")
    args = c["args"]
    assert c["command"] == ["mlflow"] and args[0] == "server"
    assert arg_value(args, "--host") == "0.0.0.0"
    port = int(arg_value(args, "--port"))
    assert {p["containerPort"] for p in c["ports"]} == {port}
    allowed = arg_value(args, "--allowed-hosts").split(",")
    for host in [*service_hosts(objs), "mlflow.crownsam.svc.cluster.local", "localhost"]:
        assert host in allowed, host
    assert "*" not in allowed
    # Artifacts go to GCS; the destination comes from the ConfigMap, per environment.
    assert arg_value(args, "--artifacts-destination") == "$(MLFLOW_ARTIFACTS_DESTINATION)"
    env = env_of(c)
    ref = env["MLFLOW_ARTIFACTS_DESTINATION"]["valueFrom"]["configMapKeyRef"]
    cm = one(objs, "ConfigMap", ref["name"])
    assert cm["data"][ref["key"]].startswith("gs://") and cm["data"][ref["key"]].endswith("/mlflow")
    # The backend store is PostgreSQL, built from Secret values, and not on the command line.
    assert not any("backend-store-uri" in a or "postgresql" in a for a in args)
    uri = env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert re.fullmatch(
        r"postgresql://\$\(POSTGRES_USER\):\$\(POSTGRES_PASSWORD\)@postgres:5432/\$\(POSTGRES_DB\)", uri
    )
    names = [e["name"] for e in c["env"]]
    for var in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-db"
        assert names.index(var) < names.index("MLFLOW_BACKEND_STORE_URI")  # $(VAR) needs it defined first
    # The backend host:port is the postgres Service.
    pg = one(objs, "Service", "postgres")
    assert pg["spec"]["ports"][0]["port"] == 5432


@pytest.mark.parametrize("tree", TREES)
def test_probes_hit_health_on_the_server_port(tree):
    objs = render(tree)
    c = container(objs, "Deployment", "mlflow")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/health"
        assert ports[get["port"]] == int(arg_value(c["args"], "--port"))
    svc = one(objs, "Service", "mlflow")
    assert selects({"matchLabels": svc["spec"]["selector"]}, pod_labels(one(objs, "Deployment", "mlflow")))
    assert ports[svc["spec"]["ports"][0]["targetPort"]] == 5000
    pg = container(objs, "StatefulSet", "postgres")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert pg[probe]["exec"]["command"][0] == "pg_isready"


def _request(port: int, host: str, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_allowed_hosts_admit_cluster_clients_on_a_real_server(tmp_path):
    """mlflow matches Host headers exactly (port included): run the server with the manifest's list."""
    from common.gcs_emulator import free_port

    objs = render("base")
    c = container(objs, "Deployment", "mlflow")
    allowed = arg_value(c["args"], "--allowed-hosts")
    port = free_port()
    cmd = [
        str(Path(sys.executable).with_name("mlflow")), "server",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts-destination", str(tmp_path / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--allowed-hosts", allowed,
    ]  # fmt: skip
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if _request(port, "localhost:5000", "/health") == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.3)
        api = "/api/2.0/mlflow/experiments/search?max_results=1"
        for host in service_hosts(objs):
            assert _request(port, host, api) == 200, host
        assert _request(port, "evil.example.com", api) == 403
        assert _request(port, "mlflow.other-namespace.svc.cluster.local:5000", api) == 403
        # kubelet probes send the pod IP as Host: /health must pass whatever the Host.
        assert _request(port, "10.12.0.7:5000", "/health") == 200
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


def test_mlflow_service_account_uses_workload_identity():
    sa = one(render("base"), "ServiceAccount", "mlflow")
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
        ".iam.gserviceaccount.com"
    )
    deployment = one(render("base"), "Deployment", "mlflow")
    assert pod_spec(deployment)["serviceAccountName"] == "mlflow"


def test_postgres_keeps_its_data_on_a_volume_claim():
    sts = one(render("base"), "StatefulSet", "postgres")
    claims = {t["metadata"]["name"]: t for t in sts["spec"]["volumeClaimTemplates"]}
    c = pod_spec(sts)["containers"][0]
    data_mount = next(m for m in c["volumeMounts"] if m["name"] in claims)
    assert env_of(c)["PGDATA"]["value"].startswith(data_mount["mountPath"] + "/")
    assert claims[data_mount["name"]]["spec"]["resources"]["requests"]["storage"]
    assert sts["spec"]["serviceName"] == "postgres"
    assert one(render("base"), "Service", "postgres")["spec"]["clusterIP"] == "None"


# ---------------------------------------------------------------------------------------------------------
# Secrets: only referenced in the base; placeholders in the example


def secret_refs(objs) -> list[tuple[str, str, str]]:
    """(kind, name, key) of every secretKeyRef / configMapKeyRef / secret volume in pod specs."""
    refs = []
    for w in workloads(objs):
        spec = pod_spec(w)
        for c in spec["containers"]:
            for e in c.get("env", []):
                vf = e.get("valueFrom", {})
                if "secretKeyRef" in vf:
                    refs.append(("Secret", vf["secretKeyRef"]["name"], vf["secretKeyRef"]["key"]))
                if "configMapKeyRef" in vf:
                    refs.append(("ConfigMap", vf["configMapKeyRef"]["name"], vf["configMapKeyRef"]["key"]))
        for v in spec.get("volumes", []):
            if "secret" in v:
                refs.append(("Secret", v["secret"]["secretName"], ""))
    return refs


def test_base_defines_no_secret_and_has_no_literal_credentials():
    objs = render("base")
    assert not by_kind(objs, "Secret")
    unresolved = {
        name
        for kind, name, _ in secret_refs(objs)
        if kind == "Secret" and not any(o["kind"] == kind and o["metadata"]["name"] == name for o in objs)
    }
    assert unresolved == EXTERNAL_SECRETS
    for w in workloads(objs):
        for c in pod_spec(w)["containers"]:
            for e in c.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|CREDENTIAL", e["name"]):
                    assert "valueFrom" in e, f"{e['name']} is a literal value"
            assert not any(re.search(r"(?i)password=|passwd|token=", a) for a in c.get("args", []))


def test_example_overlay_secret_is_a_placeholder_and_every_reference_resolves():
    import base64

    objs = render("overlays/example")
    secrets = by_kind(objs, "Secret")
    assert [s["metadata"]["name"] for s in secrets] == ["mlflow-db"]
    values = {k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()}
    assert values["POSTGRES_PASSWORD"] == "CHANGE_ME"
    for kind, name, key in secret_refs(objs):
        target = one(objs, kind, name)
        if key:
            assert key in target.get("data", {}), f"{kind}/{name} has no key {key}"


# ---------------------------------------------------------------------------------------------------------
# NetworkPolicy, RBAC


@pytest.mark.parametrize("tree", TREES)
def test_network_policies_guard_mlflow_and_postgres(tree):
    objs = render(tree)
    policies = by_kind(objs, "NetworkPolicy")
    mlflow_labels = pod_labels(one(objs, "Deployment", "mlflow"))
    pg_labels = pod_labels(one(objs, "StatefulSet", "postgres"))

    mlflow_pols = [p for p in policies if selects(p["spec"]["podSelector"], mlflow_labels)]
    assert len(mlflow_pols) == 1
    pol = mlflow_pols[0]["spec"]
    assert "Ingress" in pol["policyTypes"]
    peers = []
    for rule in pol["ingress"]:
        assert rule.get("from"), "a rule without `from` admits everyone"
        assert rule["ports"] == [{"protocol": "TCP", "port": 5000}]
        peers += rule["from"]
    # KFP v2 labels every pod of a run so: pipeline pods of this namespace may reach MLflow...
    kfp_pod = {"pipelines.kubeflow.org/v2_component": "true"}
    assert any("namespaceSelector" not in p and selects(p["podSelector"], kfp_pod) for p in peers)
    # ...and so may the ingress controller's namespace, but not arbitrary pods or namespaces.
    assert any(
        "kubernetes.io/metadata.name" in p.get("namespaceSelector", {}).get("matchLabels", {}) for p in peers
    )
    for p in peers:
        assert p.get("podSelector", {}).get("matchLabels") or p.get("namespaceSelector", {}).get(
            "matchLabels"
        ), f"peer selects everything: {p}"
        assert "ipBlock" not in p
    assert not selects(pol["podSelector"], pg_labels)

    pg_pols = [p for p in policies if selects(p["spec"]["podSelector"], pg_labels)]
    assert len(pg_pols) == 1
    pg = pg_pols[0]["spec"]
    assert set(pg["policyTypes"]) == {"Ingress", "Egress"} and pg["egress"] == []
    [rule] = pg["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    [peer] = rule["from"]
    assert "namespaceSelector" not in peer and selects(peer["podSelector"], mlflow_labels)
    assert not selects(peer["podSelector"], kfp_pod | {"app.kubernetes.io/part-of": "crownsam"})


def test_pipeline_service_account_and_minimal_role():
    objs = render("base")
    sa = one(objs, "ServiceAccount", "crownsam-pipeline")
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
        ".iam.gserviceaccount.com"
    )
    binding = one(objs, "RoleBinding", "crownsam-pipeline")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "crownsam-pipeline",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "crownsam-pipeline", "namespace": NAMESPACE}
    ]
    role = one(objs, "Role", "crownsam-pipeline")
    granted = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert granted[("argoproj.io", "workflowtaskresults")] >= {"create", "patch"}
    for (group, resource), verbs in granted.items():
        assert "*" not in verbs and "*" not in (group, resource)
        assert resource not in ("secrets", "pods/exec", "roles", "rolebindings"), resource
        assert not verbs & {"escalate", "bind", "impersonate"}
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterRoleBinding")


# ---------------------------------------------------------------------------------------------------------
# Recurring run (scheduled retraining)

# Keys of the ConfigMap that are not create_recurring_run arguments: the schedule command resolves them.
RESOLVED_KEYS = {"pipeline_name", "experiment_name", "params.json"}


@pytest.mark.parametrize("tree", TREES)
def test_recurring_run_settings(tree):
    objs = render(tree)
    data = one(objs, "ConfigMap", "crownsam-recurring-run")["data"]
    # KFP's cron: six fields, seconds first; 03:00:00 every day.
    fields = data["cron_expression"].split()
    assert len(fields) == 6, data["cron_expression"]
    second, minute, hour, dom, month, dow = fields
    assert (second, minute, hour) == ("0", "0", "3") and (dom, month, dow) == ("*", "*", "*")
    assert data["max_concurrency"] == "1"
    assert data["no_catchup"] == "true"
    assert data["enabled"] == "true"
    assert data["enable_caching"] == "false"
    assert isinstance(json.loads(data["params.json"]), dict)
    one(objs, "ServiceAccount", data["service_account"])  # runs as the pipeline's service account
    assert data["pipeline_root"].startswith("gs://")


def test_recurring_run_keys_are_create_recurring_run_arguments():
    """Every other key is a keyword of kfp.Client.create_recurring_run in the pinned kfp."""
    import kfp

    params = set(inspect.signature(kfp.Client.create_recurring_run).parameters) - {"self"}
    data = one(render("base"), "ConfigMap", "crownsam-recurring-run")["data"]
    assert {"cron_expression", "max_concurrency", "no_catchup", "job_name"} <= set(data)
    unknown = set(data) - RESOLVED_KEYS - params
    assert not unknown, f"not create_recurring_run arguments: {sorted(unknown)}"
    # Ids are resolved from names by the schedule command; the ConfigMap never pins environment ids.
    assert not {"experiment_id", "pipeline_id", "version_id"} & set(data)
