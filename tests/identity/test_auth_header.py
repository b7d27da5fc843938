"""The one ``Authorization`` parser, and that the API's two schemes read headers through it."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from streamspace.api.auth_header import bearer_token, parse_authorization

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMTIz"


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {JWT}",
        f"bearer {JWT}",
        f"BEARER {JWT}",
        f"BeArEr {JWT}",
        f"Bearer    {JWT}",
        f"Bearer\t{JWT}",
        f"  Bearer {JWT}  ",
        f"Bearer {JWT}\t",
        f"Bearer {JWT}".encode(),
    ],
)
def test_bearer_token_is_read_whatever_the_scheme_case_and_spacing(value):
    assert bearer_token(value) == JWT


@pytest.mark.parametrize("token", ["ssa_abc-DEF_123", "a.b.c", "abc+/~.-_", "YWJj==", "x"])
def test_every_token68_is_a_token(token):
    assert bearer_token(f"Bearer {token}") == token


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        b"",
        "Bearer",
        "Bearer ",
        "Bearer     ",
        b"Bearer\t",
        "Bearer a b",  # two words
        "Bearer ab=c",  # "=" only at the end
        "Bearer =abc",
        "Bearer a,b",
        "Bearer tok\r\nX-Injected: 1",
        "Bearer tøken",  # latin-1, not ASCII
        "Bearer токен",  # not latin-1 at all
        "Bearer tok\u2028",
        b"Bearer \xff\xfe",
        "Bearer t\u00e9".encode(),  # UTF-8 octets
        f"Basic {JWT}",
        f"Token {JWT}",
        f"Bearerx {JWT}",
        f"Bearer: {JWT}",
        f"X Bearer {JWT}",
        JWT,
    ],
)
def test_anything_else_is_no_token(value):
    assert bearer_token(value) == ""


def test_parse_authorization_names_the_scheme_even_when_the_credential_is_bad():
    assert parse_authorization("Token ssp_ab_cd") == ("token", "ssp_ab_cd")
    assert parse_authorization("TOKEN") == ("token", "")
    assert parse_authorization("Token a b") == ("token", "")
    assert parse_authorization(b"Basic \xe9") == ("basic", "")
    assert parse_authorization("   ") == ("", "")
    assert parse_authorization(" \u00e9 abc") == ("", "")


@pytest.mark.django_db
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_api_takes_a_jwt_whatever_the_scheme_case(alice, scheme):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme}  {AccessToken.for_user(alice)} ")
    response = client.get("/api/v1/users/me")
    assert response.status_code == 200 and response.json()["username"] == "alice"


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["Bearer", "Bearer a b", "Bearer t\u00e9", "Token", "Token a b", "token t\u00e9"])
def test_the_api_refuses_a_malformed_header_of_its_schemes_with_401(alice, value):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=value)
    response = client.get("/api/v1/users/me")
    assert response.status_code == 401
    assert response.json()["code"] in ("authentication_failed", "bad_authorization_header")


@pytest.mark.django_db
def test_another_scheme_leaves_the_request_anonymous(alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {AccessToken.for_user(alice)}")
    response = client.get("/api/v1/users/me")
    assert response.status_code == 401 and response.json()["code"] == "not_authenticated"
