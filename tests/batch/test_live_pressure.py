"""What makes the batch pacer back off: live requests slowed down, as ServerState tells it."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.settings import load_settings
from server.state import ServerState
from tests.fakes import FakeEngine


@pytest.fixture
def state(tmp_path: Path) -> Iterator[ServerState]:
    settings = load_settings(
        model="fake-org/fake", usage_db=tmp_path / "usage.sqlite3", data_dir=tmp_path / "data"
    )
    state = ServerState(settings=settings, engine_factory=lambda s, p: FakeEngine())
    yield state
    state.shutdown()


def gaps(state: ServerState, gap_s: float, count: int = 20) -> None:
    for _ in range(count):
        state.traffic.live_latency.add_gap(gap_s)


def test_live_tokens_coming_clearly_further_apart_than_lately_are_pressure(
    state: ServerState,
) -> None:
    assert state.live_pressure() is None  # nothing seen yet
    gaps(state, 0.002)
    assert state.live_pressure() is None  # the least lately: 2 ms
    gaps(state, 0.003)  # within 1.25x + 0.5 ms
    assert state.live_pressure() is None
    gaps(state, 0.004)
    assert state.live_pressure() == "live tokens came 4.0 ms apart (least lately: 2.0 ms)"
    assert state.live_pressure() is None  # no tokens since: nothing to tell


def test_a_live_first_token_clearly_slower_than_lately_is_pressure(state: ServerState) -> None:
    state.traffic.live_latency.add(0.010)
    assert state.live_pressure() is None
    state.traffic.live_latency.add(0.016)  # within 1.25x + 5 ms
    assert state.live_pressure() is None
    state.traffic.live_latency.add(0.030)
    assert state.live_pressure() == (
        "a live request waited 30 ms for its first token (least lately: 10 ms)"
    )
