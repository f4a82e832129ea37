"""A plan's limits, reserved atomically in Redis before any work and settled when the work ends.

Every generation (a chat reply, or one choice of an API completion) is *reserved* before it is queued,
by one Lua script that checks every limit and writes nothing unless all pass, so concurrent requests
can never overshoot a limit by racing each other:

- concurrent generations: the user's live reservations, a hash ``live`` of generation id ->
  ``<deadline ms>|<tokens>|<tokens-per-minute limit it took from, or -1>``. A reservation ends when it is
  settled; one whose deadline has passed and whose generation has no worker heart-beating (the key
  ``alive_key``) is dropped by the next reserve, so a worker that dies holds nothing for ever. The deadline
  is the queue timeout while it waits and CLAIM_GRACE_S from the moment a worker claims it (:func:`claimed`);
- chat messages per rolling window, API requests per minute: sliding logs (sorted sets scored by time), so
  exactly N are admitted in any window;
- API tokens per minute: a bucket refilled continuously (OpenAI's rule); a request takes its estimate
  (prompt plus max tokens) and gets back what it did not use when it settles;
- tokens per calendar month (UTC): the settled total in a counter rebuilt from the ledger when missing. A
  request is admitted while settled plus reserved tokens are under the budget, and reserves its estimate, so
  the budget is overshot by at most one reservation.

:func:`settle` with the tokens used (a cancelled generation: those it made) or :func:`release` (failed, or
never run: nothing) ends a reservation. Keys live under the default cache's key prefix.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from django.core.cache import cache
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django_redis import get_redis_connection
from django_redis.exceptions import ConnectionInterrupted

from accounts.billing.models import Plan, Subscription
from accounts.models import UsageRecord

logger = logging.getLogger(__name__)

LIMITS_CACHE_S = 60
# Each process also keeps limits it read for a few seconds: a request then reads them without a round trip.
LOCAL_LIMITS_S = 10
LOCAL_LIMITS_MAX = 10_000
_local_limits: dict[int, tuple[float, Limits]] = {}
CACHE_AWAY = (ConnectionInterrupted, redis.RedisError)
CLAIM_GRACE_S = 30  # from a worker's claim to the first heartbeat of its generation, with room to spare
UNLIMITED = -1

# Reservation ends (settle and release) and claims pass the user's keys, so that only the user's own
# reservations are ever touched.
_RESERVE_LUA = """
local live, msgs, reqs, bucket, month = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local alive_prefix, alive_suffix = ARGV[2], ARGV[3]
local deadline, n, each = now + tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local is_message, is_api = ARGV[7] == '1', ARGV[8] == '1'
local concurrent, messages, window = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local rpm, tpm, budget = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local first = 15

local held, count = 0, 0
local entries = redis.call('HGETALL', live)
for i = 1, #entries, 2 do
  local id, value = entries[i], entries[i + 1]
  local d, tokens = string.match(value, '^(%d+)|(%d+)')
  if now > tonumber(d) and redis.call('EXISTS', alive_prefix .. id .. alive_suffix) == 0 then
    redis.call('HDEL', live, id)
  else
    held = held + tonumber(tokens)
    count = count + 1
  end
end
if budget >= 0 then
  local used = redis.call('GET', month)
  if not used then return {-1} end
  if tonumber(used) + held >= budget then return {0, 'tokens_month', 0} end
end
if concurrent >= 0 and count + n > concurrent then return {0, 'concurrent', 1000} end
if is_message and messages >= 0 then
  redis.call('ZREMRANGEBYSCORE', msgs, '-inf', now - window)
  if redis.call('ZCARD', msgs) >= messages then
    local oldest = redis.call('ZRANGE', msgs, 0, 0, 'WITHSCORES')
    if #oldest == 0 then return {0, 'messages', window} end
    return {0, 'messages', math.max(1, tonumber(oldest[2]) + window - now)}
  end
end
if is_api and rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', reqs, '-inf', now - 60000)
  if redis.call('ZCARD', reqs) >= rpm then
    local oldest = redis.call('ZRANGE', reqs, 0, 0, 'WITHSCORES')
    if #oldest == 0 then return {0, 'requests', 60000} end
    return {0, 'requests', math.max(1, tonumber(oldest[2]) + 60000 - now)}
  end
end
local left = -1
if is_api and tpm >= 0 then
  local state = redis.call('HMGET', bucket, 't', 'at')
  local tokens, at = tonumber(state[1]) or tpm, tonumber(state[2]) or now
  tokens = math.min(tpm, tokens + math.max(0, now - at) * tpm / 60000)
  local need = n * each
  if need > tpm then return {0, 'tokens_too_large', 0} end
  if need > tokens then return {0, 'tokens_minute', math.max(1, math.ceil((need - tokens) * 60000 / tpm))} end
  left = tokens - need
  redis.call('HSET', bucket, 't', tostring(left), 'at', now)
  redis.call('PEXPIRE', bucket, 120000)
end
local took = (is_api and tpm >= 0) and tpm or -1
for i = 0, n - 1 do
  redis.call('HSET', live, ARGV[first + i], deadline .. '|' .. each .. '|' .. took)
end
redis.call('PEXPIRE', live, math.max(deadline - now, 0) + 86400000)
if is_message and messages >= 0 then
  redis.call('ZADD', msgs, now, ARGV[first])
  redis.call('PEXPIRE', msgs, window)
end
if is_api and rpm >= 0 then
  redis.call('ZADD', reqs, now, ARGV[first])
  redis.call('PEXPIRE', reqs, 60000)
end
return {1}
"""

# Ends the reservation ARGV[1]: adds ARGV[2] tokens to the month (-1: none, a release) and gives the
# tokens-per-minute bucket back what the generation did not use (ARGV[3]: now); the entry says how many it
# took and the bucket's limit then. A reservation already ended counts nothing: settling twice (a
# redelivered task) charges once.
_SETTLE_LUA = """
local live, month, bucket = KEYS[1], KEYS[2], KEYS[3]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local id, used = ARGV[1], tonumber(ARGV[2])
local value = redis.call('HGET', live, id)
if value then redis.call('HDEL', live, id) end
if value and used >= 0 and redis.call('EXISTS', month) == 1 then redis.call('INCRBY', month, used) end
if value then
  local _, tokens, tpm = string.match(value, '^(%d+)|(%d+)|(-?%d+)')
  tpm = tonumber(tpm)
  local refund = tonumber(tokens) - math.max(used, 0)
  if tpm > 0 and refund > 0 then
    local state = redis.call('HMGET', bucket, 't', 'at')
    local left, at = tonumber(state[1]), tonumber(state[2])
    if left then
      left = math.min(tpm, left + math.max(0, now - at) * tpm / 60000 + refund)
      redis.call('HSET', bucket, 't', tostring(left), 'at', math.max(at, now))
    end
  end
end
return value and 1 or 0
"""

_CLAIM_LUA = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local rest = string.match(value, '^%d+(|.*)$')
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[2])) .. rest)
return 1
"""

# The request and token headroom, for the x-ratelimit-* headers: (requests left, ms until the window is
# empty, tokens left, ms until the bucket is full).
_PEEK_LUA = """
local reqs, bucket = KEYS[1], KEYS[2]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local req_left, req_reset, tok_left, tok_reset = -1, 0, -1, 0
if rpm >= 0 then
  req_left = math.max(0, rpm - redis.call('ZCOUNT', reqs, now - 60000, '+inf'))
  local newest = redis.call('ZRANGE', reqs, -1, -1, 'WITHSCORES')
  if #newest > 0 then req_reset = math.max(0, tonumber(newest[2]) + 60000 - now) end
end
if tpm >= 0 then
  local state = redis.call('HMGET', bucket, 't', 'at')
  local tokens, at = tonumber(state[1]) or tpm, tonumber(state[2]) or now
  tokens = math.min(tpm, tokens + math.max(0, now - at) * tpm / 60000)
  tok_left = math.floor(tokens)
  if tpm > 0 then tok_reset = math.ceil((tpm - tokens) * 60000 / tpm) end
end
return {req_left, req_reset, tok_left, tok_reset}
"""


@dataclass(frozen=True)
class Limits:
    """A plan's limits; None is no limit."""

    plan: str  # the plan's name, for messages
    messages: int | None
    window_s: int
    tokens_month: int | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    concurrent: int | None
    models: tuple[str, ...]  # empty: every model
    max_context: int | None

    @classmethod
    def of(cls, plan: Plan) -> Limits:
        return cls(
            plan=plan.name,
            messages=plan.messages_per_window,
            window_s=plan.message_window_seconds,
            tokens_month=plan.tokens_per_month,
            requests_per_minute=plan.api_requests_per_minute,
            tokens_per_minute=plan.api_tokens_per_minute,
            concurrent=plan.concurrent_generations,
            models=tuple(str(name) for name in plan.models_allowed or ()),
            max_context=plan.max_context_tokens,
        )

    def allows_model(self, name: str) -> bool:
        return not self.models or name in self.models


@dataclass(frozen=True)
class Headroom:
    """What the x-ratelimit-* headers say. None where the plan sets no limit."""

    requests_limit: int | None
    requests_remaining: int | None
    requests_reset_s: float
    tokens_limit: int | None
    tokens_remaining: int | None
    tokens_reset_s: float


class LimitReached(Exception):
    """A request over one of the plan's limits. ``quota`` is True for the monthly budget (OpenAI's
    ``insufficient_quota``), False for a rate (``rate_limit_exceeded``); ``retry_after_s`` is when it may
    be tried again (at least 1)."""

    def __init__(self, kind: str, message: str, retry_after_s: int, *, quota: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after_s = max(1, retry_after_s)
        self.quota = quota

    @property
    def code(self) -> str:
        return "insufficient_quota" if self.quota else "rate_limit_exceeded"


# -- plans --------------------------------------------------------------------------------------------


def plan_default() -> Plan:
    plan = Plan.objects.filter(is_default=True).first()
    if plan is None:
        raise Plan.DoesNotExist("No plan is marked default: mark one in the admin (Plans).")
    return plan


def plan_of(*, user_id: int) -> tuple[Plan, Subscription | None]:
    """The plan ``user_id`` is on now, and the subscription that grants it (None: the default plan)."""
    subscription = Subscription.objects.select_related("plan").filter(user_id=user_id).first()
    if subscription is not None and subscription.grants_plan:
        return subscription.plan, subscription
    return plan_default(), subscription


def limits_of(*, user_id: int) -> Limits:
    """The user's limits: kept in this process for LOCAL_LIMITS_S, in the shared cache for LIMITS_CACHE_S.
    A change of subscription or plan through the services or the admin forgets them at once in the shared
    cache and in this process; other processes see it within LOCAL_LIMITS_S."""
    now = time.monotonic()
    local = _local_limits.get(user_id)
    if local is not None and local[0] > now:
        return local[1]
    limits = _shared_limits(user_id)
    if len(_local_limits) >= LOCAL_LIMITS_MAX:
        _local_limits.clear()
    _local_limits[user_id] = (now + LOCAL_LIMITS_S, limits)
    return limits


def _shared_limits(user_id: int) -> Limits:
    key = _limits_cache_key(user_id)
    try:
        limits = cache.get(key)
    except CACHE_AWAY:  # Redis away: read the plan from PostgreSQL (what needs no Redis keeps working)
        return Limits.of(_plan_now(user_id))
    if limits is None:
        limits = Limits.of(_plan_now(user_id))
        try:
            cache.set(key, limits, LIMITS_CACHE_S)
        except CACHE_AWAY:
            pass
    return limits


def _plan_now(user_id: int) -> Plan:
    """:func:`plan_of`'s plan in one query (a burst of requests from users whose limits are not cached yet
    each makes it): the plan a granting subscription gives, else the default plan."""
    granted = Q(subscriptions__user_id=user_id, subscriptions__status__in=Subscription.GRANTS_PLAN)
    plan = Plan.objects.filter(granted | Q(is_default=True)).order_by("is_default").first()
    if plan is None:
        raise Plan.DoesNotExist("No plan is marked default: mark one in the admin (Plans).")
    return plan


def limits_forget(*, user_id: int | None = None) -> None:
    """Forget cached limits: one user's (a subscription changed), or everyone's (a plan changed)."""
    if user_id is None:
        _local_limits.clear()
        cache.delete_pattern(_limits_cache_key("*"))
    else:
        _local_limits.pop(user_id, None)
        cache.delete(_limits_cache_key(user_id))


def _limits_cache_key(user_id: int | str) -> str:
    return f"billing:limits:{user_id}"


# -- reservations -------------------------------------------------------------------------------------


def reserve(
    *,
    user_id: int,
    limits: Limits,
    generation_ids: list[str],
    tokens_each: int,
    api: bool,
    alive_key: str,
    deadline_s: int,
) -> None:
    """Reserve ``generation_ids`` (one request: one message or one API request) of ``tokens_each`` estimated
    tokens each against ``limits``. ``alive_key`` is the heartbeat key of a generation with ``{id}`` in place
    of its id; ``deadline_s`` how long a reservation no worker has claimed is held.

    Raises LimitReached, and writes nothing then."""
    prefix, suffix = alive_key.split("{id}")
    now = _now_ms()
    keys = _keys(user_id, now)
    args = [
        0,  # unused: the scripts read the time from Redis, one clock for every process
        prefix,
        suffix,
        deadline_s * 1000,
        len(generation_ids),
        max(0, tokens_each),
        "0" if api else "1",
        "1" if api else "0",
        _arg(limits.concurrent),
        _arg(limits.messages),
        limits.window_s * 1000,
        _arg(limits.requests_per_minute),
        _arg(limits.tokens_per_minute),
        _arg(limits.tokens_month),
        *generation_ids,
    ]
    script = _script(_RESERVE_LUA)
    result = script(keys=keys, args=args)
    if result[0] == -1:  # the month's counter is missing: rebuilt from the ledger, then once more
        _month_seed(user_id, keys[4])
        result = script(keys=keys, args=args)
    if result[0] == -1:  # gone again at once (Redis evicting keys under memory pressure): not held up
        logger.warning("The month's token counter of user %s cannot be kept in Redis", user_id)
        return
    if result[0] == 1:
        return
    kind = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
    raise _refusal(kind, limits, math.ceil(int(result[2]) / 1000), tokens=len(generation_ids) * tokens_each)


def claimed(*, user_id: int, generation_id: str) -> None:
    """A worker took the generation: from now on its reservation lasts while it heart-beats (plus a grace)."""
    live = _keys(user_id, _now_ms())[0]
    _script(_CLAIM_LUA)(keys=[live], args=[generation_id, CLAIM_GRACE_S * 1000])


def settle(*, user_id: int, generation_id: str, tokens: int) -> None:
    """The generation ended having used ``tokens`` (prompt and completion): end its reservation and count
    them in the month."""
    _end(user_id, generation_id, max(0, tokens))


def release(*, user_id: int, generation_id: str) -> None:
    """The generation failed or never ran: end its reservation, counting nothing."""
    _end(user_id, generation_id, -1)


def headroom(*, user_id: int, limits: Limits) -> Headroom:
    """The API request and token headroom now (no reservation made)."""
    now = _now_ms()
    keys = _keys(user_id, now)
    args = [0, _arg(limits.requests_per_minute), _arg(limits.tokens_per_minute)]
    req_left, req_reset, tok_left, tok_reset = _script(_PEEK_LUA)(keys=[keys[2], keys[3]], args=args)
    return Headroom(
        requests_limit=limits.requests_per_minute,
        requests_remaining=None if limits.requests_per_minute is None else int(req_left),
        requests_reset_s=int(req_reset) / 1000,
        tokens_limit=limits.tokens_per_minute,
        tokens_remaining=None if limits.tokens_per_minute is None else int(tok_left),
        tokens_reset_s=int(tok_reset) / 1000,
    )


@dataclass(frozen=True)
class Use:
    messages: int  # in the rolling window
    requests_minute: int
    live: int  # generations reserved and not ended
    tokens_month: int


def use_now(*, user_id: int, limits: Limits) -> Use:
    """What the user has used of each limit now (read, nothing reserved)."""
    now = _now_ms()
    live, msgs, reqs, _bucket, _month = _keys(user_id, now)
    pipe = _client().pipeline(transaction=False)
    pipe.zcount(msgs, now - limits.window_s * 1000, "+inf")
    pipe.zcount(reqs, now - 60_000, "+inf")
    pipe.hlen(live)
    messages, requests, held = pipe.execute()
    return Use(int(messages), int(requests), int(held), _month_total(user_id))


def held(*, user_id: int, alive_key: str) -> list[str]:
    """The generations the user holds a reservation for now, as the next reserve would count them (one whose
    deadline passed with no worker heart-beating is not held). ``alive_key`` as for :func:`reserve`."""
    prefix, suffix = alive_key.split("{id}")
    seconds, micros = _client().time()
    now = seconds * 1000 + micros // 1000
    entries = _client().hgetall(_keys(user_id, now)[0])
    kept = []
    for raw_id, raw_value in entries.items():
        generation = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
        if int(value.split("|")[0]) >= now or _client().exists(f"{prefix}{generation}{suffix}"):
            kept.append(generation)
    return kept


def live_count(*, user_id: int) -> int:
    """How many reservations the user holds now (expired ones included until the next reserve drops them)."""
    return int(_client().hlen(_keys(user_id, _now_ms())[0]))


def month_used(*, user_id: int) -> int:
    """Tokens settled this month, from the ledger."""
    return _month_total(user_id)


def _end(user_id: int, generation_id: str, used: int) -> None:
    now = _now_ms()
    live, _msgs, _reqs, bucket, month = _keys(user_id, now)
    _script(_SETTLE_LUA)(keys=[live, month, bucket], args=[generation_id, used])


def _refusal(kind: str, limits: Limits, retry_after_s: int, *, tokens: int) -> LimitReached:
    """The refusal, worded in the active language (the page's or the request's)."""
    plan = limits.plan
    if kind == "tokens_month":
        message = _(
            "You have used this month's %(tokens)s tokens of the %(plan)s plan. Upgrade for more, or wait for next "
            "month."
        ) % {"tokens": number_format(limits.tokens_month or 0, force_grouping=True), "plan": plan}
        return LimitReached(kind, message, _seconds_to_next_month(), quota=True)
    if kind == "concurrent":
        message = ngettext(
            "The %(plan)s plan writes %(count)d reply at once: wait for it to finish, or stop it.",
            "The %(plan)s plan writes %(count)d replies at once: wait for one to finish, or stop it.",
            limits.concurrent or 0,
        ) % {"plan": plan, "count": limits.concurrent or 0}
        return LimitReached(kind, message, retry_after_s)
    if kind == "messages":
        message = ngettext(
            "You have sent the %(plan)s plan's %(count)d message for %(window)s. You can send again in %(wait)s, "
            "or upgrade for more.",
            "You have sent the %(plan)s plan's %(count)d messages for %(window)s. You can send again in %(wait)s, "
            "or upgrade for more.",
            limits.messages or 0,
        ) % {
            "plan": plan,
            "count": limits.messages or 0,
            "window": duration_words(limits.window_s),
            "wait": duration_words(retry_after_s),
        }
        return LimitReached(kind, message, retry_after_s)
    if kind == "requests":
        message = _(
            "Rate limit reached: %(limit)d requests per minute on the %(plan)s plan. Please try again in %(wait)ds."
        ) % {"limit": limits.requests_per_minute or 0, "plan": plan, "wait": retry_after_s}
        return LimitReached(kind, message, retry_after_s)
    if kind == "tokens_too_large":
        message = _(
            "Request too large: it may use %(tokens)d tokens and the %(plan)s plan allows %(limit)d tokens per "
            "minute. Lower max_tokens or shorten the messages."
        ) % {"tokens": tokens, "plan": plan, "limit": limits.tokens_per_minute or 0}
        return LimitReached(kind, message, 60)
    message = _(
        "Rate limit reached: %(limit)d tokens per minute on the %(plan)s plan (this request may use %(tokens)d). "
        "Please try again in %(wait)ds."
    ) % {"limit": limits.tokens_per_minute or 0, "plan": plan, "tokens": tokens, "wait": retry_after_s}
    return LimitReached(kind, message, retry_after_s)


def _month_seed(user_id: int, key: str) -> None:
    """Rebuild the month's counter from the ledger. A generation settling at this very moment may be counted
    twice (in the ledger read and by its settle): the error is one reply's tokens, toward refusing."""
    total = _month_total(user_id)
    _client().set(key, total, nx=True, ex=_seconds_to_next_month() + 2 * 24 * 3600)


def _month_total(user_id: int) -> int:
    start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    totals = UsageRecord.objects.filter(user_id=user_id, created_at__gte=start).aggregate(
        prompt=Coalesce(Sum("prompt_tokens"), 0), completion=Coalesce(Sum("completion_tokens"), 0)
    )
    return int(totals["prompt"] + totals["completion"])


def _keys(user_id: int, now_ms: int) -> list[str]:
    base = cache.make_key(f"quota:{user_id}")
    month = datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y%m")
    return [f"{base}:live", f"{base}:messages", f"{base}:requests", f"{base}:tpm", f"{base}:month:{month}"]


def _arg(limit: int | None) -> int:
    return UNLIMITED if limit is None else int(limit)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _seconds_to_next_month() -> int:
    now = datetime.now(UTC)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
    return max(1, math.ceil((following - now).total_seconds()))


def duration_words(seconds: int) -> str:
    """``seconds`` in words of the active language: "45 seconds", "60 minutes", "2 h 05 min", "3 hours"."""
    if seconds < 90:
        return ngettext("%(count)d second", "%(count)d seconds", seconds) % {"count": seconds}
    minutes = math.ceil(seconds / 60)
    if minutes < 90:
        return ngettext("%(count)d minute", "%(count)d minutes", minutes) % {"count": minutes}
    hours, minutes = divmod(minutes, 60)
    if minutes:
        return _("%(hours)d h %(minutes)02d min") % {"hours": hours, "minutes": minutes}
    return ngettext("%(count)d hour", "%(count)d hours", hours) % {"count": hours}


_scripts: dict[tuple[int, str], Any] = {}


def _client() -> Any:
    return get_redis_connection("default")


def _script(source: str) -> Any:
    """The script registered on the default cache's client (EVALSHA, loaded again after a Redis restart)."""
    client = _client()
    key = (id(client), source)
    script = _scripts.get(key)
    if script is None:
        script = _scripts[key] = client.register_script(source)
    return script
