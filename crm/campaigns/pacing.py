"""The pace of campaign sends, kept in Redis so that every worker sending for one WhatsApp
number shares it.

Each limit is one Lua script, so that checking and taking are one step for all workers:

- `take_token`: a token bucket per number (Meta's throughput, messages a second) and one per
  campaign (its own rate), each holding at most BURST_SECONDS' worth of tokens (one at
  least); a send needs a token of both. So no second ever sees more than the rate and a tenth,
  and a runner that stalled a moment catches up that little, not more. A
  number WhatsApp told to slow down (130429) takes none until its penalty is over
  (`slow_down`: doubling with each refusal, with jitter, forgotten after a quiet while).
- `take_web_turn`: a linked device waits a random delay between two messages.
- `count_for_today`: a linked device sends at most its daily cap per local day.
- `enter_window`: a cloud number reaches at most its messaging limit of unique people in a
  rolling 24 hours; what exceeds it waits for the window to move.
- `keep_gap`: one person gets no two campaign messages within GAP seconds.

Each returns the seconds to wait (0: go ahead, and it is counted). Times come from `clock`,
which the tests replace with a fake one whose sleep moves time on; the scripts take "now" as an
argument, so a fake clock drives them through real Redis.

Redis coming back empty loses nothing that matters: a bucket starts full (its small burst),
and the counts that must outlive it (the 24-hour window, the day's sends) are loaded again from
the database when their key is missing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from crm.jobs import redis
from crm.keys import key

GAP_SECONDS = 6.0  # between two campaign messages to one person
WINDOW_SECONDS = 24 * 3600  # Meta's messaging limit counts unique people over this
PENALTY_FIRST = 1.0  # seconds a number waits after its first 130429
PENALTY_LONGEST = 300.0
PENALTY_MEMORY = 600  # seconds without a 130429 after which a number starts again at FIRST
BUCKET_TTL_MS = 60_000
BURST_SECONDS = 0.1  # a bucket holds this many seconds' worth of tokens


class Clock:
    """Wall-clock time; the tests put a fake one in `clock`."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


clock = Clock()


def now() -> datetime:
    """The clock's time as an aware UTC datetime."""
    return datetime.fromtimestamp(clock.now(), UTC)


def _ms() -> int:
    return int(clock.now() * 1000)


def _key(org_id: int, *parts: object) -> str:
    return key("campaigns", *parts, org=org_id)


def _seconds(milliseconds: int) -> float:
    return max(0, milliseconds) / 1000


_scripts: dict[tuple[int, str], object] = {}


def run_script(source: str, keys: list[str], args: list[object]) -> int:
    """Run a Lua script (registered once per Redis client: EVALSHA, then EVAL if Redis lost
    it)."""
    client = redis()
    script = _scripts.get((id(client), source))
    if script is None:
        script = _scripts[(id(client), source)] = client.register_script(source)
    return script(keys=keys, args=args)


_TAKE_TOKEN = """
local now = tonumber(ARGV[1])
local penalty = tonumber(redis.call('GET', KEYS[3]) or '0')
if penalty > now then return penalty - now end
local rates = {tonumber(ARGV[2]), tonumber(ARGV[3])}
local levels, stamps, wait = {}, {}, 0
for i = 1, 2 do
  if rates[i] > 0 then
    local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
    local capacity = math.max(1, rates[i] * tonumber(ARGV[5]))
    local tokens = tonumber(state[1]) or capacity
    local stamp = tonumber(state[2]) or now
    if now > stamp then
      tokens = math.min(capacity, tokens + (now - stamp) * rates[i] / 1000)
      stamp = now
    end
    levels[i], stamps[i] = tokens, stamp
    if tokens < 1 then
      wait = math.max(wait, math.ceil((1 - tokens) * 1000 / rates[i]))
    end
  end
end
for i = 1, 2 do
  if levels[i] then
    local tokens = levels[i]
    if wait == 0 then tokens = tokens - 1 end
    redis.call('HSET', KEYS[i], 'tokens', tostring(tokens), 'ts', tostring(stamps[i]))
    redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[4]))
  end
end
return wait
"""


def take_token(org_id: int, profile_id: int, campaign_id: int, number_rate: float,
               campaign_rate: float | None) -> float:
    """A token of the number's bucket (`number_rate` a second) and of the campaign's
    (`campaign_rate` a second; None: no limit of its own), or the seconds until there is."""
    keys = [_key(org_id, "number", profile_id, "bucket"),
            _key(org_id, "campaign", campaign_id, "bucket"),
            _key(org_id, "number", profile_id, "penalty")]
    return _seconds(run_script(_TAKE_TOKEN, keys, [_ms(), number_rate, campaign_rate or 0,
                                                   BUCKET_TTL_MS, BURST_SECONDS]))


def slow_down(org_id: int, profile_id: int) -> float:
    """WhatsApp said the number sends too fast (130429): it takes no token for a while, twice
    as long as last time if that was recently, jittered so that workers do not all come back
    at once. The pause, in seconds."""
    level_key = _key(org_id, "number", profile_id, "slowdowns")
    level = redis().incr(level_key)
    redis().expire(level_key, PENALTY_MEMORY)
    pause = min(PENALTY_LONGEST, PENALTY_FIRST * 2 ** (level - 1)) * random.uniform(0.5, 1.5)
    until = _ms() + int(pause * 1000)
    redis().set(_key(org_id, "number", profile_id, "penalty"), until,
                px=int(pause * 1000) + BUCKET_TTL_MS)
    return pause


_WEB_TURN = """
local now = tonumber(ARGV[1])
local next_turn = tonumber(redis.call('GET', KEYS[1]) or '0')
if next_turn > now then return next_turn - now end
redis.call('SET', KEYS[1], now + tonumber(ARGV[2]), 'PX', tonumber(ARGV[2]) + 3600000)
return 0
"""


def take_web_turn(org_id: int, profile_id: int, delay: tuple[int, int]) -> float:
    """A linked device's turn to send, then none for a random `delay` (min, max seconds)."""
    pause_ms = int(random.uniform(*delay) * 1000)
    return _seconds(run_script(_WEB_TURN, [_key(org_id, "number", profile_id, "web-turn")],
                         [_ms(), pause_ms]))


_COUNT_BELOW = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if tonumber(redis.call('GET', KEYS[1])) >= tonumber(ARGV[1]) then return 1 end
redis.call('INCR', KEYS[1])
return 0
"""


def count_for_today(org_id: int, profile_id: int, day: str, cap: int, seconds_left: float,
                    sent_today: Callable[[], int]) -> float:
    """Count one send of a linked device on local `day` (YYYY-MM-DD), or, at its `cap`, the
    seconds until the day is over. The count is loaded with `sent_today()` when Redis has
    none."""
    day_key = _key(org_id, "number", profile_id, "day", day)
    outcome = run_script(_COUNT_BELOW, [day_key], [cap])
    if outcome == -1:
        redis().set(day_key, sent_today(), nx=True, ex=int(seconds_left) + 3600)
        outcome = run_script(_COUNT_BELOW, [day_key], [cap])
    return seconds_left if outcome == 1 else 0.0


_ENTER_WINDOW = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local now, window = tonumber(ARGV[1]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[2]) or
   redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


def enter_window(org_id: int, profile_id: int, phone: str, limit: int,
                 recent: Callable[[], Iterable[tuple[str, datetime]]]) -> float:
    """Count `phone` among the number's unique recipients of the last 24 hours, or, with
    `limit` of them reached, the seconds until the oldest leaves the window. Someone already
    in it costs nothing. `recent()` gives (phone, when) of the window's sends, to load it when
    Redis has lost it."""
    window, loaded = (_key(org_id, "number", profile_id, "window"),
                      _key(org_id, "number", profile_id, "window-loaded"))
    arguments = [_ms(), phone, limit, WINDOW_SECONDS * 1000]
    outcome = run_script(_ENTER_WINDOW, [window, loaded], arguments)
    if outcome == -1:
        _load_window(window, loaded, recent())
        outcome = run_script(_ENTER_WINDOW, [window, loaded], arguments)
    return _seconds(outcome)


def _load_window(window: str, loaded: str, sends: Iterable[tuple[str, datetime]]) -> None:
    scores = [(phone, int(when.timestamp() * 1000)) for phone, when in sends]
    with redis().pipeline() as pipeline:
        for start in range(0, len(scores), 1000):
            pipeline.zadd(window, dict(scores[start:start + 1000]))
        pipeline.pexpire(window, WINDOW_SECONDS * 1000)
        pipeline.set(loaded, 1, ex=WINDOW_SECONDS)
        pipeline.execute()


_KEEP_GAP = """
local now, gap = tonumber(ARGV[1]), tonumber(ARGV[2])
local last = tonumber(redis.call('GET', KEYS[1]) or '')
if last and now - last < gap then return gap - (now - last) end
redis.call('SET', KEYS[1], now, 'PX', gap + 60000)
return 0
"""


def keep_gap(org_id: int, phone: str) -> float:
    """Note a campaign message to `phone` now, or the seconds until GAP_SECONDS have passed
    since the last one (of any campaign of the organization)."""
    return _seconds(run_script(_KEEP_GAP, [_key(org_id, "person", phone, "last")],
                         [_ms(), int(GAP_SECONDS * 1000)]))


def forget_gap(org_id: int, phones: list[str]) -> None:
    """The messages noted by `keep_gap` for `phones` were not sent after all (a batch cut
    short): they do not hold the next one back."""
    if phones:
        redis().delete(*(_key(org_id, "person", phone, "last") for phone in phones))


def backoff(attempt: int) -> float:
    """Seconds before attempt `attempt` + 1 of one recipient (131056): 4, 16, 64... (4^n)."""
    return float(4 ** max(1, attempt))
