"""Catalog icons: uploads in the operator panel and the Django admin (checked, stored in the
database, served sandboxed and versioned), and what the catalog shows without a picture."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from sessions_app import icons
from sessions_app.icon_upload import MAX_ICON_BYTES
from sessions_app.models import Template

pytestmark = pytest.mark.django_db

FORM = {
    "slug": "notes",
    "display_name": "Notes",
    "description": "",
    "category": "Office",
    "icon": "📝",
    "platform": "",
    "image": "registry.local/notes:1",
    "command": "[]",
    "default_cpu_millicores": "500",
    "default_memory_mb": "512",
    "streaming_port": "8080",
    "idle_timeout_s": "",
    "env": "{}",
    "volume_mounts": "[]",
    "tags": "[]",
    "requires": "[]",
    "enabled": "on",
}
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8"><rect width="8" height="8" fill="#0f7b6c"/></svg>'


def png(size: int = 8, colour: str = "teal") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "PNG")
    return out.getvalue()


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def upload(client: Client, name: str, data: bytes, slug: str = "new", **extra: str):
    url = "/ops/templates/new" if slug == "new" else f"/ops/templates/{slug}"
    return client.post(url, {**FORM, **extra, "icon_upload": SimpleUploadedFile(name, data)})


@pytest.mark.parametrize(("name", "data", "kind"), [("n.png", png(), "image/png"), ("n.svg", SVG, "image/svg+xml")])
def test_an_uploaded_icon_is_stored_and_served(operator, alice, name, data, kind):
    response = upload(signed_in(operator), name, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    template = Template.objects.get(slug="notes")
    assert (bytes(template.icon_file), template.icon_file_type) == (data, kind)
    src = template.icon_badge["src"]
    assert src == f"/catalog/icons/notes?v={icons.digest(data)}"
    served = signed_in(alice).get(src)
    assert served.status_code == 200 and served.content == data and served["Content-Type"] == kind
    assert "sandbox" in served["Content-Security-Policy"] and served["X-Content-Type-Options"] == "nosniff"
    assert "immutable" in served["Cache-Control"]
    assert "no-cache" in signed_in(alice).get("/catalog/icons/notes?v=old").headers["Cache-Control"]
    assert f'<img class="icon" src="{src}"' in signed_in(alice).get("/").content.decode()


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("n.txt", b"hello, not a picture", "must be a PNG, JPEG, WebP or SVG"),
        (
            "n.gif",
            b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;",
            "GIF icons are not accepted",
        ),
        ("n.svg", b"<svg><unclosed></svg>", "cannot be read"),
        ("n.svg", b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaa">]><svg>&a;</svg>', "cannot be read"),
        ("n.svg", b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"/>', "root element is not"),
        ("n.png", png()[:40], "must be a PNG"),
        ("n.png", b"\x89PNG" + b"0" * MAX_ICON_BYTES, "at most 256 KiB"),
    ],
)
def test_bad_uploads_are_refused_with_the_reason(operator, name, data, message):
    response = upload(signed_in(operator), name, data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Template.objects.filter(slug="notes").exists()


def test_a_new_upload_changes_the_url_and_remove_falls_back(operator, alice):
    client = signed_in(operator)
    upload(client, "a.png", png(colour="red"))
    first = Template.objects.get(slug="notes").icon_badge["src"]
    upload(client, "b.png", png(colour="blue"), slug="notes")
    second = Template.objects.get(slug="notes").icon_badge["src"]
    assert first != second
    client.post("/ops/templates/notes", {**FORM, "icon_remove": "on"})
    template = Template.objects.get(slug="notes")
    assert template.icon_badge == {"emoji": "📝", "label": "N"}
    assert signed_in(alice).get("/catalog/icons/notes").status_code == 404


def test_the_django_admin_uploads_too(admin_user):
    client = signed_in(admin_user)
    template = Template.objects.create(slug="notes", display_name="Notes", image="registry.local/notes:1")
    page = client.get(f"/admin/sessions_app/template/{template.pk}/change/").content.decode()
    assert 'name="icon_upload"' in page and 'enctype="multipart/form-data"' in page
    fields = {
        "slug": "notes",
        "display_name": "Notes",
        "image": "registry.local/notes:1",
        "command": "[]",
        "default_cpu_millicores": "1000",
        "default_memory_mb": "1024",
        "streaming_port": "8080",
        "env": "{}",
        "volume_mounts": "[]",
        "tags": "[]",
        "requires": "[]",
        "gpu": "0",
        "node_selector": "{}",
        "tolerations": "[]",
        "enabled": "on",
        "icon_upload": SimpleUploadedFile("n.svg", SVG),
    }
    response = client.post(f"/admin/sessions_app/template/{template.pk}/change/", fields)
    assert response.status_code == 302, response.content.decode()[:3000]
    template.refresh_from_db()
    assert template.icon_file_type == "image/svg+xml"


def test_icon_urls_and_the_text_badge(alice):
    Template.objects.create(slug="a", display_name="Linux desktop (Selkies)", icon="🖥️", image="x/a:1")
    Template.objects.create(slug="b", display_name="Files", icon="/static/icons/office.svg", image="x/b:1")
    Template.objects.create(slug="c", display_name="web-based IDE", icon="", image="x/c:1")
    html = signed_in(alice).get("/").content.decode()
    assert '<span class="icon__label">LD</span>' in html
    assert '<img class="icon" src="/static/icons/office.svg"' in html
    assert '<span class="icon__label">WB</span>' in html
    assert icons.initials("") == "?"


def test_an_unknown_icon_is_404(alice):
    assert signed_in(alice).get("/catalog/icons/nothing").status_code == 404
