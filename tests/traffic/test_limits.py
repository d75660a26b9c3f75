"""Rate limits: token buckets per key for requests and tokens per minute (a fake clock)."""

import pytest

from server.errors import RateLimitError
from server.traffic.auth import Caller, Role
from server.traffic.limits import RateLimiter


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limiter() -> tuple[RateLimiter, Clock]:
    clock = Clock()
    return RateLimiter(clock), clock


def test_the_request_after_the_limit_gets_429_with_the_time_to_wait() -> None:
    limiter, clock = _limiter()
    caller = Caller("app", Role.INFERENCE, requests_per_minute=3)
    for remaining in (2, 1, 0):
        limiter.admit(caller, tokens=10)
        assert limiter.headers(caller)["x-ratelimit-remaining-requests"] == str(remaining)
    with pytest.raises(RateLimitError) as refused:
        limiter.admit(caller, tokens=10)
    assert refused.value.status_code == 429
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.error_type == "requests"
    assert refused.value.retry_after_s == pytest.approx(20.0)  # one request per 20 s
    assert refused.value.headers() == {"retry-after": "20", "retry-after-ms": "20000"}
    assert "'app'" in refused.value.message
    assert "limit 3" in refused.value.message
    clock.now += 20.0
    limiter.admit(caller, tokens=10)  # refilled: one more


def test_callers_have_their_own_buckets() -> None:
    limiter, _ = _limiter()
    a = Caller("a", Role.INFERENCE, requests_per_minute=1)
    b = Caller("b", Role.INFERENCE, requests_per_minute=1)
    limiter.admit(a, 0)
    limiter.admit(b, 0)
    with pytest.raises(RateLimitError):
        limiter.admit(a, 0)


def test_tokens_are_reserved_then_what_was_not_used_comes_back() -> None:
    limiter, _ = _limiter()
    caller = Caller("app", Role.INFERENCE, tokens_per_minute=1000)
    first = limiter.admit(caller, tokens=600)  # prompt + max_tokens
    with pytest.raises(RateLimitError) as refused:
        limiter.admit(caller, tokens=600)  # only 400 left while the first runs
    assert refused.value.error_type == "tokens"
    assert refused.value.retry_after_s == pytest.approx(12.0)  # 200 tokens at 1000/min
    limiter.settle(first, used_tokens=100)  # it used 100 of its 600
    assert limiter.headers(caller)["x-ratelimit-remaining-tokens"] == "900"
    limiter.admit(caller, tokens=600)
    limiter.settle(first, used_tokens=0)  # settling twice gives nothing back twice
    assert limiter.headers(caller)["x-ratelimit-remaining-tokens"] == "300"


def test_a_request_larger_than_a_minute_of_tokens_is_told_so() -> None:
    limiter, _ = _limiter()
    caller = Caller("app", Role.INFERENCE, tokens_per_minute=100)
    with pytest.raises(RateLimitError, match=r"Request too large.*requested 150"):
        limiter.admit(caller, tokens=150)


def test_headers_follow_openai_and_only_for_limits_that_are_set() -> None:
    limiter, clock = _limiter()
    caller = Caller("app", Role.INFERENCE, requests_per_minute=60, tokens_per_minute=6000)
    reservation = limiter.admit(caller, tokens=3000)
    limiter.settle(reservation, used_tokens=3000)
    assert limiter.headers(caller) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "3000",
        "x-ratelimit-reset-tokens": "30s",
    }
    clock.now += 0.5
    assert limiter.headers(caller)["x-ratelimit-reset-requests"] == "500ms"
    assert limiter.headers(Caller("free", Role.INFERENCE)) == {}


def test_no_limits_admit_everything() -> None:
    limiter, _ = _limiter()
    caller = Caller("anonymous", None)
    for _ in range(1000):
        limiter.settle(limiter.admit(caller, tokens=10**6), used_tokens=10**6)
