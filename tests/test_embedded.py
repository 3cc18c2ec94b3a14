"""The embedded servers `crm up` and every `crm` command start (crm/embedded.py)."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from crm import embedded

KEYS = 1_000_000  # an append-only file Redis takes a moment to read back


def test_redis_started_over_a_large_append_only_file_answers_at_once(tmp_path):
    """Redis listens before it has read its append-only file back and answers LOADING
    meanwhile: the first command after `start_redis` must find it ready."""
    server = embedded.start_redis(tmp_path)
    try:
        client = redis.Redis(port=server.port)
        pipe = client.pipeline(transaction=False)
        for n in range(KEYS):
            pipe.set(f"key:{n}", "x")
        pipe.execute()
        client.close()
    finally:
        embedded.stop_redis(server)

    again = embedded.start_redis(tmp_path)
    try:
        # No retries: Wasl's own clients would see LOADING as an error, not wait it out.
        client = redis.Redis(port=again.port, retry=Retry(NoBackoff(), 0))
        assert client.get(f"key:{KEYS - 1}") == b"x"
        client.close()
    finally:
        embedded.stop_redis(again)


def test_every_write_redis_acknowledged_survives_a_kill(tmp_path):
    """SIGKILL right after a stream of acknowledged writes: Redis comes back with all of
    them (its AOF write precedes each answer; everysec would hold writes back while a slow
    fsync is in flight, as on a busy CI disk)."""
    server = embedded.start_redis(tmp_path)
    client = redis.Redis(port=server.port)
    assert client.config_get("appendfsync") == {"appendfsync": "no"}
    for n in range(2_000):
        client.set(f"acknowledged:{n}", n)
    client.close()
    server.process.kill()
    server.process.wait(10)

    embedded.restart_redis(server)
    try:
        client = redis.Redis(port=server.port)
        assert client.get("acknowledged:1999") == b"1999"
        assert client.dbsize() == 2_000
        client.close()
    finally:
        embedded.stop_redis(server)
