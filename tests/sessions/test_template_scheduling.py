"""A template's scheduling hints for cluster platforms (GPUs, node selector, tolerations):
validated by the API and carried to the agent in every start and wake spec."""

from __future__ import annotations

import pytest

from agents_app.models import AgentCommand
from sessions_app.models import Template

pytestmark = pytest.mark.django_db

GPU_POOL = {
    "gpu": 1,
    "node_selector": {"streamspace.io/pool": "gpu"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}


def test_the_start_spec_carries_the_templates_scheduling(alice_client, template, docker_agent):
    Template.objects.filter(pk=template.pk).update(**GPU_POOL)
    response = alice_client.post("/api/v1/sessions", {"template": template.slug}, format="json")
    assert response.status_code == 202, response.content
    spec = AgentCommand.objects.get(session_id=response.json()["id"], action="start_session").spec
    assert {key: spec[key] for key in GPU_POOL} == GPU_POOL


def test_templates_without_hints_ask_for_nothing(alice_client, template, docker_agent):
    response = alice_client.post("/api/v1/sessions", {"template": template.slug}, format="json")
    spec = AgentCommand.objects.get(session_id=response.json()["id"], action="start_session").spec
    assert (spec["gpu"], spec["node_selector"], spec["tolerations"]) == (0, {}, [])


def test_operators_set_them_through_the_api(operator_client, template):
    response = operator_client.patch(f"/api/v1/templates/{template.slug}", GPU_POOL, format="json")
    assert response.status_code == 200, response.content
    assert {key: response.json()[key] for key in GPU_POOL} == GPU_POOL


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("gpu", -1, "greater than or equal to 0"),
        ("gpu", 17, "less than or equal to 16"),
        ("node_selector", ["pool"], "object of label names"),
        ("node_selector", {"pool": 3}, "object of label names"),
        ("tolerations", {"key": "x"}, "list of at most 32"),
        ("tolerations", [{"colour": "blue"}], "object with some of"),
        ("tolerations", [{"key": "x", "operator": "Maybe"}], "Equal or Exists"),
        ("tolerations", [{"key": "x", "effect": "Sometimes"}], "NoSchedule, PreferNoSchedule or NoExecute"),
        ("tolerations", [{"key": "x", "tolerationSeconds": "soon"}], "whole number of seconds"),
        ("tolerations", [{"key": 5}], "are strings"),
    ],
)
def test_malformed_hints_are_refused(operator_client, template, field, value, words):
    response = operator_client.patch(f"/api/v1/templates/{template.slug}", {field: value}, format="json")
    assert response.status_code == 400, response.content
    assert words in str(response.json())
    assert getattr(Template.objects.get(pk=template.pk), field) == getattr(template, field)
