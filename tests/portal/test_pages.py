"""Portal pages: access rules, what each page shows, actions, and garbage input."""

from __future__ import annotations

import pytest

from plugins_app.models import Plugin
from sessions_app.models import Session, SessionState, Template, UserQuota
from streamspace.audit.models import AuditEvent
from tests.portal.conftest import browser_for, make_session
from tests.support.factories import share

pytestmark = pytest.mark.django_db

USER_PAGES = ["/", "/sessions/", "/sessions/?history=1"]
OPERATOR_PAGES = ["/ops/", "/ops/agents/", "/ops/sessions/", "/ops/templates/", "/ops/templates/new"]
ADMIN_PAGES = ["/ops/users/", "/ops/plugins/", "/ops/audit/"]


@pytest.mark.parametrize("path", USER_PAGES + OPERATOR_PAGES + ADMIN_PAGES)
def test_anonymous_is_sent_to_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "login" in response["Location"] and "next=" in response["Location"]


@pytest.mark.parametrize("path", OPERATOR_PAGES + ADMIN_PAGES)
def test_plain_users_cannot_open_operator_pages(alice_browser, path):
    assert alice_browser.get(path).status_code == 403


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_operators_cannot_open_admin_pages(operator_browser, path):
    assert operator_browser.get(path).status_code == 403


@pytest.mark.parametrize("path", USER_PAGES + OPERATOR_PAGES + ADMIN_PAGES)
def test_admin_opens_every_page(admin_browser, path, template, local_agent):
    response = admin_browser.get(path)
    assert response.status_code == 200
    assert b'<main id="main"' in response.content


def test_operator_nav_only_for_operators(alice_browser, operator_browser):
    assert b'href="/ops/"' not in alice_browser.get("/").content
    assert b'href="/ops/"' in operator_browser.get("/").content


# --- catalog ----------------------------------------------------------------------------


def test_catalog_lists_enabled_templates_with_quota(alice_browser, template, demo_template, local_agent):
    Template.objects.create(slug="hidden", display_name="Hidden one", image="x/y:1", enabled=False)
    page = alice_browser.get("/").content.decode()
    assert "XFCE" in page and "Demo canvas" in page and "Hidden one" not in page
    assert 'formaction="/launch/demo-canvas"' in page
    # No docker agent: XFCE is shown, unavailable, without a Launch button.
    assert 'formaction="/launch/xfce"' not in page and 'data-unavailable="no_agent"' in page
    assert "Sessions</span>" in page and "0 / 3" in page  # default quota: 3 sessions


def test_catalog_search_and_category(alice_browser, template, demo_template):
    page = alice_browser.get("/", {"q": "tiny"}).content.decode()
    assert "Demo canvas" in page and "XFCE" not in page
    page = alice_browser.get("/", {"category": "Desktops"}).content.decode()
    assert "XFCE" in page and "Demo canvas" not in page
    assert alice_browser.get("/", {"q": "x" * 5000, "category": "\x00"}).status_code == 200


# --- launch -----------------------------------------------------------------------------


def test_launch_creates_a_pending_session_and_opens_progress(alice_browser, alice, demo_template, local_agent):
    response = alice_browser.post("/launch/demo-canvas")
    session = Session.objects.get(user=alice)
    assert session.state == SessionState.PENDING and session.agent == local_agent
    assert response.status_code == 302 and response["Location"] == f"/sessions/{session.pk}/"
    page = alice_browser.get(response["Location"]).content.decode()
    assert "Queued for an agent" in page and f'data-session-id="{session.pk}"' in page


def test_launch_as_json(alice_browser, demo_template, local_agent):
    response = alice_browser.post("/launch/demo-canvas", HTTP_ACCEPT="application/json")
    assert response.status_code == 202 and response.json()["state"] == "pending"


def test_launch_over_quota_explains_why(alice_browser, alice, demo_template, local_agent):
    UserQuota.objects.create(user=alice, max_sessions=0)
    response = alice_browser.post("/launch/demo-canvas", follow=True)
    assert response.redirect_chain[-1][0] == "/"
    assert "exceed your max sessions quota" in response.content.decode()
    assert not Session.objects.exists()
    json_response = alice_browser.post("/launch/demo-canvas", HTTP_ACCEPT="application/json")
    assert json_response.status_code == 403 and json_response.json()["code"] == "quota_exceeded"


def test_launch_without_agent_explains_why(alice_browser, demo_template):
    response = alice_browser.post("/launch/demo-canvas", follow=True)
    assert "Could not launch Demo canvas" in response.content.decode()


def test_launch_unknown_or_disabled_template_is_404(alice_browser, demo_template):
    demo_template.enabled = False
    demo_template.save()
    assert alice_browser.post("/launch/demo-canvas").status_code == 404
    assert alice_browser.post("/launch/nope").status_code == 404
    assert alice_browser.get("/launch/demo-canvas").status_code == 405


def test_launch_needs_csrf(alice, demo_template, local_agent):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post("/launch/demo-canvas").status_code == 403


# --- my sessions and actions ---------------------------------------------------------------


def test_my_sessions_shows_only_mine(alice_browser, alice, bob, demo_template, local_agent):
    mine = make_session(alice, demo_template, local_agent, name="alice-one")
    make_session(bob, demo_template, local_agent, name="bob-one")
    make_session(alice, demo_template, local_agent, name="alice-old", state=SessionState.STOPPED)
    page = alice_browser.get("/sessions/").content.decode()
    assert f'data-session-id="{mine.pk}"' in page and "bob-one" not in page and "alice-old" not in page
    assert "alice-old" in alice_browser.get("/sessions/?history=1").content.decode()


def test_hibernate_wake_stop_through_the_portal(alice_browser, alice, demo_template, local_agent):
    session = make_session(alice, demo_template, local_agent)
    response = alice_browser.post(f"/sessions/{session.pk}/hibernate", HTTP_ACCEPT="application/json")
    assert response.status_code == 202 and response.json()["state"] == "hibernating"
    Session.objects.filter(pk=session.pk).update(state=SessionState.HIBERNATED)
    response = alice_browser.post(f"/sessions/{session.pk}/wake")
    assert response.status_code == 302 and response["Location"] == "/sessions/"
    assert Session.objects.get(pk=session.pk).state == SessionState.WAKING
    alice_browser.post(f"/sessions/{session.pk}/stop")
    assert Session.objects.get(pk=session.pk).state == SessionState.STOPPING
    actions = set(AuditEvent.objects.filter(target_id=str(session.pk)).values_list("action", flat=True))
    assert {"session.hibernate", "session.wake", "session.stop"} <= actions


def test_illegal_action_is_a_message_not_a_crash(alice_browser, alice, demo_template, local_agent):
    session = make_session(alice, demo_template, local_agent, state=SessionState.STOPPED)
    response = alice_browser.post(f"/sessions/{session.pk}/hibernate", follow=True)
    assert response.status_code == 200 and "Could not hibernate" in response.content.decode()
    json_response = alice_browser.post(f"/sessions/{session.pk}/hibernate", HTTP_ACCEPT="application/json")
    assert json_response.status_code == 409 and json_response.json()["code"]


def test_actions_on_someone_elses_session_are_404(bob_browser, alice, demo_template, local_agent):
    session = make_session(alice, demo_template, local_agent)
    for action in ("hibernate", "wake", "stop"):
        assert bob_browser.post(f"/sessions/{session.pk}/{action}").status_code == 404
    assert bob_browser.get(f"/sessions/{session.pk}/").status_code == 404
    assert bob_browser.get(f"/sessions/{session.pk}/view").status_code == 404
    assert Session.objects.get(pk=session.pk).state == SessionState.RUNNING


def test_unknown_action_and_bad_ids(alice_browser, alice, demo_template, local_agent):
    session = make_session(alice, demo_template, local_agent)
    assert alice_browser.post(f"/sessions/{session.pk}/explode").status_code == 404
    assert alice_browser.get("/sessions/not-a-uuid/").status_code == 404


def test_next_parameter_cannot_redirect_off_site(alice_browser, alice, demo_template, local_agent):
    session = make_session(alice, demo_template, local_agent)
    response = alice_browser.post(f"/sessions/{session.pk}/stop", {"next": "https://evil.example/"})
    assert response["Location"] == "/sessions/"


# --- viewer ------------------------------------------------------------------------------


def test_viewer_page_has_the_toolbar_and_endpoints(alice_browser, alice, demo_template, local_agent):
    session = make_session(alice, demo_template, local_agent)
    page = alice_browser.get(f"/sessions/{session.pk}/view").content.decode()
    assert f'data-viewer-url-endpoint="/api/v1/sessions/{session.pk}/viewer-url"' in page
    for control in ("data-fullscreen", 'data-action="hibernate"', 'data-action="stop"', "data-reconnect", ">Back<"):
        assert control in page


def test_opening_a_hibernated_session_wakes_it(alice_browser, alice, demo_template, local_agent):
    session = make_session(alice, demo_template, local_agent, state=SessionState.HIBERNATED)
    assert alice_browser.get(f"/sessions/{session.pk}/view").status_code == 200
    assert Session.objects.get(pk=session.pk).state == SessionState.WAKING


def test_stopped_session_viewer_goes_back_to_the_list(alice_browser, alice, demo_template, local_agent):
    session = make_session(alice, demo_template, local_agent, state=SessionState.STOPPED)
    response = alice_browser.get(f"/sessions/{session.pk}/view")
    assert response.status_code == 302 and response["Location"] == "/sessions/"


def test_shared_session_viewer_opens_without_controls(bob, alice, demo_template, local_agent):
    session = make_session(alice, demo_template, local_agent)
    share(session, bob)
    page = browser_for(bob).get(f"/sessions/{session.pk}/view").content.decode()
    assert "data-viewer" in page and 'data-action="stop"' not in page


# --- theme ----------------------------------------------------------------------------------


def test_theme_plugin_sets_name_logo_and_colours(alice_browser):
    # Written straight to the row (as the admin or the ORM may), past the plugin API's schema.
    Plugin.objects.create(
        name="acme",
        type="theme",
        config={
            "product_name": "Acme Cloud",
            "logo_url": "/static/img/acme.svg",
            "colors": {"primary": "#ff0000", "bg": "red;}</style><script>alert(1)</script>"},
        },
    )
    page = alice_browser.get("/").content.decode()
    assert "<title>Catalog · Acme Cloud</title>" in page and "/static/img/acme.svg" in page
    assert "--ss-primary: #ff0000;" in page
    assert "alert(1)" not in page and "--ss-bg: #f4f6fa" not in page


@pytest.mark.parametrize("config", [["not", "an", "object"], "theme", {"colors": ["#ff0000"], "product_name": ""}])
def test_a_broken_theme_plugin_falls_back_to_defaults(alice_browser, config):
    Plugin.objects.create(name="broken", type="theme", config=config)
    page = alice_browser.get("/").content.decode()
    assert "<title>Catalog · StreamSpace</title>" in page and "--ss-primary: #2457c5;" in page


@pytest.mark.parametrize("path", ["/static/css/portal.css", "/static/js/portal.js", "/static/js/viewer.js"])
def test_static_assets_are_served_without_collectstatic(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert b"".join(response.streaming_content if response.streaming else [response.content])


def test_extension_menu_entries_appear_in_the_nav(alice_browser, monkeypatch):
    from plugins_app import registry

    monkeypatch.setattr(
        registry, "menu_entries", lambda user: [{"label": "Reports", "url": "/reports/", "icon": "", "plugin": "rep"}]
    )
    page = alice_browser.get("/").content.decode()
    assert '<a href="/reports/" data-plugin="rep">Reports</a>' in page
