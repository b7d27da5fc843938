"""What agents report in ``capacity`` decides, through the real hub, which templates the
catalog offers and where launches go: a scripted agent (no Docker) reports its images, its
session limit and its features, and changes them in a heartbeat."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from sessions_app.availability import IMAGE_MISSING, NO_CAPACITY, ImageMissing, NoCapacity
from sessions_app.placement import CatalogAvailability
from tests.hub.conftest import launch
from tests.support.waits import until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

HOST = {"cpu_millicores": 4000, "memory_mb": 8192}


def availability(template):
    return database_sync_to_async(lambda: CatalogAvailability().of(template))()


async def available(template) -> bool:
    return (await availability(template)).available


async def test_an_image_reported_in_a_heartbeat_makes_the_template_launchable(make_client, alice, template):
    client = make_client()
    await client.register(capacity={**HOST, "images": ["other:latest"], "pulls_images": False})
    shown = await availability(template)
    assert shown.code == IMAGE_MISSING and "registry.local/xfce:1" in shown.reason
    with pytest.raises(ImageMissing) as refused:
        await launch(alice, template)
    assert refused.value.detail == shown.reason
    # A changed capacity is written at once, not at the next rate-limited heartbeat write.
    await client.send(
        "heartbeat", is_leader=True, capacity={**HOST, "images": ["registry.local/xfce:1"], "pulls_images": False}
    )
    await until(lambda: available(template), what="the image reported")
    session = await launch(alice, template)
    assert (await client.recv_type("command"))["session_id"] == str(session.pk)


async def test_an_agent_at_its_session_limit_takes_no_more(make_client, alice, template):
    client = make_client()
    await client.register(capacity={**HOST, "sessions": 1})
    await launch(alice, template)
    await client.recv_type("command")
    shown = await availability(template)
    assert shown.code == NO_CAPACITY and "maximum of 1 session;" in shown.reason
    with pytest.raises(NoCapacity):
        await launch(alice, template)
    await client.send("heartbeat", is_leader=True, capacity={**HOST, "sessions": 2})
    await until(lambda: available(template), what="the raised limit")
    await launch(alice, template)


async def test_an_older_agent_reporting_nothing_new_is_not_ruled_out(make_client, alice, template):
    client = make_client()
    await client.register(capacity={"cpu_millicores": 1000, "memory_mb": 1024, "sessions": 0})
    assert (await availability(template)).available
    await launch(alice, template)
    assert (await client.recv_type("command"))["action"] == "start_session"
