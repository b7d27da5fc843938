"""deploy/helm/streamspace: rendered and linted by Helm's own engine (helm-python-sdk binds
Helm v4's Go library; no cluster is contacted), every manifest checked against the Kubernetes
API schemas, and the HA contract of the seed design asserted on the rendered objects."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from helm_python import Chart, HelmError, lint

from agent_runtime.redis_client import RedisTarget
from tests.deploy.conftest import DEPLOY, REPO, unknown_env_vars

CHART = DEPLOY / "helm" / "streamspace"
KUBE_VERSION = "1.30.0"
NAMESPACE = "streamspace"


def values(name: str) -> dict:
    return yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())


def render(vals: dict, *, upgrade: bool = False) -> list[dict]:
    """Rendered manifests (NOTES.txt excluded) as dicts, tagged with their template."""
    out = Chart.load(CHART).render(
        vals, name="streamspace", namespace=NAMESPACE, is_install=not upgrade, is_upgrade=upgrade
    )
    docs = []
    for template, text in sorted(out.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["_template"] = template
                docs.append(doc)
    return docs


def notes(vals: dict) -> str:
    out = Chart.load(CHART).render(vals, name="streamspace", namespace=NAMESPACE, is_install=True)
    return out["streamspace/templates/NOTES.txt"]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = find(docs, kind, name)
    return doc


def containers(doc: dict) -> list[dict]:
    spec = doc["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


@pytest.fixture(scope="module")
def ha() -> list[dict]:
    return render(values("ha"))


@pytest.fixture(scope="module")
def minimal() -> list[dict]:
    return render(values("minimal"))


@pytest.mark.parametrize("name", ["ha", "minimal", "sentinel"])
def test_helm_lint_strict_has_no_warnings(name):
    report = lint(CHART, values(name), strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


@pytest.mark.parametrize("name", ["ha", "minimal", "sentinel"])
def test_every_manifest_matches_the_kubernetes_schema(name):
    docs = render(values(name))
    assert len(docs) >= 8
    for doc in docs:
        manifest = {k: v for k, v in doc.items() if k != "_template"}
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)


def test_required_secrets_fail_the_render_with_a_clear_message():
    with pytest.raises(HelmError, match="secrets.secretKey is required"):
        render({})
    without_token = {k: v for k, v in values("minimal")["secrets"].items() if k != "agentToken"}
    with pytest.raises(HelmError, match="secrets.agentToken is required when agent.enabled"):
        render({"secrets": without_token})
    assert not [
        d for d in render({"secrets": without_token, "agent": {"enabled": False}}) if "agent" in d["metadata"]["name"]
    ]


def test_redis_sentinel_values_reach_every_control_plane_process():
    """redisSentinel.hosts → REDIS_SENTINELS and REDIS_SENTINEL_MASTER in the ConfigMap every
    control-plane container reads; the control plane's own parser accepts what the chart writes."""
    docs = render(values("sentinel"))
    data = one(docs, "ConfigMap", "streamspace")["data"]
    stored = one(docs, "Secret", "streamspace")["stringData"]
    target = RedisTarget.from_env({**data, "REDIS_URL": stored["REDIS_URL"]})
    assert target is not None and target.master_name == "streamspace"
    assert target.sentinels[0] == ("redis-node-0.redis-headless.db.svc", 26379) and len(target.sentinels) == 3
    assert target.connection_kwargs() == {"db": 3, "password": "redis-pw"}
    for doc in find(docs, "Deployment") + find(docs, "Job"):
        for container in containers(doc):
            if not any(
                ref.get("configMapRef", {}).get("name") == "streamspace" for ref in container.get("envFrom", [])
            ):
                continue  # the agent (Kubernetes Lease) and the migrations waiter use no Redis
            names = {e["name"] for e in container.get("env", [])}
            assert "REDIS_URL" in names, container["name"]
    # Without Sentinels the ConfigMap names none, and the URL stays required.
    assert "REDIS_SENTINELS" not in one(render(values("minimal")), "ConfigMap", "streamspace")["data"]
    no_url = {**values("minimal")["secrets"], "redisUrl": ""}
    with pytest.raises(HelmError, match=r"secrets.redisUrl is required \(or redisSentinel.hosts\)"):
        render({"secrets": no_url})
    # With Sentinels the URL may be empty (database 0, no password); the Secret key is optional.
    docs = render({"secrets": no_url, "redisSentinel": values("sentinel")["redisSentinel"]})
    deployment = one(docs, "Deployment", "streamspace")
    refs = [e for c in containers(deployment) for e in c.get("env", []) if e["name"] == "REDIS_URL"]
    assert refs and all(ref["valueFrom"]["secretKeyRef"]["optional"] is True for ref in refs)
    with pytest.raises(HelmError, match="redisSentinel.masterName is required"):
        render({"secrets": no_url, "redisSentinel": {"hosts": ["s:26379"], "masterName": ""}})


def test_existing_secret_replaces_the_chart_secret():
    docs = render({"secrets": {"existingSecret": "ops-managed"}})
    assert find(docs, "Secret") == []
    refs = {
        env["valueFrom"]["secretKeyRef"]["name"]
        for doc in find(docs, "Deployment")
        for c in containers(doc)
        for env in c.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert refs == {"ops-managed"}


def test_control_plane_ha_shape(ha):
    deployment = one(ha, "Deployment", "streamspace")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    hpa = one(ha, "HorizontalPodAutoscaler", "streamspace")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert hpa["spec"]["scaleTargetRef"]["name"] == "streamspace"
    (daphne,) = deployment["spec"]["template"]["spec"]["containers"]
    assert daphne["command"][:3] == ["python", "-m", "streamspace.serve"]  # daphne, uvloop, frozen heap
    assert daphne["command"][-1] == "streamspace.asgi:application"
    assert daphne["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert daphne["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in daphne["env"]}
    # Probes and scrapes come by pod IP: it must be an allowed host.
    assert env["ALLOWED_HOSTS"]["value"] == "streamspace.example.com,$(POD_IP)"
    assert list(env).index("POD_IP") < list(env).index("ALLOWED_HOSTS")  # $(VAR) needs it defined first
    assert env["POD_URL"]["value"] == "http://$(POD_IP):8000"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    security = daphne["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    assert one(ha, "PodDisruptionBudget", "streamspace")["spec"]["minAvailable"] == 1

    service = one(ha, "Service", "streamspace")
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    ingress = one(ha, "Ingress", "streamspace")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert ingress["spec"]["tls"][0]["secretName"] == "streamspace-tls"


def test_sessions_are_served_on_their_own_origins(ha):
    """The Ingress routes the portal and *.<session domain> (each session's own origin) to the
    control plane, the TLS secret covers both, and the control plane knows the domain."""
    ingress = one(ha, "Ingress", "streamspace")
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert hosts == ["streamspace.example.com", "*.sessions.example.com"]
    assert ingress["spec"]["tls"][0]["hosts"] == hosts
    backends = {rule["http"]["paths"][0]["backend"]["service"]["name"] for rule in ingress["spec"]["rules"]}
    assert backends == {"streamspace"}
    config = one(ha, "ConfigMap", "streamspace")["data"]
    assert config["STREAMSPACE_SESSION_DOMAIN"] == "sessions.example.com"
    assert "sessions.example.com" not in config["CSRF_TRUSTED_ORIGINS"]


def test_replica_count_without_autoscaling():
    docs = render({**values("minimal"), "autoscaling": {"enabled": False}, "controlPlane": {"replicas": 3}})
    assert one(docs, "Deployment", "streamspace")["spec"]["replicas"] == 3
    assert find(docs, "HorizontalPodAutoscaler") == []


def test_celery_runs_one_worker_with_beat(ha):
    celery = one(ha, "Deployment", "streamspace-celery")
    assert celery["spec"]["replicas"] == 1 and celery["spec"]["strategy"]["type"] == "Recreate"
    (container,) = celery["spec"]["template"]["spec"]["containers"]
    assert container["command"][:4] == ["celery", "--app=streamspace", "worker", "--beat"]


def test_migrations_hook_and_plain_job(ha):
    job = one(ha, "Job", "streamspace-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert "manage.py migrate --noinput" in script and "ensure_agent" in script  # agent enabled in ha
    for name in ("streamspace", "streamspace-celery"):
        init = one(ha, "Deployment", name)["spec"]["template"]["spec"]["initContainers"][0]
        assert "migrate --check" in init["command"][-1]
    plain = render({**values("minimal"), "migrations": {"helmHook": False}}, upgrade=True)
    (job,) = find(plain, "Job")
    assert job["metadata"]["name"].startswith("streamspace-migrate-") and "annotations" not in job["metadata"]
    assert "ensure_agent" in job["spec"]["template"]["spec"]["containers"][0]["command"][-1]  # agent on by default
    no_agent = render({**values("minimal"), "agent": {"enabled": False}})
    (job,) = find(no_agent, "Job")
    assert "ensure_agent" not in job["spec"]["template"]["spec"]["containers"][0]["command"][-1]


def test_agent_is_enabled_by_default(minimal):
    assert yaml.safe_load((CHART / "values.yaml").read_text())["agent"]["enabled"] is True
    agent = one(minimal, "Deployment", "streamspace-agent")
    assert agent["spec"]["replicas"] == 3
    env = {e["name"]: e.get("value") for e in agent["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STREAMSPACE_KUBERNETES_NAMESPACE"] == NAMESPACE == env["LEASE_NAMESPACE"]
    assert "not implemented" not in notes(values("minimal"))


def test_agent_replicas_lease_and_rbac(ha):
    agent = one(ha, "Deployment", "streamspace-agent")
    assert agent["spec"]["replicas"] == 3
    spec = agent["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "streamspace-agent"
    one(ha, "ServiceAccount", "streamspace-agent")
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["PLATFORM"] == "kubernetes" and env["HA_BACKEND"] == "kubernetes" and env["ENABLE_HA"] == "true"
    assert env["LEASE_KEY"] == "k8s-agent-leader" and env["LEASE_NAMESPACE"] == NAMESPACE
    assert (env["LEASE_DURATION"], env["RENEW_DEADLINE"], env["RETRY_PERIOD"]) == ("15s", "10s", "2s")
    assert env["CONTROL_PLANE_URL"] == "http://streamspace.streamspace.svc:80"
    assert env["STREAMSPACE_KUBERNETES_NAMESPACE"] == "streamspace-sessions"
    assert (env["STREAMSPACE_KUBERNETES_HOME_SIZE"], env["STREAMSPACE_KUBERNETES_HOME_ACCESS_MODE"]) == (
        "10Gi",
        "ReadWriteOnce",
    )
    assert env["STREAMSPACE_KUBERNETES_STORAGE_CLASS"] == "" and env["STREAMSPACE_KUBERNETES_SHM_SIZE"] == "1Gi"
    assert env["STREAMSPACE_KUBERNETES_NETWORK_POLICY"] == "false"  # the chart's policy isolates sessions
    assert "app.kubernetes.io/component=control-plane" in env["STREAMSPACE_KUBERNETES_ALLOWED_FROM"]

    lease_role = one(ha, "Role", "streamspace-agent-leader-election")
    assert lease_role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
    ]
    sessions_role = one(ha, "Role", "streamspace-agent-sessions")
    assert sessions_role["metadata"]["namespace"] == "streamspace-sessions"
    for binding in find(ha, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "streamspace-agent", "namespace": NAMESPACE}]
    assert one(ha, "PodDisruptionBudget", "streamspace-agent")["spec"]["minAvailable"] == 2


# The client's method names → (API group, resource, RBAC verb).
_CALL = re.compile(r"\b(create|read|list|patch|replace|delete|connect_get)_namespaced_([a-z_]+)\b")
_VERB = {"create": "create", "read": "get", "list": "list", "patch": "patch", "replace": "update", "delete": "delete",
         "connect_get": "get"}  # fmt: skip
_RESOURCE = {
    "deployment": ("apps", "deployments"),
    "deployment_scale": ("apps", "deployments/scale"),
    "pod": ("", "pods"),
    "pod_log": ("", "pods/log"),
    "pod_exec": ("", "pods/exec"),
    "service": ("", "services"),
    "persistent_volume_claim": ("", "persistentvolumeclaims"),
    "secret": ("", "secrets"),
    "network_policy": ("networking.k8s.io", "networkpolicies"),
    "lease": ("coordination.k8s.io", "leases"),
}


def _verbs_the_code_uses() -> set[tuple[str, str, str]]:
    used = set()
    for path in ("backends/kubernetes.py", "backends/kubernetes_cache.py", "leader/kubernetes.py"):
        text = (REPO / "agent_runtime" / path).read_text()
        for match in _CALL.finditer(text):
            verb, kind = match[1], match[2]
            group, resource = _RESOURCE[kind]
            used.add((group, resource, _VERB[verb]))
            if verb == "list":  # the informers list, then watch
                used.add((group, resource, "watch"))
            if verb == "connect_get":  # a WebSocket exec is a GET, authorized as create since Kubernetes 1.31
                used.add((group, resource, "create"))
    return used


@pytest.mark.parametrize("network_policy", [True, False])
def test_the_agent_roles_grant_exactly_the_verbs_the_code_uses(network_policy):
    docs = render({**values("ha"), "networkPolicy": {"enabled": network_policy}})
    granted = {
        (group, resource, verb)
        for name in ("streamspace-agent-leader-election", "streamspace-agent-sessions")
        for rule in one(docs, "Role", name)["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    used = _verbs_the_code_uses()
    if network_policy:  # the chart's own policy: the agent writes none
        used = {u for u in used if u[1] != "networkpolicies"}
    assert granted == used


def test_network_policy_isolates_sessions(ha):
    policy = one(ha, "NetworkPolicy", "streamspace-sessions-isolation")
    assert policy["metadata"]["namespace"] == "streamspace-sessions"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "streamspace"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    allowed = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rule["from"]}
    assert allowed == {"control-plane", "agent"}  # never another session


@pytest.mark.parametrize("name", ["ha", "sentinel"])
def test_every_env_var_the_chart_sets_is_read_by_the_code(name):
    ha = render(values(name))
    names: set[str] = set()
    for doc in find(ha, "Deployment") + find(ha, "Job"):
        for container in containers(doc):
            names.update(e["name"] for e in container.get("env", []))
    configmap = one(ha, "ConfigMap", "streamspace")
    names.update(configmap["data"])
    names.update(one(ha, "Secret", "streamspace")["stringData"])
    names -= {"POD_IP"}  # only used to build ALLOWED_HOSTS and POD_URL ($(POD_IP))
    assert unknown_env_vars(names) == set()


# --- the values.yaml contract, independent of the renderer -------------------------------------

VALUE_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _has_path(tree: dict, path: list[str]) -> bool:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def test_every_values_reference_exists_in_values_yaml():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []
    for template in (CHART / "templates").glob("*"):
        for ref in VALUE_REF.findall(template.read_text()):
            if not _has_path(defaults, ref.strip(".").split(".")):
                missing.append(f"{template.name}: .Values{ref}")
    assert missing == []


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "streamspace" and chart["type"] == "application"
    assert Path(CHART / "templates" / "NOTES.txt").is_file() and Path(CHART / "templates" / "_helpers.tpl").is_file()
