"""channel-sim's air: one burst at a time, each held for its airtime after those before it."""

from __future__ import annotations

import pytest

from channel_sim.config import ChannelConfig
from channel_sim.proxy import ChannelState


def test_bursts_queue_for_the_air_one_after_another() -> None:
    state = ChannelState(ChannelConfig())
    # Three bursts of 0.5 s handed over at once leave the air at 0.5, 1.0 and 1.5 s.
    assert [state.air_wait(0.5, now=10.0) for _ in range(3)] == pytest.approx([0.5, 1.0, 1.5])
    # One handed over after the air went quiet waits only for itself.
    assert state.air_wait(0.25, now=20.0) == pytest.approx(0.25)
    # One handed over while another is on the air waits for the rest of it.
    assert state.air_wait(0.25, now=20.1) == pytest.approx(0.4)
    # No airtime (no rate_limit in the chain) costs nothing once the air is free.
    assert state.air_wait(0.0, now=30.0) == 0.0


def test_pacing_is_on_by_default_and_can_be_switched_off() -> None:
    assert ChannelConfig().pace_airtime
    assert not ChannelConfig(pace_airtime=False).pace_airtime
