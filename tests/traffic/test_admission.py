"""Admission control: places in the engine, a bounded first-come-first-served queue."""

import asyncio

import pytest

from server.errors import OverloadedError, RequestTimeoutError
from server.traffic.admission import Admission


async def test_requests_take_places_until_the_batch_is_full_then_wait_in_order() -> None:
    admission = Admission(max_running=2, max_waiting=4)
    await admission.enter(1, timeout_s=1)
    await admission.enter(1, timeout_s=1)
    order: list[str] = []

    async def wait(name: str) -> None:
        await admission.enter(1, timeout_s=5)
        order.append(name)

    waiters = [asyncio.create_task(wait(name)) for name in "abc"]
    await asyncio.sleep(0.01)
    assert (admission.running, admission.waiting, order) == (2, 3, [])
    admission.leave(1, held_s=0.5)
    await asyncio.sleep(0.01)
    assert order == ["a"]
    admission.leave(1, held_s=0.5)
    admission.leave(1, held_s=0.5)
    await asyncio.gather(*waiters)
    assert order == ["a", "b", "c"]
    assert admission.running == 2
    assert admission.waiting == 0


async def test_a_full_queue_refuses_at_once_with_when_to_retry() -> None:
    admission = Admission(max_running=1, max_waiting=1)
    await admission.enter(1, timeout_s=1)
    waiting = asyncio.create_task(admission.enter(1, timeout_s=5))
    await asyncio.sleep(0)  # one turn of the loop: the task runs to its wait in the queue
    assert admission.waiting == 1
    refusal = admission.enter(1, timeout_s=5)
    with pytest.raises(OverloadedError) as refused:
        refusal.send(None)  # at once: it raises on its first step, before it could ever wait
    assert refused.value.status_code == 429
    assert refused.value.code == "server_overloaded"
    assert 0.05 <= refused.value.retry_after_s <= 60
    assert set(refused.value.headers()) == {"retry-after", "retry-after-ms"}
    admission.leave(1, held_s=1.0)
    await waiting


async def test_the_retry_estimate_grows_with_the_queue_and_the_service_time() -> None:
    admission = Admission(max_running=2, max_waiting=8)
    for _ in range(20):  # requests have been holding their place 4 s each
        admission.leave(0, held_s=4.0)
    short = admission.retry_after_s()
    await admission.enter(2, timeout_s=1)
    tasks = [asyncio.create_task(admission.enter(1, timeout_s=5)) for _ in range(6)]
    await asyncio.sleep(0.01)
    assert admission.retry_after_s() > short
    assert admission.retry_after_s() == pytest.approx(4.0 * 7 / 2, rel=0.2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_wait_longer_than_the_queue_deadline_gets_408_and_leaves_the_queue() -> None:
    admission = Admission(max_running=1, max_waiting=2)
    await admission.enter(1, timeout_s=1)
    with pytest.raises(RequestTimeoutError) as timed_out:
        await admission.enter(1, timeout_s=0.05)
    assert timed_out.value.status_code == 408
    assert timed_out.value.code == "queue_timeout"
    assert admission.waiting == 0
    admission.leave(1, held_s=None)
    await admission.enter(1, timeout_s=0.05)  # the place went to nobody else


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    admission = Admission(max_running=2, max_waiting=2)
    await admission.enter(2, timeout_s=1)
    big = asyncio.create_task(admission.enter(2, timeout_s=5))  # head of the queue
    small = asyncio.create_task(admission.enter(1, timeout_s=5))
    await asyncio.sleep(0.01)
    admission.leave(1, held_s=None)
    await asyncio.sleep(0.01)
    assert not small.done()  # first come, first served: the big one is ahead
    big.cancel()
    await asyncio.sleep(0.01)
    assert small.done()
    assert admission.running == 2


async def test_a_request_larger_than_the_batch_takes_the_whole_batch() -> None:
    admission = Admission(max_running=4, max_waiting=1)
    assert admission.places_for(16) == 4
    assert admission.places_for(0) == 1
