"""config.settings for the serving benchmark's processes, with one repair while config/settings.py lacks it.

The channel layer builds its Redis clients from a bare URL, so they get redis-py's default 5 s socket
timeout; channels_redis waits on each channel with a 5 s BZPOPMIN, whose empty answer comes a little after
5 s. So a WebSocket left 5 s without a group message dies of a TimeoutError (the consumer's connection
closes, mid-reply or not). Here the channel layer's clients get the same 30 s that inference.redis gives its
own. Once config/settings.py does that itself (hosts given as dicts), this module changes nothing.
"""

from __future__ import annotations

from config.settings import *  # noqa: F403
from config.settings import CHANNEL_LAYERS

CHANNEL_SOCKET_TIMEOUT_S = 30

_config = CHANNEL_LAYERS["default"]["CONFIG"]
REPAIRED_CHANNEL_TIMEOUT = all(isinstance(host, str) for host in _config["hosts"])
if REPAIRED_CHANNEL_TIMEOUT:
    _config["hosts"] = [{"address": host, "socket_timeout": CHANNEL_SOCKET_TIMEOUT_S} for host in _config["hosts"]]
