"""``/api/v1/sessions/<id>/shares``: who may list, grant and revoke (owner, recipient by role,
stranger, operator, admin), what a share lets its recipient do through the rest of the API,
malformed bodies, links, and the audit trail (docs/architecture.md §22)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Group

from sessions_app import access
from sessions_app.models import Session, SessionState, Share
from sessions_app.share_links import digest, find_link
from streamspace.accounts.tokens import create_token
from streamspace.audit.models import AuditEvent
from tests.support.clients import client_for
from tests.support.factories import make_session, make_user, share

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(alice, template, docker_agent):
    return make_session(alice, template, docker_agent)


@pytest.fixture
def carol(db):
    return make_user("carol")


def shares_url(session) -> str:
    return f"/api/v1/sessions/{session.pk}/shares"


def test_owner_shares_with_a_user_and_changes_the_role(running, alice_client, bob):
    created = alice_client.post(shares_url(running), {"user": "bob", "role": "viewer"}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["kind"] == "user" and body["user"] == "bob" and body["role"] == "viewer" and not body["may_manage"]
    again = alice_client.post(shares_url(running), {"user": "bob", "role": "collaborator"}, format="json")
    assert again.status_code == 200 and again.json()["id"] == body["id"] and again.json()["role"] == "collaborator"
    assert Share.objects.filter(session=running).count() == 1
    listed = alice_client.get(shares_url(running)).json()
    assert [s["user"] for s in listed["shares"]] == ["bob"] and listed["connected"] == []


def test_a_link_answers_its_url_once_and_stores_only_a_digest(running, alice_client):
    answer = alice_client.post(
        shares_url(running), {"link": True, "role": "viewer", "expires_in_s": 600}, format="json"
    )
    assert answer.status_code == 201, answer.content
    url = urlsplit(answer.json()["url"])
    assert url.hostname == f"{running.pk}.localhost" and url.path == "/" and url.query.startswith("share=")
    key = url.query.removeprefix("share=")
    share_row = Share.objects.get(pk=answer.json()["id"])
    assert share_row.link_digest == digest(key) and key not in share_row.link_digest
    assert find_link(key, running.pk) == share_row and find_link(key + "x", running.pk) is None
    listed = alice_client.get(shares_url(running)).json()["shares"]
    assert listed[0]["kind"] == "link" and "url" not in listed[0] and listed[0]["expires_at"]


def test_an_expired_link_is_no_link(running, alice_client):
    answer = alice_client.post(shares_url(running), {"link": True, "role": "viewer", "expires_in_s": 60}, format="json")
    key = urlsplit(answer.json()["url"]).query.removeprefix("share=")
    Share.objects.filter(pk=answer.json()["id"]).update(expires_at=running.created_at)
    assert find_link(key, running.pk) is None


def test_group_members_see_the_session(running, alice_client, bob, carol):
    team = Group.objects.create(name="team")
    bob.groups.add(team)
    assert alice_client.post(shares_url(running), {"group": "team", "role": "viewer"}, format="json").status_code == 201
    assert client_for(bob).get(f"/api/v1/sessions/{running.pk}").status_code == 200
    assert client_for(carol).get(f"/api/v1/sessions/{running.pk}").status_code == 404
    carol.groups.add(team)  # a member who joins later is covered too
    assert client_for(carol).get(f"/api/v1/sessions/{running.pk}").status_code == 200
    assert access.role_of(carol, running) == "viewer"


@pytest.mark.parametrize(
    ("body", "code", "mentions"),
    [
        ({}, "invalid", "exactly one recipient"),
        ({"user": "bob", "group": "team"}, "invalid", "exactly one recipient"),
        ({"user": "bob", "link": True, "expires_in_s": 600}, "invalid", "exactly one recipient"),
        ({"link": False}, "invalid", "exactly one recipient"),
        ({"link": True}, "invalid", "lifetime"),
        ({"link": True, "expires_in_s": 10}, "invalid", "expires_in_s"),
        ({"link": True, "expires_in_s": 10**9}, "invalid", "At most"),
        ({"link": True, "expires_in_s": "soon"}, "invalid", "expires_in_s"),
        ({"link": True, "expires_in_s": 600, "may_manage": True}, "invalid", "never manages"),
        ({"user": "bob", "expires_in_s": 600}, "invalid", "Only a link expires"),
        ({"user": "bob", "role": "owner"}, "invalid", "role"),
        ({"user": "bob", "colour": "red"}, "invalid", "colour"),
        ({"user": "nobody"}, "unknown_user", "nobody"),
        ({"group": "nobody"}, "unknown_group", "nobody"),
        ({"user": "alice"}, "share_with_owner", "owner"),
        ({"user": ["bob"]}, "invalid", "user"),
    ],
)
def test_malformed_bodies_are_400_with_a_reason(running, alice_client, bob, body, code, mentions):
    answer = alice_client.post(shares_url(running), body, format="json")
    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] == code and mentions in answer.json()["detail"]
    assert not Share.objects.filter(session=running).exists()


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"bob"', b"{not json", b"null"])
def test_bodies_that_are_no_object_are_400(running, alice_client, raw):
    answer = alice_client.post(shares_url(running), raw, content_type="application/json")
    assert answer.status_code == 400 and answer.json()["code"] in ("invalid", "malformed_request")


def test_a_stopped_session_cannot_be_shared(alice, template, docker_agent, alice_client, bob):
    stopped = make_session(alice, template, docker_agent, state=SessionState.STOPPED)
    answer = alice_client.post(shares_url(stopped), {"user": "bob"}, format="json")
    assert answer.status_code == 409 and answer.json()["code"] == "session_ended"


# --- authorization: owner, recipient by role, stranger, operator, admin --------------------------
PEOPLE = ("owner", "viewer", "collaborator", "manager", "stranger", "operator", "admin")


@pytest.fixture
def people(alice, bob, carol, operator, admin_user, running):
    dave, erin = make_user("dave"), make_user("erin")
    share(running, bob, role="viewer")
    share(running, carol, role="collaborator")
    share(running, dave, role="viewer", may_manage=True)
    return {
        "owner": alice,
        "viewer": bob,
        "collaborator": carol,
        "manager": dave,
        "stranger": erin,
        "operator": operator,
        "admin": admin_user,
    }


SHARERS = {"owner", "operator", "admin"}


@pytest.mark.parametrize("who", PEOPLE)
def test_who_lists_grants_and_revokes_shares(who, people, running):
    client = client_for(people[who])
    target = Share.objects.get(session=running, user=people["viewer"])
    expected_refusal = 404 if who == "stranger" else 403
    listed = client.get(shares_url(running))
    granted = client.post(shares_url(running), {"user": "erin" if who != "stranger" else "dave"}, format="json")
    revoked = client.delete(f"{shares_url(running)}/{target.pk}")
    if who in SHARERS:
        assert (listed.status_code, granted.status_code, revoked.status_code) == (200, 201, 204)
        assert not Share.objects.filter(pk=target.pk).exists()
    else:
        assert {listed.status_code, granted.status_code, revoked.status_code} == {expected_refusal}
        assert Share.objects.filter(pk=target.pk).exists() and Share.objects.filter(session=running).count() == 3


@pytest.mark.parametrize("who", PEOPLE)
def test_what_each_person_may_do_to_the_session(who, people, running, template, docker_agent):
    client = client_for(people[who])
    sees = who != "stranger"
    manages = who in SHARERS | {"manager"}
    assert client.get(f"/api/v1/sessions/{running.pk}").status_code == (200 if sees else 404)
    assert client.get(f"/api/v1/sessions/{running.pk}/viewer-url").status_code == (200 if sees else 404)
    assert client.get(f"/api/v1/sessions/{running.pk}/logs").status_code == (200 if manages else 404)
    hibernate = client.post(f"/api/v1/sessions/{running.pk}/hibernate")
    assert hibernate.status_code == (202 if manages else 404)
    state = Session.objects.get(pk=running.pk).state
    assert state == (SessionState.HIBERNATING if manages else SessionState.RUNNING)
    assert access.may_interact(people[who], running) == (who in SHARERS | {"collaborator"})


def test_a_recipients_viewer_url_is_a_recorded_use(people, running):
    assert client_for(people["viewer"]).get(f"/api/v1/sessions/{running.pk}/viewer-url").status_code == 200
    use = AuditEvent.objects.get(action="share.use")
    assert use.actor_id == people["viewer"].pk and use.details["role"] == "viewer"
    client_for(people["owner"]).get(f"/api/v1/sessions/{running.pk}/viewer-url")
    assert AuditEvent.objects.filter(action="share.use").count() == 1  # the owner's own use is none


def test_a_read_token_lists_but_never_grants(running, alice, bob):
    _, key = create_token(alice, name="read", scope="read")
    client = client_for(None)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(shares_url(running)).status_code == 200
    assert client.post(shares_url(running), {"user": "bob"}, format="json").status_code == 403


def test_revoking_ends_the_recipients_view(running, alice_client, bob):
    share_id = alice_client.post(shares_url(running), {"user": "bob"}, format="json").json()["id"]
    assert client_for(bob).get(f"/api/v1/sessions/{running.pk}").status_code == 200
    assert alice_client.delete(f"{shares_url(running)}/{share_id}").status_code == 204
    assert client_for(bob).get(f"/api/v1/sessions/{running.pk}").status_code == 404
    assert alice_client.delete(f"{shares_url(running)}/{share_id}").status_code == 404  # gone
    actions = list(
        AuditEvent.objects.filter(action__startswith="share.").order_by("pk").values_list("action", flat=True)
    )
    assert actions == ["share.grant", "share.revoke"]


def test_a_share_of_another_session_is_not_found(running, alice, template, docker_agent, alice_client, bob):
    other = make_session(alice, template, docker_agent)
    (foreign,) = share(other, bob)
    assert alice_client.delete(f"{shares_url(running)}/{foreign.pk}").status_code == 404
    assert Share.objects.filter(pk=foreign.pk).exists()


def test_shares_end_when_the_session_stops(running, alice_client, bob):
    alice_client.post(shares_url(running), {"user": "bob"}, format="json")
    alice_client.post(shares_url(running), {"link": True, "role": "viewer", "expires_in_s": 600}, format="json")
    assert alice_client.delete(f"/api/v1/sessions/{running.pk}").status_code == 202
    assert not Share.objects.filter(session=running).exists()
    ended = AuditEvent.objects.filter(action="share.revoke")
    assert ended.count() == 2 and all(e.details["reason"] == "session_stopped" for e in ended)


def test_shared_with_me_lists_others_sessions_only(running, alice, bob, template, docker_agent):
    (bobs_share,) = share(running, bob, role="viewer")
    own = make_session(bob, template, docker_agent)
    share(own, bob)  # shared with its owner: still his own, not "shared with me"
    assert list(Session.objects.shared_with(bob)) == [running]
    assert list(Session.objects.shared_with(alice)) == []
    bobs_share.delete()
    assert list(Session.objects.shared_with(bob)) == []
