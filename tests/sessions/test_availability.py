"""Every Launch button works: a template is offered when a connected agent can serve it now;
otherwise the catalog (portal and API) shows why, and a launch is refused with the same code
and reason. Placement and the catalog judge with one rule (``sessions_app.availability``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from agent_runtime.images import shipped_image
from agents_app.models import Agent, AgentInstance
from agents_app.tokens import hash_token
from sessions_app.availability import (
    FEATURE_MISSING,
    IMAGE_MISSING,
    NO_AGENT,
    NO_CAPACITY,
    TEMPLATE_DISABLED,
    Availability,
    decide,
    refusal,
)
from sessions_app.models import Session, Template
from sessions_app.placement import CatalogAvailability, select_agent
from streamspace.api.errors import ServiceError
from tests.support.factories import make_session

DESKTOP_CMD = ["{python}", "-m", "agent_runtime.desktop", "--port", "{port}", "--home", "{home}"]


def candidate(name="a", *, connected=True, load=0, cpu_used=0, memory_used=0, **capacity):
    return SimpleNamespace(
        agent_id=name,
        platform="docker",
        has_leader=connected,
        has_replica=connected,
        load=load,
        cpu_used=cpu_used,
        memory_used=memory_used,
        leader_capacity=capacity,
    )


def template_of(**fields):
    values = {
        "slug": "t",
        "platform": "",
        "image": "app:1",
        "requires": [],
        "enabled": True,
        "default_cpu_millicores": 1000,
        "default_memory_mb": 1024,
        **fields,
    }
    return SimpleNamespace(**values)


# --- the rule ------------------------------------------------------------------------------


def test_an_agent_serves_what_it_reports_nothing_against():
    assert refusal(template_of(), candidate()) is None  # an older agent: nothing reported
    assert refusal(template_of(requires=["desktop"]), candidate(features=None)) is None
    assert refusal(template_of(), candidate(images=["other:latest"])) is None  # it pulls
    assert refusal(template_of(), candidate(images=None, pulls_images=False)) is None  # could not list
    assert (
        refusal(template_of(image="docker.io/library/app:1"), candidate(images=["app:1"], pulls_images=False)) is None
    )


@pytest.mark.parametrize(
    "agent,code,words",
    [
        (candidate(connected=False), NO_AGENT, "registered but offline"),
        (candidate(load=2, sessions=2), NO_CAPACITY, "maximum of 2 sessions"),
        (candidate(cpu_used=3500, cpu_millicores=4000), NO_CAPACITY, "500 of its 4000 millicores of CPU free"),
        (candidate(memory_used=7500, memory_mb=8192), NO_CAPACITY, "692 of its 8192 MB of memory free"),
        (candidate(images=["other:latest"], pulls_images=False), IMAGE_MISSING, "docker pull app:1"),
        (candidate(features=[]), FEATURE_MISSING, "make desktop-deps"),
    ],
)
def test_each_reason(agent, code, words):
    why = refusal(template_of(requires=["desktop"]), agent)
    assert why.code == code and words in why.reason and not why.available


def test_the_reason_shown_is_of_the_agent_closest_to_serving_it():
    offline, missing, full = (
        candidate("a", connected=False),
        candidate("b", images=[], pulls_images=False),
        candidate("c", load=1, sessions=1),
    )
    assert decide(template_of(), [offline, missing, full])[1].code == NO_CAPACITY
    assert decide(template_of(), [offline, missing])[1].code == IMAGE_MISSING
    assert decide(template_of(), [])[1].reason.startswith("No agent is registered for docker or kubernetes")
    chosen, availability = decide(template_of(), [offline, full, candidate("d", load=5)])
    assert chosen.agent_id == "d" and availability.available
    assert decide(template_of(enabled=False), [candidate()])[1].code == TEMPLATE_DISABLED


@pytest.mark.parametrize(
    "code,status", [(NO_AGENT, 503), (NO_CAPACITY, 503), (IMAGE_MISSING, 409), (FEATURE_MISSING, 409)]
)
def test_refusals_carry_their_code_and_status(code, status):
    error = Availability(False, code, "why").error()
    assert isinstance(error, ServiceError) and (error.code, error.status_code, error.detail) == (code, status, "why")


# --- the catalog and the launch, through the API and the portal -----------------------------


def agent_with(agent_id: str, platform: str, *, connected: bool = True, **capacity) -> Agent:
    agent = Agent.objects.create(agent_id=agent_id, platform=platform, token_hash=hash_token(agent_id))
    AgentInstance.objects.create(
        agent=agent, instance_id=f"{agent_id}-0", is_leader=connected, connected=connected, capacity=capacity
    )
    return agent


@pytest.fixture
def desktop_template(db) -> Template:
    return Template.objects.create(
        slug="linux-desktop",
        display_name="Linux desktop",
        platform="local",
        command=DESKTOP_CMD,
        requires=["desktop"],
    )


def catalog_entry(client, slug: str) -> dict:
    return next(t for t in client.get("/api/v1/templates").json() if t["slug"] == slug)["availability"]


def assert_refused_alike(client, slug: str, code: str, status: int) -> None:
    shown = catalog_entry(client, slug)
    assert shown["available"] is False and shown["code"] == code and shown["reason"]
    assert client.get(f"/api/v1/templates/{slug}").json()["availability"] == shown
    before = Session.objects.count()
    response = client.post("/api/v1/sessions", {"template": slug}, format="json")
    assert response.status_code == status
    assert response.json() == {"code": code, "detail": shown["reason"]}
    assert Session.objects.count() == before


def test_no_agent_for_the_platform(alice_client, template):
    assert_refused_alike(alice_client, "xfce", NO_AGENT, 503)
    agent_with("docker-1", "docker", connected=False)
    assert_refused_alike(alice_client, "xfce", NO_AGENT, 503)
    assert "docker-1 is registered but offline" in catalog_entry(alice_client, "xfce")["reason"]


def test_a_leader_failover_does_not_refuse_launches(alice_client, template):
    """Only a follower connected (the leader's lease is moving): the template stays available
    and a launch is accepted; its command waits in ``pending`` for the new leader."""
    agent = agent_with("docker-1", "docker")
    AgentInstance.objects.filter(agent=agent).update(is_leader=False)
    assert catalog_entry(alice_client, "xfce") == {"available": True, "code": "", "reason": ""}
    response = alice_client.post("/api/v1/sessions", {"template": "xfce"}, format="json")
    assert response.status_code == 202, response.content
    assert list(agent.commands.values_list("state", flat=True)) == ["pending"]


def test_no_capacity_until_a_session_ends(alice, alice_client, template):
    agent = agent_with("docker-1", "docker", sessions=1)
    running = make_session(alice, template, agent, state="running")
    assert_refused_alike(alice_client, "xfce", NO_CAPACITY, 503)
    Session.objects.filter(pk=running.pk).update(state="stopped")
    assert catalog_entry(alice_client, "xfce") == {"available": True, "code": "", "reason": ""}
    assert alice_client.post("/api/v1/sessions", {"template": "xfce"}, format="json").status_code == 202


def test_image_missing_on_a_host_that_does_not_pull(alice_client, template):
    agent = agent_with("docker-1", "docker", images=["other:latest"], pulls_images=False)
    assert_refused_alike(alice_client, "xfce", IMAGE_MISSING, 409)
    AgentInstance.objects.filter(agent=agent).update(
        capacity={"images": ["registry.local/xfce:1"], "pulls_images": False}
    )
    assert catalog_entry(alice_client, "xfce")["available"] is True
    assert alice_client.post("/api/v1/sessions", {"template": "xfce"}, format="json").status_code == 202


def test_a_desktop_needs_the_feature_from_the_local_agent(alice_client, desktop_template):
    agent = agent_with("local", "local", features=[])
    assert_refused_alike(alice_client, "linux-desktop", FEATURE_MISSING, 409)
    AgentInstance.objects.filter(agent=agent).update(capacity={"features": ["desktop"]})
    assert catalog_entry(alice_client, "linux-desktop")["available"] is True
    response = alice_client.post("/api/v1/sessions", {"template": "linux-desktop"}, format="json")
    assert response.status_code == 202 and response.json()["agent_id"] == "local"


def test_placement_never_picks_an_agent_that_cannot_serve_it(alice, template):
    full = agent_with("a-full", "docker", sessions=1)
    make_session(alice, template, full)
    agent_with("b-no-image", "docker", images=[], pulls_images=False)
    agent_with("c-busy", "kubernetes")
    for _ in range(3):
        make_session(alice, template, Agent.objects.get(agent_id="c-busy"))
    assert select_agent(template).agent_id == "c-busy"  # the most loaded, but the only one that can
    assert CatalogAvailability().of(template).available


def test_cpu_and_memory_held_by_running_sessions_count_hibernated_ones_do_not(alice, alice_client, template):
    agent = agent_with("docker-1", "docker", cpu_millicores=2500, memory_mb=65536)
    make_session(alice, template, agent, state="running", cpu_millicores=2000)
    make_session(alice, template, agent, state="hibernated", cpu_millicores=2000)
    response = alice_client.post(
        "/api/v1/sessions", {"template": "xfce", "resources": {"cpu_millicores": 1000}}, format="json"
    )
    assert response.status_code == 503 and response.json()["code"] == NO_CAPACITY
    assert "500 of its 2500 millicores of CPU free" in response.json()["detail"]
    small = alice_client.post(
        "/api/v1/sessions", {"template": "xfce", "resources": {"cpu_millicores": 500}}, format="json"
    )
    assert small.status_code == 202, small.content


@pytest.mark.parametrize(("strategy", "chosen"), [("spread", "b-idle"), ("pack", "a-busy")])
def test_spread_or_pack(settings, alice, template, strategy, chosen):
    settings.STREAMSPACE_PLACEMENT = strategy
    busy = agent_with("a-busy", "docker", sessions=5)
    agent_with("b-idle", "docker", sessions=5)
    for _ in range(2):
        make_session(alice, template, busy)
    assert select_agent(template).agent_id == chosen
    for _ in range(3):
        make_session(alice, template, busy)  # a-busy is full now: even pack goes elsewhere
    assert select_agent(template).agent_id == "b-idle"


def test_operators_see_why_a_disabled_template_is_unavailable(operator_client, template):
    Template.objects.filter(pk=template.pk).update(enabled=False)
    assert catalog_entry(operator_client, "xfce")["code"] == TEMPLATE_DISABLED


def test_availability_is_read_only(operator_client, template):
    response = operator_client.patch(
        "/api/v1/templates/xfce", {"availability": {"available": True}, "requires": ["desktop"]}, format="json"
    )
    assert response.status_code == 200 and response.json()["requires"] == ["desktop"]
    assert response.json()["availability"]["code"] == NO_AGENT
    bad = operator_client.patch("/api/v1/templates/xfce", {"requires": ["Not A Feature"]}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"


def test_the_listing_reads_the_agents_once(alice_client, template):
    agent_with("docker-1", "docker")
    agent_with("local", "local", features=[])

    assert alice_client.get("/api/v1/templates").status_code == 200  # the user is cached from here on

    def queries_for(templates: int) -> int:
        Template.objects.bulk_create(
            Template(slug=f"bulk-{templates}-{i}", display_name="x", image="x:1") for i in range(templates)
        )
        with CaptureQueriesContext(connection) as captured:
            assert alice_client.get("/api/v1/templates").status_code == 200
        return len(captured)

    assert queries_for(2) == queries_for(30)


def test_the_portal_shows_the_reason_and_no_launch_button(alice, template, desktop_template):
    alice_browser = Client()
    alice_browser.force_login(alice)
    agent_with("local", "local", features=[])
    page = alice_browser.get("/").content.decode()
    assert 'data-template="xfce" data-available="false"' in page and 'formaction="/launch/xfce"' not in page
    assert 'data-unavailable="feature_missing"' in page and "<code>make desktop-deps</code>" in page
    assert 'formaction="/launch/linux-desktop"' not in page
    response = alice_browser.post("/launch/linux-desktop", HTTP_ACCEPT="application/json")
    assert response.status_code == 409 and response.json()["code"] == FEATURE_MISSING
    response = alice_browser.post("/launch/xfce", follow=True)
    assert "Could not launch XFCE: No agent is registered for docker or kubernetes" in response.content.decode()


def test_a_missing_shipped_image_names_make_images():
    why = refusal(template_of(image=shipped_image("desktop")), candidate(images=["other:latest"], pulls_images=False))
    assert why.code == IMAGE_MISSING and shipped_image("desktop") in why.reason and "`make images`" in why.reason
