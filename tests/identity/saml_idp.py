"""A real SAML 2.0 identity provider on loopback, built on pysaml2's ``Server`` (xmlsec1 signs).

It serves ``/sso/redirect`` (HTTP-Redirect binding): parses the SP's AuthnRequest, shows a login
form, and on ``/sso/login`` answers with a signed assertion through the HTTP-POST binding
(an auto-submitting form, as browsers get it). ``?unsigned=1`` on the login form's action
makes it send an unsigned assertion, ``?sha1=1`` one signed RSA-SHA1 with SHA-1 digests, for
the refusal tests. It signs with RSA-SHA256 and SHA-256 digests otherwise.
"""

from __future__ import annotations

import contextlib
import datetime
import html
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, xmldsig
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import AUTHN_PASSWORD_PROTECTED, NAMEID_FORMAT_PERSISTENT, NameID
from saml2.server import Server

from streamspace.accounts import conf
from tests.identity.peers import free_port

USERS = {
    "saml-bob": {
        "uid": ["saml-bob"],
        "mail": ["saml-bob@example.com"],
        "givenName": ["Bob"],
        "sn": ["Saml"],
        "isMemberOf": ["streamspace-operators", "design"],
    },
    "saml-carol": {"uid": ["saml-carol"], "mail": ["saml-carol@example.com"], "isMemberOf": ["design"]},
}


def make_keypair(directory: Path, name: str) -> tuple[str, str]:
    """A fresh RSA key and self-signed certificate (PEM files) for signing."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = directory / f"{name}.key", directory / f"{name}.crt"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_file), str(cert_file)


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class SamlIdP:
    def __init__(self, directory: Path, port: int, name: str = "idp") -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.directory = directory
        self.name = name
        self.key_file, self.cert_file = make_keypair(directory, name)
        self.server: Server | None = None
        self._httpd: WSGIServer | None = None

    def config(self, sp_metadata_file: str | None) -> dict:
        return {
            "entityid": f"{self.url}/metadata",
            "service": {
                "idp": {
                    "name": "StreamSpace test IdP",
                    "endpoints": {"single_sign_on_service": [(f"{self.url}/sso/redirect", BINDING_HTTP_REDIRECT)]},
                    "policy": {"default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None}},
                    "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                    "want_authn_requests_signed": False,
                    # pysaml2 reads these per service; its default for both is SHA-1.
                    "signing_algorithm": xmldsig.SIG_RSA_SHA256,
                    "digest_algorithm": xmldsig.DIGEST_SHA256,
                }
            },
            "key_file": self.key_file,
            "cert_file": self.cert_file,
            "metadata": {"local": [sp_metadata_file]} if sp_metadata_file else {},
            "xmlsec_binary": "/usr/bin/xmlsec1",
        }

    @property
    def entity_id(self) -> str:
        return f"{self.url}/metadata"

    def metadata_file(self) -> str:
        config = IdPConfig()
        config.load(self.config(None))
        path = self.directory / f"{self.name}-metadata.xml"
        path.write_text(create_metadata_string(None, config=config, sign=False).decode())
        return str(path)

    def start(self, sp_metadata_file: str) -> None:
        config = IdPConfig()
        config.load(self.config(sp_metadata_file))
        self.server = Server(config=config)
        self._httpd = make_server("127.0.0.1", self.port, self.app, handler_class=_Quiet)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    # --- WSGI ---------------------------------------------------------------------------
    def app(self, environ: dict, start_response) -> list[bytes]:
        path = environ["PATH_INFO"]
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if path == "/sso/redirect":
            return self._login_form(query, start_response)
        if path == "/sso/login" and environ["REQUEST_METHOD"] == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            form = {k: v[0] for k, v in parse_qs(environ["wsgi.input"].read(length).decode()).items()}
            return self._answer(
                form, sign=query.get("unsigned") != "1", sha1=query.get("sha1") == "1", start_response=start_response
            )
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]

    def _login_form(self, query: dict, start_response) -> list[bytes]:
        self.server.parse_authn_request(query["SAMLRequest"], BINDING_HTTP_REDIRECT)  # validates it
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(query.get(name, ""))}">'
            for name in ("SAMLRequest", "RelayState")
        )
        body = (
            '<html><body><form method="post" action="/sso/login">'
            f'{hidden}<label>User <input type="text" name="username"></label>'
            '<button type="submit">Sign in</button></form></body></html>'
        )
        start_response("200 OK", [("Content-Type", "text/html")])
        return [body.encode()]

    def _answer(self, form: dict, *, sign: bool, sha1: bool, start_response) -> list[bytes]:
        request = self.server.parse_authn_request(form["SAMLRequest"], BINDING_HTTP_REDIRECT).message
        username = form["username"]
        binding, destination = self.server.pick_binding(
            "assertion_consumer_service", bindings=[BINDING_HTTP_POST], entity_id=request.issuer.text, request=request
        )
        response = self.server.create_authn_response(
            USERS[username],
            in_response_to=request.id,
            destination=destination,
            sp_entity_id=request.issuer.text,
            name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=f"persistent-{username}"),
            userid=username,
            authn={"class_ref": AUTHN_PASSWORD_PROTECTED, "authn_auth": self.url},
            sign_assertion=sign,
            sign_response=False,
            **({"sign_alg": xmldsig.SIG_RSA_SHA1, "digest_alg": xmldsig.DIGEST_SHA1} if sha1 else {}),
        )
        http_args = self.server.apply_binding(
            binding, str(response), destination, form.get("RelayState", ""), response=True
        )
        start_response("200 OK", [("Content-Type", "text/html")])
        return [http_args["data"].encode() if isinstance(http_args["data"], str) else http_args["data"]]


@contextlib.contextmanager
def running_idps(portal: str, directory: Path, names: list[str], **extra_settings: object) -> Iterator[list[SamlIdP]]:
    """IdPs ``names`` on loopback, all in the SP's metadata, with SAML on in the settings."""
    from django.test import override_settings

    peers = [SamlIdP(directory, free_port(), name) for name in names]
    sp_config = conf.saml_config(
        base_url=portal,
        sp_entity_id="",
        idp_metadata_url="",
        idp_metadata_file=peers[0].metadata_file(),
        sp_key_file="",
        sp_cert_file="",
        xmlsec_binary=shutil.which("xmlsec1") or "/usr/bin/xmlsec1",
        debug=False,
    )
    sp_config["metadata"]["local"] = [peer.metadata_file() for peer in peers]
    overrides = override_settings(
        SAML_ENABLED=True,
        SAML_CONFIG=sp_config,
        SAML_ROLE_MAP={"streamspace-operators": "operator"},
        SAML_PROVIDER_NAME="Test SAML",
        **extra_settings,
    )
    overrides.enable()
    try:
        # The IdPs learn about us from our metadata, fetched at its stable URL.
        metadata = httpx.get(f"{portal}/saml2/metadata/", timeout=10)
        assert metadata.status_code == 200, metadata.text[:300]
        sp_metadata = directory / "sp-metadata.xml"
        sp_metadata.write_bytes(metadata.content)
        for peer in peers:
            peer.start(str(sp_metadata))
        yield peers
    finally:
        for peer in peers:
            peer.stop()
        overrides.disable()
