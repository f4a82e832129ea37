"""config.settings for the API benchmark's web server, with one repair while config/settings.py lacks it.

Under ASGI, Django runs each request's synchronous code in a thread of its own, and database connections
belong to threads: with persistent connections (CONN_MAX_AGE > 0) every request opens one that is never
reused nor closed, and a loaded web process soon meets PostgreSQL's "too many clients". Django's answer
for ASGI is its PostgreSQL connection pool (psycopg_pool, CONN_MAX_AGE 0), which this module switches on.
Once config/settings.py does that itself, this module changes nothing.
"""

from __future__ import annotations

from config.settings import *  # noqa: F403
from config.settings import DATABASES

POOL = {"min_size": 2, "max_size": 8, "timeout": 10}

_database = DATABASES["default"]
REPAIRED_CONNECTION_POOL = "pool" not in _database.get("OPTIONS", {})
if REPAIRED_CONNECTION_POOL:
    _database["CONN_MAX_AGE"] = 0  # Django refuses persistent connections beside a pool
    _database["OPTIONS"] = {**_database.get("OPTIONS", {}), "pool": POOL}
