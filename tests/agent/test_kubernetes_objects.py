"""The Kubernetes backend's pure builders and state readers, as dicts."""

from __future__ import annotations

import pytest

from agent_runtime.backends import kubernetes_objects as k
from agent_runtime.backends.base import BackendError, SessionSpec

SID = "0b8f6a7e-3c1d-4d57-9e0a-1a2b3c4d5e6f"


def spec(**overrides) -> SessionSpec:
    base = {"image": "streamspace/firefox:1", "user": "Alice@corp", "template": "firefox", "cpu_millicores": 1500,
            "memory_mb": 2048, "streaming_port": 8080, "env": {"B": "2", "A": "1"},
            "volume_mounts": [{"name": "datasets", "mount_path": "/data", "read_only": True}]}  # fmt: skip
    return SessionSpec.parse({**base, **overrides})


def deployment(**overrides):
    options = {"agent_id": "k8s-prod", "namespace": "ss", "home_claim_name": "ss-home-x", "home_mount_path": "/home/user",
               "shm_size": "2Gi", "image_pull_secrets": ["regcred"]}  # fmt: skip
    s = overrides.pop("spec", spec())
    return k.deployment_manifest(SID, s, **{**options, **overrides})


def test_names_and_labels_of_the_contract():
    assert k.workload_name(SID) == f"ss-{SID}"
    assert k.home_claim_name("alice") == "ss-home-alice-2bd806c97f0e00af"
    assert k.home_claim_name("alice") != k.home_claim_name("alice_")  # one home per exact user name
    labels = deployment()["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "streamspace"
    assert labels["streamspace.io/session-id"] == SID and labels["streamspace.io/agent"] == "k8s-prod"
    assert labels["streamspace.io/user"].startswith("alice-corp-")  # a valid label value
    assert deployment()["metadata"]["annotations"]["streamspace.io/user"] == "Alice@corp"  # the exact name
    assert k.selector("k8s-prod") == "app.kubernetes.io/managed-by=streamspace,streamspace.io/agent=k8s-prod"
    for bad in ("UPPER", "a" * 60, "under_score", ""):
        with pytest.raises(BackendError):
            k.workload_name(bad)


def test_deployment_pod_spec():
    d = deployment()
    assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"] == {"type": "Recreate"}
    assert d["spec"]["selector"]["matchLabels"] == {
        "streamspace.io/session-id": SID,
        "app.kubernetes.io/managed-by": "streamspace",
    }
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "streamspace/firefox:1" and c["ports"][0]["containerPort"] == 8080
    assert c["resources"] == {
        "requests": {"cpu": "1500m", "memory": "2048Mi"},
        "limits": {"cpu": "1500m", "memory": "2048Mi"},
    }
    assert c["env"][:3] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "2"},
        {"name": "HOME", "value": "/home/user"},
    ]
    assert c["readinessProbe"]["tcpSocket"] == {"port": 8080}
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert pod["automountServiceAccountToken"] is False
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}
    assert volumes["home"]["persistentVolumeClaim"] == {"claimName": "ss-home-x"}
    assert volumes["vol-0"]["persistentVolumeClaim"] == {"claimName": "datasets", "readOnly": True}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert set(mounts) == {"/dev/shm", "/home/user", "/data"} and mounts["/data"]["readOnly"] is True
    assert "nodeSelector" not in pod and "tolerations" not in pod and "command" not in c


def test_gpu_node_selector_tolerations_command_and_home_path():
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    s = spec(gpu=2, node_selector={"gpu": "a100"}, tolerations=[toleration], command=["run", "--x"],
             home_mount_path="/home/kasm-user", cpu_millicores=0, memory_mb=0)  # fmt: skip
    d = deployment(spec=s, home_claim_name=None, image_pull_secrets=[])
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"] == {"requests": {"nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"}}
    assert pod["nodeSelector"] == {"gpu": "a100"} and pod["tolerations"] == [toleration]
    assert c["command"] == ["run", "--x"]
    assert {"name": "home", "emptyDir": {}} in pod["volumes"]  # no persistent home: scratch space
    assert {"name": "home", "mountPath": "/home/kasm-user"} in c["volumeMounts"]
    assert "imagePullSecrets" not in pod
    with pytest.raises(BackendError, match="gpu"):
        SessionSpec.parse({"gpu": -1})
    tight = deployment(spec=spec(shm_size_mb=256, read_only_root=True))
    (c,) = tight["spec"]["template"]["spec"]["containers"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}} in tight["spec"]["template"][
        "spec"
    ]["volumes"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"/tmp", "/run"} <= {m["mountPath"] for m in c["volumeMounts"]}
    with pytest.raises(BackendError, match="image"):
        deployment(spec=spec(image=""))


def test_stream_secrets_come_from_a_secret_never_the_pod_spec():
    s = spec(stream_secret="s3cret", stream_view_secret="v1ew")
    secret = k.secret_manifest(SID, s, agent_id="a", namespace="ss")
    assert secret["stringData"] == {"STREAMSPACE_STREAM_SECRET": "s3cret", "STREAMSPACE_STREAM_VIEW_SECRET": "v1ew"}
    d = deployment(spec=s)
    assert "s3cret" not in str(d) and "v1ew" not in str(d)
    env = d["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs == {
        "STREAMSPACE_STREAM_SECRET": {"name": f"ss-{SID}", "key": "STREAMSPACE_STREAM_SECRET"},
        "STREAMSPACE_STREAM_VIEW_SECRET": {"name": f"ss-{SID}", "key": "STREAMSPACE_STREAM_VIEW_SECRET"},
    }
    assert k.secret_manifest(SID, spec(), agent_id="a", namespace="ss") is None


def test_service_home_claim_and_network_policy():
    service = k.service_manifest(SID, spec(), agent_id="a", namespace="ss")
    assert service["spec"] == {
        "type": "ClusterIP",
        "selector": {"streamspace.io/session-id": SID, "app.kubernetes.io/managed-by": "streamspace"},
        "ports": [{"name": "stream", "port": 8080, "targetPort": 8080}],
    }
    claim = k.home_claim(
        "alice", agent_id="a", namespace="ss", storage_class="", size="10Gi", access_mode="ReadWriteOnce"
    )
    assert claim["metadata"]["name"] == k.home_claim_name("alice") and "storageClassName" not in claim["spec"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    peers = k.parse_peers("app.kubernetes.io/component=control-plane;app.kubernetes.io/component=agent")
    policy = k.network_policy_manifest(SID, spec(), agent_id="a", namespace="ss", allowed_from=peers)
    assert policy["spec"]["podSelector"]["matchLabels"]["streamspace.io/session-id"] == SID
    (rule,) = policy["spec"]["ingress"]
    assert [p["podSelector"]["matchLabels"] for p in rule["from"]] == [
        {"app.kubernetes.io/component": "control-plane"},
        {"app.kubernetes.io/component": "agent"},
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    with pytest.raises(BackendError, match="key=value"):
        k.parse_peers("nonsense")
    with pytest.raises(BackendError, match="quantity"):
        k.quantity("ten gigs", name="home_size")


def pod(status: dict, **meta) -> dict:
    return {"metadata": {"name": "p", "labels": {k.LABEL_SESSION: SID}, **meta}, "status": status}


def waiting(reason: str, message: str = "", code: int | None = None) -> dict:
    last = {"terminated": {"exitCode": code}} if code is not None else {}
    return pod({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": reason, "message": message}},
                                                          "lastState": last}]})  # fmt: skip


def test_session_state_from_deployment_and_pods():
    running = {"spec": {"replicas": 1}}
    assert k.session_state(None, []) == ("stopped", False, None)
    assert k.session_state({"spec": {"replicas": 0}}, []) == ("hibernated", False, None)
    assert k.session_state(running, []) == ("running", False, None)  # the pod is not there yet
    ready = pod({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
    not_ready = pod({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]})
    assert k.session_state(running, [not_ready]) == ("running", False, None)
    assert k.session_state(running, [ready]) == ("running", True, None)
    terminating = pod({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}, deletionTimestamp="x")
    assert k.session_state(running, [terminating]) == ("running", False, None)
    state, ready_flag, failure = k.session_state(running, [waiting("ImagePullBackOff", "Back-off pulling image")])
    assert (state, ready_flag, failure["reason"]) == ("failed", False, "ImagePullBackOff")
    assert k.session_state(running, [waiting("ErrImagePull")])[0] == "running"  # kubelet retries first
    assert k.session_state(running, [waiting("ContainerCreating")])[0] == "running"


def test_failure_reasons_are_actionable():
    crash = k.pod_failure(waiting("CrashLoopBackOff", "back-off 10s", code=137))
    assert crash["exit_code"] == 137 and "keeps crashing" in crash["description"] and "log" in crash["description"]
    pull = k.pod_failure(waiting("ImagePullBackOff", 'Back-off pulling image "x:1"'))
    assert "x:1" in pull["description"] and "imagePullSecrets" in pull["description"]
    failed = k.pod_failure(pod({"phase": "Failed", "message": "Pod was evicted", "containerStatuses": [
        {"state": {"terminated": {"exitCode": 2}}}]}))  # fmt: skip
    assert failed["exit_code"] == 2 and "evicted" in failed["description"]
    pending = pod({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                   "message": "0/3 nodes are available: 3 Insufficient cpu.", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})  # fmt: skip
    at = 1767225600.0  # 2026-01-01T00:00:00Z
    assert k.pod_failure(pending, now=at + 30, unschedulable_after=60) is None  # an autoscaler may still help
    late = k.pod_failure(pending, now=at + 61, unschedulable_after=60)
    assert "Insufficient cpu" in late["description"] and "Lower the session's" in late["description"]
    assert k.pod_failure(pod({"phase": "Running"})) is None


def test_the_pod_to_exec_into_and_its_home_mount():
    def pod(phase, state, *, deleting=False, mounts=None):
        metadata = {"name": f"p-{phase}-{state}", **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})}
        return {"metadata": metadata,
                "spec": {"containers": [{"name": "session", "volumeMounts": mounts or []}]},
                "status": {"phase": phase, "containerStatuses": [{"name": "session", "state": {state: {}}}]}}  # fmt: skip

    assert k.running_pod([pod("Pending", "waiting"), pod("Running", "terminated")]) is None
    assert k.running_pod([pod("Running", "running", deleting=True)]) is None  # going away
    chosen = pod("Running", "running", mounts=[{"name": "dshm", "mountPath": "/dev/shm"},
                                               {"name": "home", "mountPath": "/data/home"}])  # fmt: skip
    assert k.running_pod([pod("Pending", "waiting"), chosen]) is chosen
    assert k.home_mount_of(chosen, "/home/user") == "/data/home"
    assert k.home_mount_of(pod("Running", "running"), "/home/user") == "/home/user"
