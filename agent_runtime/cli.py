"""``streamspace-agent``: run an agent that connects to a StreamSpace control plane.

    streamspace-agent --platform docker --control-plane https://cp.example --token ssa_...

Every flag also reads an environment variable (shown in ``--help``). High availability
is configured by environment only (ENABLE_HA, HA_BACKEND, FILE_LOCK_PATH, REDIS_URL, REDIS_SENTINELS, REDIS_SENTINEL_MASTER,
LEASE_KEY, LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD), as in the Helm chart.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from pathlib import Path

from agent_runtime import logs
from agent_runtime.agent import run_agent
from agent_runtime.backends import load_backend_class
from agent_runtime.config import AgentConfig, ConfigError, LeaseConfig, default_instance_id, parse_duration

PLATFORMS = ("docker", "kubernetes", "local")


def build_parser(env: dict[str, str] | os._Environ[str] = os.environ) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamspace-agent",
        description="Run StreamSpace sessions on this host for a control plane.",
        epilog="HA: ENABLE_HA=true HA_BACKEND=file|redis|kubernetes|swarm (FILE_LOCK_PATH, REDIS_URL, REDIS_SENTINELS, REDIS_SENTINEL_MASTER, LEASE_KEY, "
        "LEASE_NAMESPACE, LEASE_DURATION=15s, RENEW_DEADLINE=10s, RETRY_PERIOD=2s)",
    )

    def flag(name: str, var: str, help_text: str, default: str | None = None, **kwargs) -> None:
        parser.add_argument(name, default=env.get(var, default), help=f"{help_text} (env {var})", **kwargs)

    flag("--platform", "PLATFORM", "docker, kubernetes or local (or a backend pkg.module:Class)")
    flag("--control-plane", "CONTROL_PLANE_URL", "control plane base URL, e.g. https://streamspace.example")
    flag("--token", "AGENT_TOKEN", "the agent's token (from POST /api/v1/agents or manage.py create_agent)")
    flag("--agent-id", "AGENT_ID", "logical agent id; replicas share it", default="")
    flag("--instance-id", "INSTANCE_ID", "this replica's id (default: hostname + random)", default="")
    flag("--data-dir", "STREAMSPACE_AGENT_DATA_DIR", "state directory", default="")
    flag("--max-sessions", "MAX_SESSIONS", "sessions this host accepts (0 = no limit)", default="0")
    flag("--drain-timeout", "DRAIN_TIMEOUT", "how long SIGTERM waits for running commands", default="30s")
    flag("--log-level", "LOG_LEVEL", "debug, info, warning, error", default="info")
    flag(
        "--session-user",
        "STREAMSPACE_LOCAL_SESSION_USER",
        "local backend, agent running as root: the account sessions run as "
        "(default streamspace-session if it exists, else nobody)",
        default="",
    )
    parser.add_argument(
        "--backend-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="backend setting, repeatable (docker: network, publish_host, home_mount_path, stop_timeout, pull; "
        "kubernetes: namespace, storage_class, home_size, shm_size, image_pull_secrets, endpoint, ...; local: session_user)",
    )
    return parser


def config_from_args(args: argparse.Namespace, env: dict[str, str] | os._Environ[str] = os.environ) -> AgentConfig:
    missing = [name for name in ("platform", "control_plane", "token") if not getattr(args, name)]
    if missing:
        names = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise ConfigError(f"missing {names}")
    platform = args.platform
    if ":" not in platform and platform not in PLATFORMS:
        raise ConfigError(f"--platform must be one of {', '.join(PLATFORMS)} (got {platform!r})")
    backend_class = load_backend_class(platform)  # fails clearly when it is not installed
    platform_name = backend_class.platform
    if args.data_dir:
        data_dir = Path(args.data_dir)
    elif env.get("STREAMSPACE_DATA_DIR"):
        data_dir = Path(env["STREAMSPACE_DATA_DIR"]) / "agent"
    else:
        data_dir = Path(".streamspace") / "agent"
    data_dir = data_dir.resolve()
    options: dict[str, str] = {}
    prefix = f"STREAMSPACE_{platform_name.upper()}_"
    for key, value in env.items():
        if key.startswith(prefix):
            options[key[len(prefix) :].lower()] = value
    for item in args.backend_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--backend-option {item!r} is not KEY=VALUE")
        options[key.strip()] = value
    if args.session_user:
        options["session_user"] = args.session_user
    lease = LeaseConfig.from_env(platform_name, data_dir, env)
    if platform_name == "kubernetes" and not env.get("LEASE_NAMESPACE") and options.get("namespace"):
        lease = dataclasses.replace(lease, lease_namespace=options["namespace"])  # the sessions' namespace
    try:
        max_sessions = int(args.max_sessions)
    except ValueError:
        raise ConfigError(f"--max-sessions {args.max_sessions!r} is not an integer") from None
    config = AgentConfig(
        control_plane=args.control_plane,
        token=args.token,
        agent_id=args.agent_id or f"{platform_name}-agent",
        platform=platform,
        instance_id=args.instance_id or default_instance_id(),
        data_dir=data_dir,
        lease=lease,
        backend_options=options,
        max_sessions=max_sessions,
        drain_timeout=parse_duration(args.drain_timeout, name="--drain-timeout"),
    )
    config.connect_url  # noqa: B018  (validates the URL scheme)
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"streamspace-agent: error: {exc}", file=sys.stderr)
        return 2
    logs.configure(args.log_level, context={"agent_id": config.agent_id, "instance_id": config.instance_id})

    try:
        asyncio.run(run_agent(config))
    except ConfigError as exc:
        print(f"streamspace-agent: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
