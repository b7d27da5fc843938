"""StreamSpace control-plane settings, driven by environment variables (docs/architecture.md §3).

With nothing set this is the embedded default: SQLite under ``STREAMSPACE_DATA_DIR``, the
in-memory channel layer and a locmem cache. ``DATABASE_URL`` and ``REDIS_URL`` switch to the
production topology (PostgreSQL with a psycopg pool, channels-redis, Redis cache).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from agent_runtime.redis_client import RedisTarget, dead_peer_options
from streamspace.api.client_ip import parse_trusted_proxies
from streamspace.env import ConfigError, envbool, envint, envlist, envstr

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(envstr("STREAMSPACE_DATA_DIR", str(BASE_DIR / ".streamspace"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = envbool("DEBUG", True)


def _secret_key() -> str:
    key = envstr("SECRET_KEY")
    if key:
        return key
    if not DEBUG:
        raise ConfigError("SECRET_KEY is required when DEBUG is off")
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "streamspace.localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])
# Reverse proxies (addresses or CIDR networks, comma-separated) whose X-Forwarded-For is
# believed; the client is the rightmost address that is not one of them. Empty: forwarded
# headers are ignored and the TCP peer is the client (streamspace/api/client_ip.py).
STREAMSPACE_TRUSTED_PROXIES = parse_trusted_proxies(envlist("STREAMSPACE_TRUSTED_PROXIES", []))

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_prometheus",
    "streamspace.accounts",
    "streamspace.audit",
    "sessions_app",
    "agents_app",
    "plugins_app",
    "streamspace.portal",  # web portal + operator panel (templates/portal/)
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # serves static/ (portal CSS/JS) under daphne
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "streamspace.api.nul_query.RejectNulQueryMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "streamspace.accounts.middleware.AuthenticationMiddleware",  # Django's, user via accounts.user_cache
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "streamspace.urls"
ASGI_APPLICATION = "streamspace.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "plugins_app.context_processors.menu",
                "streamspace.portal.context_processors.portal",  # theme + navigation for base.html
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DATABASE_URL = envstr("DATABASE_URL")
if DATABASE_URL:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=0)
    if _db["ENGINE"] == "django.db.backends.postgresql" and envbool("DATABASE_POOL", True):
        # Under ASGI, a new connection per request costs much of the throughput: pool them
        # (docs/architecture.md §14).
        _db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": envint("DATABASE_POOL_MIN", 2, minimum=0),
            "max_size": envint("DATABASE_POOL_MAX", 20, minimum=1),
            "timeout": envint("DATABASE_POOL_TIMEOUT", 30, minimum=1),
        }
    DATABASES = {"default": _db}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "streamspace.sqlite3",
            "OPTIONS": {
                # WAL + a busy timeout let the agent, the sweeps and requests share the file.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, cache -------------------------------------------------------
# REDIS_SENTINELS (comma-separated host:port) + REDIS_SENTINEL_MASTER: the master is whichever
# server the Sentinels name; REDIS_URL then gives only password, user, db and TLS (its host:port
# is ignored) and may be left unset (db 0, no password). Every client is made by
# streamspace/redis_client.py from REDIS_TARGET (agent_runtime/redis_client.py parses).
REDIS_TARGET = RedisTarget.build(envstr("REDIS_URL"), envstr("REDIS_SENTINELS"), envstr("REDIS_SENTINEL_MASTER"))
REDIS_URL = REDIS_TARGET.url if REDIS_TARGET else ""
REDIS_SENTINELS = list(REDIS_TARGET.sentinels) if REDIS_TARGET else []
REDIS_SENTINEL_MASTER = REDIS_TARGET.master_name if REDIS_TARGET else ""
if REDIS_TARGET:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "streamspace.channel_layer.RedisChannelLayer",  # send in one trip
            "CONFIG": {
                # socket_timeout=None: see channels_redis #422 (docs/architecture.md §14); a dead
                # master is noticed by the TCP options channels_host adds (§13.4).
                "hosts": [REDIS_TARGET.channels_host(socket_timeout=None)],
                "capacity": envint("CHANNEL_LAYER_CAPACITY", 1000, minimum=10),
                "expiry": 60,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "streamspace:cache",
            # With Sentinels the pool asks them for the master (LOCATION gives nothing but the db)
            # and sets the dead-master options itself; without, they are given here.
            "OPTIONS": (
                {"pool_class": "streamspace.redis_client.SentinelCachePool"}
                if REDIS_SENTINELS
                else REDIS_TARGET.socket_options()
            ),
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Portal sessions are read from Redis when it is there (written through to the database, so
# they survive a Redis restart); every process must share that cache, so not without Redis.
SESSION_ENGINE = "streamspace.accounts.session_store" if REDIS_URL else "django.contrib.sessions.backends.db"
# Seconds a user stays in the cache for authentication (streamspace/accounts/user_cache.py).
# Only a cache every process shares (Redis) can be told of a change made elsewhere: 0 without.
STREAMSPACE_USER_CACHE_S = envint("STREAMSPACE_USER_CACHE_S", 60 if REDIS_URL else 0, minimum=0)

# --- Auth ------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "account_login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "streamspace.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "streamspace.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["streamspace.api.renderers.JSONRenderer"],  # DRF's bytes, orjson's speed
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=envint("JWT_ACCESS_MINUTES", 15, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=envint("JWT_REFRESH_DAYS", 7, minimum=1)),
    "AUTH_HEADER_TYPES": ("Bearer",),
    "UPDATE_LAST_LOGIN": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "StreamSpace API",
    "DESCRIPTION": "Control-plane API: catalog, sessions, quotas, agents, plugins and audit.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI assets served from the sidecar package: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Identity and security (streamspace/accounts: allauth, MFA, SSO, tokens, lockout) ----
import shutil as _shutil  # noqa: E402

from streamspace.accounts import conf as _idconf  # noqa: E402

INSTALLED_APPS += [
    "allauth",
    "allauth.account",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "rest_framework_simplejwt.token_blacklist",
    "mozilla_django_oidc",
    "djangosaml2",
    "corsheaders",
    "axes",  # keep last: its checks look at the backends and middleware above
]
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.common.CommonMiddleware"), "corsheaders.middleware.CorsMiddleware"
)
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.contrib.sessions.middleware.SessionMiddleware") + 1,
    "djangosaml2.middleware.SamlSessionMiddleware",
)
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.contrib.messages.middleware.MessageMiddleware") + 1,
    "allauth.account.middleware.AccountMiddleware",
)
MIDDLEWARE.insert(
    MIDDLEWARE.index("allauth.account.middleware.AccountMiddleware") + 1,
    "streamspace.accounts.middleware.MfaEnrolmentMiddleware",
)
MIDDLEWARE.append("axes.middleware.AxesMiddleware")
TEMPLATES[0]["OPTIONS"]["context_processors"].append("streamspace.accounts.context_processors.identity")

AUTHENTICATION_BACKENDS = [
    "streamspace.accounts.security.LoginThrottleBackend",  # first: axes' lockout + per-account backoff
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
    "streamspace.accounts.oidc.OIDCBackend",  # inert unless OIDC_ENABLED
    "streamspace.accounts.saml.SAMLBackend",  # inert unless a verified SAML assertion is passed
]
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = [
    "streamspace.accounts.authentication.StreamSpaceJWTAuthentication",
    "streamspace.accounts.authentication.ApiTokenAuthentication",
    "streamspace.accounts.authentication.StreamSpaceSessionAuthentication",
]
SIMPLE_JWT.update({"ROTATE_REFRESH_TOKENS": True, "BLACKLIST_AFTER_ROTATION": True})

# Local accounts (django-allauth). Self sign-up is off unless STREAMSPACE_SIGNUP_ENABLED.
STREAMSPACE_SIGNUP_ENABLED = envbool("STREAMSPACE_SIGNUP_ENABLED", False)
ACCOUNT_ADAPTER = "streamspace.accounts.adapter.AccountAdapter"
ACCOUNT_FORMS = {"login": "streamspace.accounts.forms.LoginForm"}
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = envstr("ACCOUNT_EMAIL_VERIFICATION", "optional")
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_RATE_LIMITS = {"login_failed": False}  # one lockout policy for every login path: axes
ACCOUNT_PREVENT_ENUMERATION = True
LOGIN_REDIRECT_URL = "/"
ACCOUNT_LOGOUT_REDIRECT_URL = "/accounts/login/"
EMAIL_HOST = envstr("EMAIL_HOST")
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = envint("EMAIL_PORT", 587, minimum=1)
EMAIL_HOST_USER = envstr("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = envstr("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "StreamSpace <noreply@localhost>")

# Second factor (django-otp): none | staff (admins and operators) | all.
STREAMSPACE_MFA_REQUIRED = _idconf.parse_mfa_policy(envstr("STREAMSPACE_MFA_REQUIRED", "none"))
OTP_TOTP_ISSUER = envstr("OTP_TOTP_ISSUER", "StreamSpace")

# Login lockout (django-axes): per submitted username + client address, so the answer is the
# same whether or not the account exists and one attacker cannot lock everyone out.
# Attempts without a username (SSO callbacks) are not axes' business (accounts/security.py).
AXES_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=envint("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Attempts refused during a lockout are not counted, so retrying cannot prolong it forever.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_DISABLE_ACCESS_LOG = True  # successes are in the audit log
AXES_USERNAME_CALLABLE = "streamspace.accounts.security.username_from"
AXES_CLIENT_IP_CALLABLE = "streamspace.api.client_ip.request_ip"
AXES_LOCKOUT_CALLABLE = "streamspace.accounts.security.lockout_response"
AXES_WHITELIST_CALLABLE = "streamspace.accounts.security.not_a_password_attempt"
# Per-account backoff, whatever the address (accounts/throttle.py): after this many failures
# each attempt waits BASE seconds, doubling per failure up to MAX; forgotten RESET seconds
# after the last failure or at a successful sign-in.
LOGIN_BACKOFF_FREE_FAILURES = envint("LOGIN_BACKOFF_FREE_FAILURES", AXES_FAILURE_LIMIT, minimum=1)
LOGIN_BACKOFF_BASE_S = envint("LOGIN_BACKOFF_BASE_S", 2, minimum=1)
LOGIN_BACKOFF_MAX_S = envint("LOGIN_BACKOFF_MAX_S", 900, minimum=1)
LOGIN_BACKOFF_RESET_S = envint("LOGIN_BACKOFF_RESET_S", 12 * 3600, minimum=60)
# Refused SAML responses / OIDC callbacks per address in a sliding window before the refusal
# answers 429 (a valid assertion always signs in).
SSO_FAILURE_LIMIT = envint("SSO_FAILURE_LIMIT", 10, minimum=1)
SSO_FAILURE_WINDOW_S = envint("SSO_FAILURE_WINDOW_S", 300, minimum=1)
AXES_VERBOSE = False

# CORS: closed unless origins are listed (API only).
CORS_ALLOWED_ORIGINS = envlist("CORS_ALLOWED_ORIGINS", [])
CORS_URLS_REGEX = r"^/api/.*$"

# Single sign-on: OpenID Connect and SAML 2.0 (streamspace/settings_sso.py), each hidden
# unless configured.
from streamspace.settings_sso import *  # noqa: E402, F403
from streamspace.settings_sso import (  # noqa: E402
    SAML_ENABLED,
    SAML_IDP_METADATA_FILE,
    SAML_IDP_METADATA_URL,
    SAML_SP_ENTITY_ID,
)

SAML_CONFIG = (
    _idconf.saml_config(
        base_url=envstr("STREAMSPACE_PUBLIC_URL", "http://127.0.0.1:8000"),
        sp_entity_id=SAML_SP_ENTITY_ID,
        idp_metadata_url=SAML_IDP_METADATA_URL,
        idp_metadata_file=SAML_IDP_METADATA_FILE,
        sp_key_file=envstr("SAML_SP_KEY_FILE"),
        sp_cert_file=envstr("SAML_SP_CERT_FILE"),
        xmlsec_binary=_shutil.which("xmlsec1") or "/usr/bin/xmlsec1",
        debug=DEBUG,
    )
    if SAML_ENABLED
    else {}
)

# Audit retention (streamspace.audit.services.prune, `manage.py prune_audit`).
AUDIT_RETENTION_DAYS = envint("AUDIT_RETENTION_DAYS", 365, minimum=1)

# --- Product settings ------------------------------------------------------------------
STREAMSPACE_DEFAULT_QUOTA = {
    "max_sessions": envint("STREAMSPACE_DEFAULT_MAX_SESSIONS", 3, minimum=0),
    "max_cpu_millicores": envint("STREAMSPACE_DEFAULT_MAX_CPU_MILLICORES", 4000, minimum=0),
    "max_memory_mb": envint("STREAMSPACE_DEFAULT_MAX_MEMORY_MB", 8192, minimum=0),
}
STREAMSPACE_DEFAULT_IDLE_TIMEOUT_S = envint("STREAMSPACE_DEFAULT_IDLE_TIMEOUT_S", 1800, minimum=0)
STREAMSPACE_VIEWER_TOKEN_TTL_S = envint("STREAMSPACE_VIEWER_TOKEN_TTL_S", 120, minimum=5)
STREAMSPACE_ACTIVITY_WRITE_INTERVAL_S = envint("STREAMSPACE_ACTIVITY_WRITE_INTERVAL_S", 30, minimum=0)
# TURN for the WebRTC transport (docs/architecture.md §24): the servers viewers are told about
# (``turn:``/``turns:`` get per-viewer credentials, ``stun:`` none), the secret shared with
# the TURN server (coturn's static-auth-secret) and how long a credential lasts.
STREAMSPACE_TURN_URLS = envlist("STREAMSPACE_TURN_URLS")
for _url in STREAMSPACE_TURN_URLS:
    if not _url.startswith(("turn:", "turns:", "stun:", "stuns:")):
        raise ConfigError(f"STREAMSPACE_TURN_URLS: {_url!r} is not a turn:, turns:, stun: or stuns: URL")
STREAMSPACE_TURN_SECRET = envstr("STREAMSPACE_TURN_SECRET")
if any(_url.startswith(("turn:", "turns:")) for _url in STREAMSPACE_TURN_URLS) and not STREAMSPACE_TURN_SECRET:
    raise ConfigError("STREAMSPACE_TURN_URLS names a TURN server: STREAMSPACE_TURN_SECRET must be set too")
STREAMSPACE_TURN_TTL_S = envint("STREAMSPACE_TURN_TTL_S", 3600, minimum=60)
POD_NAME = envstr("POD_NAME", socket.gethostname())
# Placement across agents that can all serve a launch (sessions_app/placement.py):
# "spread" puts it on the least loaded, "pack" on the most loaded that still has room.
STREAMSPACE_PLACEMENT = envstr("STREAMSPACE_PLACEMENT", "spread").lower()
if STREAMSPACE_PLACEMENT not in ("spread", "pack"):
    raise ImproperlyConfigured(f"STREAMSPACE_PLACEMENT={STREAMSPACE_PLACEMENT!r}: choose spread or pack")
# Agent hub (docs/architecture.md §7): heartbeat interval told to agents, ack timeout before re-send.
AGENT_HEARTBEAT_INTERVAL_S = envint("AGENT_HEARTBEAT_INTERVAL_S", 10, minimum=1)
AGENT_COMMAND_ACK_TIMEOUT_S = envint("AGENT_COMMAND_ACK_TIMEOUT_S", 30, minimum=1)
AGENT_HEARTBEAT_DB_WRITE_S = envint("AGENT_HEARTBEAT_DB_WRITE_S", 60, minimum=0)
# Without Redis the channel layer is per process, so commands created by another process
# (the job runner of `make run`) cannot be pushed to the hub: leader sockets poll for them.
AGENT_PENDING_POLL_S = envint("AGENT_PENDING_POLL_S", 0 if REDIS_URL else 2, minimum=0)
# The hub fans session changes out (portal broadcast, events, webhook rows) on a thread pool,
# beside the frames that Channels' one database thread handles. PostgreSQL only: SQLite
# has one writer anyway.
AGENT_HUB_FAN_OUT_THREADS = envbool(
    "AGENT_HUB_FAN_OUT_THREADS", DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
)
POD_URL = envstr("POD_URL")
# Networks, beyond their platform's own, that agents may report session endpoints in
# (agents_app/endpoints.py): comma-separated <platform>=<network>, e.g.
# "docker=203.0.113.0/24" (a Docker host reached on a public address) or
# "docker=127.0.0.1/32" (a Docker engine on this host). Metadata and link-local addresses
# stay refused whatever is listed here.
STREAMSPACE_AGENT_ENDPOINT_NETWORKS = envlist("STREAMSPACE_AGENT_ENDPOINT_NETWORKS", [])
for _item in STREAMSPACE_AGENT_ENDPOINT_NETWORKS:
    _platform, _sep, _network = _item.partition("=")
    try:
        ipaddress.ip_network(_network.strip(), strict=False)
    except ValueError:
        _sep = ""
    if not _sep or _platform.strip() not in ("docker", "kubernetes", "local"):
        raise ConfigError(
            f"STREAMSPACE_AGENT_ENDPOINT_NETWORKS: {_item!r} is not <platform>=<network> "
            "(platform docker, kubernetes or local; network such as 10.1.0.0/16)"
        )

# --- Session proxy (sessions_app/proxy, docs/architecture.md §10) --------------------------------
# How long a proxy authorization (cookie -> user -> right on a session) is reused in-process.
STREAMSPACE_PROXY_AUTH_CACHE_S = envint("STREAMSPACE_PROXY_AUTH_CACHE_S", 5, minimum=0)
# Lifetime of the viewer cookie set after a viewer token was accepted.
STREAMSPACE_VIEWER_COOKIE_TTL_S = envint("STREAMSPACE_VIEWER_COOKIE_TTL_S", 12 * 3600, minimum=60)
# Sharing (docs/architecture.md §22): the longest lifetime a share link may be given; how long
# an open connection's entry in the "connected now" list lives without a refresh.
STREAMSPACE_SHARE_LINK_MAX_S = envint("STREAMSPACE_SHARE_LINK_MAX_S", 30 * 86400, minimum=60)
STREAMSPACE_PRESENCE_TTL_S = envint("STREAMSPACE_PRESENCE_TTL_S", 90, minimum=10)
STREAMSPACE_PROXY_CONNECT_TIMEOUT_S = envint("STREAMSPACE_PROXY_CONNECT_TIMEOUT_S", 5, minimum=1)
# Longest wait for upstream bytes (response headers or the next body chunk): 504 / abort after.
STREAMSPACE_PROXY_READ_TIMEOUT_S = envint("STREAMSPACE_PROXY_READ_TIMEOUT_S", 120, minimum=1)
# Longest wait for the next request-body chunk from the client (slow uploads): 408 after.
STREAMSPACE_PROXY_BODY_TIMEOUT_S = envint("STREAMSPACE_PROXY_BODY_TIMEOUT_S", 60, minimum=1)
# Longest a connection may take to send a complete request head under the launcher's front
# (streamspace/front/): from its start for the first request, from a request's first byte
# after that. Slow-header ("slowloris") connections are closed after it.
STREAMSPACE_PROXY_HEAD_TIMEOUT_S = envint("STREAMSPACE_PROXY_HEAD_TIMEOUT_S", 10, minimum=1)
# Threads that run Django's requests under ASGI (streamspace.transport.django_asgi); more
# requests wait their turn in arrival order. Python runs one thread at a time (the GIL): more
# than one lets a request's database round trips overlap with other requests' work, and a
# request waiting on a row lock (a launch on its user's quota row) or on another service (an
# OIDC provider) does not hold up the rest; but each thread more competes for the GIL with the
# event loop that reads requests and writes responses, which widens the latency spread under
# load. Four keep a replica's core busy with a narrow spread (bench/RESULTS.md, issue 18).
STREAMSPACE_REQUEST_THREADS = envint("STREAMSPACE_REQUEST_THREADS", 4, minimum=1)
# At most this many agent hub handshakes between their request head and the hub's
# `registered` at once under the launcher's front (streamspace.transport.admission); more
# wait in arrival order with their head received and go on in groups (from half the limit
# up to it), each waiting at most half the WebSocket handshake deadline. The default is one
# registration batch (agents_app.hub.batch.MAX_BATCH). 0: no bound.
STREAMSPACE_HUB_ADMISSION = envint("STREAMSPACE_HUB_ADMISSION", 500, minimum=0)
# How long the browser-side replica waits for the agent's tunnel socket.
STREAMSPACE_PROXY_TUNNEL_TIMEOUT_S = envint("STREAMSPACE_PROXY_TUNNEL_TIMEOUT_S", 10, minimum=1)
# Largest WebSocket message relayed from a session (bytes), where daphne terminates the
# WebSocket (STREAMSPACE_PROXY_FRONT=0, or a server other than streamspace.serve); the front's
# byte pipe leaves message sizes to the browser and the session.
STREAMSPACE_PROXY_WS_MAX_MESSAGE = envint("STREAMSPACE_PROXY_WS_MAX_MESSAGE", 16 * 1024 * 1024, minimum=1024)

# --- Session files (sessions_app/files, docs/architecture.md §23) --------------------------------
# Largest upload into a session's home (bytes): 413 above it, decided from Content-Length
# before any byte is read.
STREAMSPACE_UPLOAD_MAX_BYTES = envint("STREAMSPACE_UPLOAD_MAX_BYTES", 1024 * 1024 * 1024, minimum=1)


# --- Session origins (sessions_app/proxy/origins.py) ------------------------------------
# Every session is served on its own origin, ``<session-id>.<STREAMSPACE_SESSION_DOMAIN>``, so
# that a session's web content never runs with the portal's authority (JupyterHub's
# subdomain_host, Coder's wildcard access URL). Browsers resolve ``*.localhost`` to the
# loopback, so the default needs no DNS: ``make run`` serves http://<id>.localhost:8000/.
# Production: a wildcard DNS record and a wildcard TLS certificate for the domain.
def _session_origins(domain: str, template: str) -> tuple[str, str]:
    """The session domain and origin template, checked; ``ConfigError`` when they disagree."""
    domain = domain.strip().strip(".").lower()
    template = template.strip().rstrip("/")
    if template:
        scheme, sep, authority = template.partition("://")
        host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
        port = authority[len(host) + 1 :]
        if scheme not in ("http", "https") or not sep or not host.startswith("{session_id}.") or "/" in authority:
            raise ConfigError(
                f"STREAMSPACE_SESSION_ORIGIN_TEMPLATE={template!r} must look like "
                "https://{session_id}.sessions.example.com[:port]"
            )
        if port and not port.isdigit():
            raise ConfigError(f"STREAMSPACE_SESSION_ORIGIN_TEMPLATE={template!r} has a bad port")
        template_domain = host.removeprefix("{session_id}.").lower()
        if domain and domain != template_domain:
            raise ConfigError(
                f"STREAMSPACE_SESSION_ORIGIN_TEMPLATE's host {host!r} is not under "
                f"STREAMSPACE_SESSION_DOMAIN={domain!r}"
            )
        domain = template_domain
    domain = domain or "localhost"
    if "{" in domain or "/" in domain or ":" in domain or " " in domain:
        raise ConfigError(f"STREAMSPACE_SESSION_DOMAIN={domain!r} must be a host name, e.g. sessions.example.com")
    return domain, template


STREAMSPACE_SESSION_DOMAIN, STREAMSPACE_SESSION_ORIGIN_TEMPLATE = _session_origins(
    envstr("STREAMSPACE_SESSION_DOMAIN"), envstr("STREAMSPACE_SESSION_ORIGIN_TEMPLATE")
)

# --- Secrets at rest (streamspace/crypto.py) -------------------------------------------
# Comma-separated Fernet keys or passphrases; the first encrypts, all decrypt (rotation).
# Empty → derived from SECRET_KEY (development; `manage.py check --deploy` warns).
STREAMSPACE_ENCRYPTION_KEY = envstr("STREAMSPACE_ENCRYPTION_KEY")

# --- Background jobs (Celery) and plugins (streamspace/celery.py, plugins_app) ----------
# With a broker (CELERY_BROKER_URL, else REDIS_URL) run `celery -A streamspace worker -B`.
# Without one, tasks run eagerly in-process and `manage.py run_jobs` (started by `make run`)
# runs the same periodic jobs on the same schedule.
# With REDIS_SENTINELS the default broker is sentinel://host:port/db;... with master_name.
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL") or (REDIS_TARGET.celery_url() if REDIS_TARGET else "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = envstr("CELERY_QUEUE", "streamspace")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# An unacked (acks_late) message is handed to another worker after this long.
# kombu's Redis transport looks for such messages every interval x throttle seconds.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT_S", 300, minimum=5),
    "unacked_restore_interval": envint("CELERY_UNACKED_RESTORE_INTERVAL_S", 10, minimum=1),
    "unacked_restore_throttle": envint("CELERY_UNACKED_RESTORE_THROTTLE", 10, minimum=1),
}
# A broker that dies without closing its connections (a lost host, a killed container) is
# noticed as the control plane's other Redis clients notice it (docs/architecture.md §13.4).
if CELERY_BROKER_URL.startswith(("redis://", "rediss://", "sentinel://")):
    CELERY_BROKER_TRANSPORT_OPTIONS.update(dead_peer_options())
if CELERY_BROKER_URL.startswith("sentinel://"):
    if not REDIS_SENTINEL_MASTER:
        raise ConfigError("CELERY_BROKER_URL=sentinel://... needs REDIS_SENTINEL_MASTER (the master's name)")
    CELERY_BROKER_TRANSPORT_OPTIONS["master_name"] = REDIS_SENTINEL_MASTER
    # Results are ignored (no result backend); one set to sentinel:// finds its master the same way.
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"master_name": REDIS_SENTINEL_MASTER}
CELERY_TIMEZONE = "UTC"
STREAMSPACE_IDLE_SWEEP_INTERVAL_S = envint("STREAMSPACE_IDLE_SWEEP_INTERVAL_S", 30, minimum=1)
STREAMSPACE_IDLE_SWEEP_BATCH = envint("STREAMSPACE_IDLE_SWEEP_BATCH", 500, minimum=1)
# Hibernated sessions older than this are stopped (0 = never).
STREAMSPACE_HIBERNATED_MAX_AGE_S = envint("STREAMSPACE_HIBERNATED_MAX_AGE_S", 0, minimum=0)
# Sessions stuck in a transition (pending, starting, hibernating, waking, stopping) this long fail.
STREAMSPACE_STUCK_SESSION_S = envint("STREAMSPACE_STUCK_SESSION_S", 900, minimum=10)
AGENT_COMMAND_MAX_AGE_S = envint("AGENT_COMMAND_MAX_AGE_S", 3600, minimum=10)
STREAMSPACE_QUOTA_RECONCILE_S = envint("STREAMSPACE_QUOTA_RECONCILE_S", 3600, minimum=10)
# name -> (Celery task, interval in seconds): the beat schedule and `run_jobs` both read it.
STREAMSPACE_PERIODIC_JOBS = {
    "idle-sweep": ("sessions_app.tasks.idle_sweep", STREAMSPACE_IDLE_SWEEP_INTERVAL_S),
    "command-sweep": ("agents_app.tasks.command_sweep", 30),
    "stale-agent-sweep": ("agents_app.tasks.stale_agent_sweep", 30),
    "stuck-session-sweep": ("sessions_app.tasks.stuck_sweep", 30),
    "quota-reconcile": ("sessions_app.tasks.reconcile_quotas", STREAMSPACE_QUOTA_RECONCILE_S),
    "webhook-dispatch": (
        "plugins_app.tasks.dispatch_due_deliveries",
        envint("WEBHOOK_DISPATCH_INTERVAL_S", 5, minimum=1),
    ),
    "audit-prune": ("streamspace.jobs.prune_audit_log", 86400),
}
CELERY_BEAT_SCHEDULE = {
    name: {"task": task, "schedule": float(interval)} for name, (task, interval) in STREAMSPACE_PERIODIC_JOBS.items()
}
WEBHOOK_RETRY_BASE_S = envint("WEBHOOK_RETRY_BASE_S", 30, minimum=0)
WEBHOOK_MAX_ATTEMPTS = envint("WEBHOOK_MAX_ATTEMPTS", 6, minimum=1)
WEBHOOK_TIMEOUT_S = envint("WEBHOOK_TIMEOUT_S", 10, minimum=1)
# Loopback/private hosts webhooks may reach anyway (SSRF guard), e.g. 127.0.0.1.
WEBHOOK_ALLOWED_HOSTS = envlist("WEBHOOK_ALLOWED_HOSTS", [])
STREAMSPACE_THEME_CACHE_S = envint("STREAMSPACE_THEME_CACHE_S", 60, minimum=0)

# --- I18N, static ----------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
# WhiteNoise also serves straight from the finders (static/), so the portal works without a
# collectstatic step (make run, tests); compressed files come from collectstatic when present.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on each start without it

# --- Security when exposed -------------------------------------------------------------
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"redact_secrets": {"()": "streamspace.logredact.RedactSecretsFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_secrets"]}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "xmlschema": {"level": "WARNING"}},
}
