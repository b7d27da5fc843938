"""deploy/docker-compose.yml: parsed by a Compose-spec implementation (compose-spec, the Rust
compose_spec crate) after the same ${VAR} interpolation Compose performs, and checked against
the code's environment contract and the HA topology."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from compose_spec import PyCompose

from tests.deploy.conftest import DEPLOY, REPO, unknown_env_vars

COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
TEST_SECRETS = {
    "POSTGRES_PASSWORD": "pw",
    "SECRET_KEY": "k" * 50,
    "AGENT_TOKEN": "ssa_" + "t" * 43,
    "DOCKER_GID": "998",
}
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def dotenv(path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}, $$ → $."""

    def sub(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        value = env.get(name, "")
        if op in (":-", "-"):
            return value or arg
        if op in (":?", "?"):
            if not value:
                raise ValueError(f"{name}: {arg}")
            return value
        return value

    return _VAR.sub(sub, text)


def load(env: dict[str, str]) -> dict:
    return yaml.safe_load(interpolate(COMPOSE.read_text(), env))


@pytest.fixture(scope="module")
def project() -> dict:
    return load({**dotenv(ENV_EXAMPLE), **TEST_SECRETS})


def test_parses_and_validates_as_a_compose_file(project):
    compose = PyCompose.from_json(json.dumps(project))
    compose.validate()  # networks/volumes referenced by services are declared
    assert set(compose.service_names()) == {
        "postgres",
        "redis",
        "migrate",
        "control-plane-1",
        "control-plane-2",
        "celery",
        "nginx",
        "agent",
    }


def test_the_validator_rejects_a_broken_file(project):
    broken = json.loads(json.dumps(project))
    broken["services"]["agent"]["networks"] = ["nowhere"]
    with pytest.raises(ValueError, match="nowhere"):
        PyCompose.from_json(json.dumps(broken)).validate()


def test_required_secrets_stop_compose_with_a_message():
    env = {**dotenv(ENV_EXAMPLE), **TEST_SECRETS, "AGENT_TOKEN": ""}
    with pytest.raises(ValueError, match="AGENT_TOKEN: set AGENT_TOKEN in deploy/.env"):
        load(env)
    assert {"POSTGRES_PASSWORD", "SECRET_KEY", "AGENT_TOKEN", "DOCKER_GID"} <= set(dotenv(ENV_EXAMPLE))


def test_every_env_var_given_to_streamspace_is_read_by_the_code(project):
    for name in ("migrate", "control-plane-1", "control-plane-2", "celery", "agent"):
        env = project["services"][name]["environment"]
        assert unknown_env_vars(set(env)) == set(), name


def test_control_plane_replicas(project):
    services = project["services"]
    for n in (1, 2):
        cp = services[f"control-plane-{n}"]
        assert cp["environment"]["POD_NAME"] == f"control-plane-{n}"
        assert cp["environment"]["POD_URL"] == f"http://control-plane-{n}:8000"
        assert cp["environment"]["DATABASE_URL"] == "postgres://streamspace:pw@postgres:5432/streamspace"
        assert cp["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert cp["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert set(cp["networks"]) == {"backend", "edge"}
    assert services["migrate"]["command"][-1].startswith("python manage.py migrate --noinput && ")
    assert "ensure_agent" in services["migrate"]["command"][-1]
    celery = services["celery"]["command"]
    assert celery[:4] == ["celery", "--app=streamspace", "worker", "--beat"]


def test_nginx_load_balances_both_replicas(project):
    nginx = project["services"]["nginx"]
    source, target, _ = nginx["volumes"][0].split(":")
    assert target == "/etc/nginx/conf.d/default.conf"
    conf = (DEPLOY / source).read_text()
    assert "server control-plane-1:8000" in conf and "server control-plane-2:8000" in conf
    assert nginx["ports"] == ["8080:80"]


def test_only_nginx_is_a_trusted_proxy(project):
    """The control planes believe X-Forwarded-For from the edge network's subnet, which only
    nginx and they are on: not from sessions, agents or anything on the backend network."""
    from streamspace.api.client_ip import parse_trusted_proxies

    services = project["services"]
    subnet = project["networks"]["edge"]["ipam"]["config"][0]["subnet"]
    assert subnet == dotenv(ENV_EXAMPLE)["EDGE_SUBNET"]
    on_edge = {name for name, service in services.items() if "edge" in service.get("networks", [])}
    assert on_edge == {"nginx", "control-plane-1", "control-plane-2"}
    assert services["nginx"]["networks"] == ["edge"]
    for n in (1, 2):
        trusted = services[f"control-plane-{n}"]["environment"]["STREAMSPACE_TRUSTED_PROXIES"]
        assert [str(net) for net in parse_trusted_proxies(trusted.split(","))] == [subnet]


def test_docker_agent_pair_with_redis_lease(project):
    agent = project["services"]["agent"]
    assert agent["deploy"]["replicas"] == 2
    assert "/var/run/docker.sock:/var/run/docker.sock" in agent["volumes"]
    assert agent["group_add"] == ["998"]
    env = agent["environment"]
    assert (env["PLATFORM"], env["ENABLE_HA"], env["HA_BACKEND"]) == ("docker", "true", "redis")
    assert env["REDIS_URL"].startswith("redis://redis:6379/")
    assert env["CONTROL_PLANE_URL"] == "http://control-plane-1:8000,http://control-plane-2:8000"
    assert (env["STREAMSPACE_DOCKER_ISOLATION"], env["STREAMSPACE_DOCKER_PUBLISH_HOST"]) == ("session", "none")
    assert env["AGENT_TOKEN"] == TEST_SECRETS["AGENT_TOKEN"]
    assert "--proxy-mode tunnel" in " ".join(project["services"]["migrate"]["command"])


def test_sessions_share_no_network_with_the_deployment(project):
    """Sessions get networks of their own from the agent (§19): no compose network is theirs,
    and PostgreSQL and Redis are on the backend network alone."""
    assert set(project["networks"]) == {"backend", "edge"}
    for name in ("postgres", "redis"):
        assert project["services"][name]["networks"] == ["backend"]
        assert "ports" not in project["services"][name]


def test_the_agent_accepts_the_compose_configuration(project, tmp_path):
    """The agent CLI builds its config (HA, replica list, backend options) from exactly this env."""
    from agent_runtime import cli

    env = {**project["services"]["agent"]["environment"], "STREAMSPACE_AGENT_DATA_DIR": str(tmp_path)}
    config = cli.config_from_args(cli.build_parser(env).parse_args([]), env)
    assert config.lease.enabled and config.lease.backend == "redis" and config.lease.lease_duration == 15
    assert config.connect_urls == [
        "ws://control-plane-1:8000/api/v1/agents/connect",
        "ws://control-plane-2:8000/api/v1/agents/connect",
    ]
    assert config.backend_options == {"isolation": "session", "publish_host": "none"}


def test_build_contexts_point_at_the_dockerfiles(project):
    for name in ("control-plane-1", "agent"):
        build = project["services"][name]["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == REPO and (context / build["dockerfile"]).is_file()


# --- deploy/docker-compose.sentinel.yml: Redis Sentinel on top of the same file -----------------

SENTINEL_OVERRIDE = DEPLOY / "docker-compose.sentinel.yml"
STREAMSPACE_SERVICES = ("migrate", "control-plane-1", "control-plane-2", "celery", "agent")


def merge(base: dict, override: dict) -> dict:
    """Compose's merge of a second -f file for what the override uses: mappings (services,
    environment, depends_on) merge key by key, anything else (command) is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = merge(base[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture(scope="module")
def sentinel_project(project) -> dict:
    env = {**dotenv(ENV_EXAMPLE), **TEST_SECRETS}
    return merge(project, yaml.safe_load(interpolate(SENTINEL_OVERRIDE.read_text(), env)))


def test_sentinel_override_runs_a_master_a_replica_and_three_sentinels(sentinel_project):
    from agent_runtime.redis_client import RedisTarget

    compose = PyCompose.from_json(json.dumps(sentinel_project))
    compose.validate()
    services = sentinel_project["services"]
    sentinels = [f"redis-sentinel-{n}" for n in (1, 2, 3)]
    assert {"redis", "redis-replica", *sentinels} <= set(compose.service_names())
    replica = services["redis-replica"]["command"]
    at = replica.index("--replicaof")
    assert replica[at : at + 3] == ["--replicaof", "redis", "6379"]
    for name in sentinels:
        script = services[name]["command"][-1]
        # The master is watched under the name the services ask for, with a majority quorum.
        assert "'sentinel monitor streamspace redis 6379 2'" in script, script
        assert "exec redis-sentinel" in script and services[name]["networks"] == ["backend"]
    for name in STREAMSPACE_SERVICES:
        env = services[name]["environment"]
        assert unknown_env_vars(set(env)) == set(), name
        target = RedisTarget.from_env(env)
        assert target is not None and target.master_name == "streamspace", name
        assert [host for host, port in target.sentinels] == sentinels and {p for _, p in target.sentinels} == {26379}
        assert set(sentinels) <= set(services[name]["depends_on"]), name
    # The database numbers of REDIS_URL still apply: the agent's lease stays out of the cache's db.
    assert RedisTarget.from_env(services["agent"]["environment"]).db == 1
    assert RedisTarget.from_env(services["celery"]["environment"]).db == 0


def test_the_agent_accepts_the_sentinel_configuration(sentinel_project, tmp_path):
    from agent_runtime import cli

    env = {**sentinel_project["services"]["agent"]["environment"], "STREAMSPACE_AGENT_DATA_DIR": str(tmp_path)}
    config = cli.config_from_args(cli.build_parser(env).parse_args([]), env)
    assert config.lease.backend == "redis" and config.lease.redis is not None
    assert config.lease.redis.master_name == "streamspace" and len(config.lease.redis.sentinels) == 3
