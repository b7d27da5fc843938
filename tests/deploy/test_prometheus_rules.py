"""deploy/prometheus/alerts.yml: valid for Prometheus, unit-tested, and built only on metric
names that /metrics really exports."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from django.test import Client

from agents_app.models import Agent
from agents_app.tokens import hash_token
from plugins_app.models import Plugin, WebhookDelivery
from tests.deploy.conftest import DEPLOY, require_tool

RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
METRIC = re.compile(r"\b((?:streamspace|django)_[a-z0-9_]+)")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_check_rules():
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_rule_unit_tests():
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_and_documented():
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    for rule in rules():
        assert rule["alert"] in tested, f"{rule['alert']} has no case in alerts.test.yml"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_seed_checklist_alerts_exist():
    names = {rule["alert"] for rule in rules()}
    assert {
        "StreamSpaceControlPlaneDown",
        "StreamSpaceDependencyDown",
        "StreamSpaceHighErrorRate",
        "StreamSpaceHighLatency",
        "StreamSpaceAgentNoLeader",  # "Prometheus alerts for leader election failures"
        "StreamSpaceAgentInstancesStale",
        "StreamSpaceWebhookDeliveriesFailing",
        "StreamSpaceCeleryBacklog",
    } <= names


@pytest.mark.django_db
def test_rules_use_only_metrics_that_metrics_exports(client: Client):
    # Give every labelled family at least one sample.
    Agent.objects.create(agent_id="rules-agent", platform="docker", token_hash=hash_token("rules-agent"))
    hook = Plugin.objects.create(name="rules-hook", type="webhook")
    for status, attempt in (("succeeded", 1), ("failed", 99)):
        WebhookDelivery.objects.create(plugin=hook, event="session.started", status=status, attempt=attempt)
    client.get("/healthz")
    exported = client.get("/metrics").content.decode()
    families = set(re.findall(r"^# TYPE (\S+) ", exported, re.M))
    samples = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", exported, re.M))
    used = {name for rule in rules() for name in METRIC.findall(rule["expr"])}
    assert used, "no metric found in the rules"
    for name in used:
        base = name
        for suffix in SUFFIXES:
            base = base.removesuffix(suffix)
        assert name in samples or base in families, f"{name} is not exported by /metrics"
