"""How the agent reaches the Kubernetes API: in-cluster (service account) or a kubeconfig.

Order: an explicit kubeconfig (the ``kubeconfig`` option, else ``KUBECONFIG``) wins; inside a
pod (``KUBERNETES_SERVICE_HOST`` set) the service account's token and CA are used; otherwise
the default ``~/.kube/config``. Every request and response body is plain JSON here
(``_preload_content=False``): the backend builds and reads dicts, never the client's models.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

try:  # optional dependency: pip install streamspace-agent[kubernetes]
    import kubernetes
    import kubernetes.stream
    from kubernetes.client.rest import ApiException
except ImportError:
    kubernetes = None
    ApiException = Exception  # type: ignore[misc,assignment]

import contextlib

from agent_runtime.backends.base import BackendError
from agent_runtime.config import ConfigError

MERGE_PATCH = "application/merge-patch+json"


def require_client() -> None:
    if kubernetes is None:
        raise BackendError("the kubernetes backend needs the 'kubernetes' package (pip install kubernetes)")


def api_client(options: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None) -> Any:
    """A ``kubernetes.client.ApiClient`` for this agent (see the module docstring); a
    :class:`ConfigError` when there is no usable configuration, so the agent exits at
    start-up with the reason instead of retrying forever."""
    require_client()
    env = os.environ if env is None else env
    options = options or {}
    kubeconfig = options.get("kubeconfig") or env.get("KUBECONFIG", "")
    try:
        if kubeconfig:
            return kubernetes.config.new_client_from_config(config_file=kubeconfig.split(os.pathsep)[0])
        if env.get("KUBERNETES_SERVICE_HOST"):
            configuration = kubernetes.client.Configuration()
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            return kubernetes.client.ApiClient(configuration)
        return kubernetes.config.new_client_from_config()
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise ConfigError(
            f"cannot reach Kubernetes: no usable kubeconfig or in-cluster service account ({exc})"
        ) from None


def body(response: Any) -> dict[str, Any]:
    """The JSON body of a ``_preload_content=False`` response."""
    return json.loads(response.data or b"{}")


def api_error(exc: Exception, doing: str) -> BackendError:
    """An API failure as a sentence: what the agent was doing and what the API server said."""
    message = str(exc)
    status = getattr(exc, "status", None)
    raw = getattr(exc, "body", None)
    if raw:
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(raw).get("message") or message
    if status == 403:
        message += " (the agent's ServiceAccount lacks this permission: see the Helm chart's Role)"
    return BackendError(f"kubernetes: {doing} failed: {message}")
