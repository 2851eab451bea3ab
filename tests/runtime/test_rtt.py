"""The per-peer round-trip estimator the leader feeds with its heartbeats."""

from __future__ import annotations

import pytest

from raftd.runtime.rtt import RttEstimator


def test_first_sample_then_ewma() -> None:
    r = RttEstimator(alpha=0.125)
    r.sent("a", 10.0)
    assert r.received("a", 10.2) == pytest.approx(0.2)
    assert r.smoothed["a"] == pytest.approx(0.2)  # the first sample is taken as is
    r.sent("a", 11.0)
    assert r.received("a", 11.6) == pytest.approx(0.6)
    assert r.smoothed["a"] == pytest.approx(0.2 + 0.125 * (0.6 - 0.2))
    for k in range(100):  # converges on a steady RTT
        r.sent("a", 20.0 + k)
        r.received("a", 20.05 + k)
    assert r.smoothed["a"] == pytest.approx(0.05, abs=1e-4)


def test_one_probe_in_flight_per_peer() -> None:
    """Later sends do not restamp the outstanding probe, so the first response is timed
    from the first send; a response with no probe in flight records nothing."""
    r = RttEstimator(expiry=1.0)
    r.sent("a", 0.0)
    r.sent("a", 0.1)
    r.sent("a", 0.2)
    assert r.received("a", 0.25) == pytest.approx(0.25)
    assert r.received("a", 0.3) is None  # answers to the unstamped heartbeats
    assert r.smoothed["a"] == pytest.approx(0.25)
    assert r.received("b", 0.3) is None
    assert "b" not in r.smoothed


def test_a_lost_probe_expires() -> None:
    r = RttEstimator(expiry=0.5)
    r.sent("a", 0.0)  # lost: never answered
    r.sent("a", 0.4)  # not yet expired: not restamped
    r.sent("a", 0.6)  # expired: restamped
    assert r.received("a", 0.65) == pytest.approx(0.05)


def test_peers_are_independent_and_can_be_forgotten() -> None:
    r = RttEstimator()
    r.sent("a", 0.0)
    r.sent("b", 0.0)
    r.received("b", 0.3)
    r.received("a", 0.1)
    assert dict(r.smoothed) == {"a": pytest.approx(0.1), "b": pytest.approx(0.3)}
    r.sent("a", 1.0)
    r.forget("a")
    assert r.received("a", 1.1) is None and "a" not in r.smoothed
    r.sent("b", 2.0)
    r.clear()
    assert r.received("b", 2.1) is None and dict(r.smoothed) == {}


def test_smoothed_is_a_live_read_only_view() -> None:
    r = RttEstimator()
    view = r.smoothed
    r.sent("a", 0.0)
    r.received("a", 0.01)
    assert view["a"] == pytest.approx(0.01)
    with pytest.raises(TypeError):
        view["a"] = 1.0  # type: ignore[index]


def test_clock_going_back_gives_zero_not_negative() -> None:
    r = RttEstimator()
    r.sent("a", 5.0)
    assert r.received("a", 4.0) == 0.0


@pytest.mark.parametrize("kw", [{"alpha": 0.0}, {"alpha": 1.5}, {"expiry": 0.0}])
def test_bad_parameters(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RttEstimator(**kw)
