"""The single sign-on settings: OpenID Connect (mozilla-django-oidc) and SAML 2.0 (djangosaml2),
read from the environment (names per docs/architecture.md §3). Each is hidden unless configured.

``streamspace.settings`` imports every name here; what needs other settings (``SAML_CONFIG``,
built with ``DEBUG``) stays there.
"""

from __future__ import annotations

from streamspace.accounts import conf as _idconf
from streamspace.env import envbool, envint, envstr

# --- OpenID Connect ---------------------------------------------------------------------
OIDC_OP_DISCOVERY_URL = envstr("OIDC_OP_DISCOVERY_URL")
OIDC_OP_AUTHORIZATION_ENDPOINT = envstr("OIDC_OP_AUTHORIZATION_ENDPOINT")
OIDC_OP_TOKEN_ENDPOINT = envstr("OIDC_OP_TOKEN_ENDPOINT")
OIDC_OP_USER_ENDPOINT = envstr("OIDC_OP_USER_ENDPOINT")
OIDC_OP_JWKS_ENDPOINT = envstr("OIDC_OP_JWKS_ENDPOINT")
OIDC_RP_CLIENT_ID = envstr("OIDC_RP_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = envstr("OIDC_RP_CLIENT_SECRET")
OIDC_RP_SIGN_ALGO = envstr("OIDC_RP_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = envstr("OIDC_RP_SCOPES", "openid email profile")
OIDC_GROUPS_CLAIM = envstr("OIDC_GROUPS_CLAIM", "groups")
OIDC_USERNAME_CLAIM = envstr("OIDC_USERNAME_CLAIM", "preferred_username")
OIDC_EMAIL_CLAIM = envstr("OIDC_EMAIL_CLAIM", "email")
OIDC_ROLE_MAP = _idconf.parse_role_map("OIDC_ROLE_MAP", envstr("OIDC_ROLE_MAP"))
OIDC_PROVIDER_NAME = envstr("OIDC_PROVIDER_NAME", "single sign-on")
OIDC_USE_PKCE = envbool("OIDC_USE_PKCE", True)
OIDC_TIMEOUT = envint("OIDC_TIMEOUT", 10, minimum=1)
OIDC_AUTHENTICATE_CLASS = "streamspace.accounts.oidc.OIDCLoginView"
OIDC_CALLBACK_CLASS = "streamspace.accounts.oidc.OIDCCallbackView"
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/"
OIDC_ENABLED = bool(OIDC_RP_CLIENT_ID and (OIDC_OP_DISCOVERY_URL or OIDC_OP_AUTHORIZATION_ENDPOINT))

# --- SAML 2.0 (djangosaml2 + xmlsec1) -------------------------------------------------------
SAML_IDP_METADATA_URL = envstr("SAML_IDP_METADATA_URL")
SAML_IDP_METADATA_FILE = envstr("SAML_IDP_METADATA_FILE")
SAML_SP_ENTITY_ID = envstr("SAML_SP_ENTITY_ID")
SAML_ENABLED = bool(SAML_IDP_METADATA_URL or SAML_IDP_METADATA_FILE)
SAML_ATTRIBUTE_MAP = _idconf.DEFAULT_SAML_ATTRIBUTE_MAP | _idconf.parse_json_map(
    "SAML_ATTRIBUTE_MAP", envstr("SAML_ATTRIBUTE_MAP")
)
SAML_ROLE_MAP = _idconf.parse_role_map("SAML_ROLE_MAP", envstr("SAML_ROLE_MAP"))
SAML_PROVIDER_NAME = envstr("SAML_PROVIDER_NAME", "SAML single sign-on")
# How long IdP metadata is used before it is read again (URL or file); a failed refresh keeps
# the last good copy.
STREAMSPACE_SAML_METADATA_TTL_S = envint("STREAMSPACE_SAML_METADATA_TTL_S", 3600, minimum=1)
# The IdP that SAML users recorded before identities named their IdP belong to (needed only
# with several IdPs in the metadata; with one, it is that one).
SAML_LEGACY_IDP_ENTITY_ID = envstr("SAML_LEGACY_IDP_ENTITY_ID")
SAML_CONFIG_LOADER = "streamspace.accounts.saml.config_loader"
SAML_ACS_FAILURE_RESPONSE_FUNCTION = "streamspace.accounts.saml.acs_failure"
SAML_CREATE_UNKNOWN_USER = True
SAML_ATTRIBUTE_MAPPING: dict[str, tuple[str, ...]] = {}  # mapping is ours (SAML_ATTRIBUTE_MAP)
SAML_SESSION_COOKIE_NAME = "saml_session"
SAML_CSP_HANDLER = ""  # CSP is set by the portal/proxy, not per SAML view
