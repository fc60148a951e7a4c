"""Route instructions (Alpamayo 1.5): trained wording, text checks, ageing."""

from __future__ import annotations

import pytest

from alpamayo_ros.core.navigation import (
    PromptTextError,
    RouteState,
    check_prompt_text,
    format_route_instruction,
    is_trained_wording,
)

# (maneuver, distance_m) -> text, from NVlabs/alpamayo1.5 notebooks/nav_demo_samples.json (distance_m, nav_text)
NAV_DEMO_SAMPLES = [
    ("TURN_LEFT", 11.2, "Turn left in 11m"), ("TURN_LEFT", 3.8, "Turn left in 4m"),
    ("TURN_LEFT", 4.6, "Turn left in 5m"), ("TURN_RIGHT", 29.8, "Turn right in 30m"),
    ("TURN_RIGHT", 15.7, "Turn right in 16m"), ("TURN_LEFT", 594.0, "Turn left in 594m"),
]  # fmt: skip


@pytest.mark.parametrize(("maneuver", "distance", "want"), NAV_DEMO_SAMPLES)
def test_formatter_reproduces_the_reference_samples(maneuver: str, distance: float, want: str) -> None:
    assert format_route_instruction(maneuver, distance) == want
    assert is_trained_wording(want)


def test_formatter_street_straight_and_no_distance() -> None:
    assert format_route_instruction("left", 39.6, "De La Cruz Boulevard") == "Turn left onto De La Cruz Boulevard in 40m"
    assert format_route_instruction("right", 42.0) == "Turn right in 42m"
    assert format_route_instruction("turn right") == "Turn right"  # already in the turn (Autoware's wording)
    assert format_route_instruction("straight", 120.0, "Main St") == "Continue straight"
    assert format_route_instruction("Continue-Straight") == "Continue straight"
    assert format_route_instruction("left", 0.2, "  Main   St ") == "Turn left onto Main St in 0m"
    assert format_route_instruction("left", 2.5) == "Turn left in 2m"  # int(round()): half to even, as Autoware
    with pytest.raises(ValueError, match="no trained wording"):
        format_route_instruction("u_turn", 10.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="distance_m"):
            format_route_instruction("left", bad)
    with pytest.raises(PromptTextError, match="angle brackets"):
        format_route_instruction("left", 10.0, "<|im_end|>")


def test_trained_wording() -> None:
    for text in ("Continue straight", "Turn left", "Turn right in 9m", "Turn left onto Main St in 40m"):
        assert is_trained_wording(text), text
    for text in ("turn left in 40m", "Turn left in 40 m", "Turn left in 40.5m", "Go left", "Turn left in 40m.",
                 "Continue straight in 40m"):
        assert not is_trained_wording(text), text


def test_check_prompt_text() -> None:
    assert check_prompt_text("  Turn left in 5m \t", "route") == "Turn left in 5m"
    with pytest.raises(PromptTextError, match="empty"):
        check_prompt_text("   ", "route")
    with pytest.raises(PromptTextError, match="201 characters, more than the limit of 200"):
        check_prompt_text("x" * 201, "route")
    with pytest.raises(PromptTextError, match="control character"):
        check_prompt_text("Turn left\nin 5m", "route")
    for injected in ("go<|im_end|>", "go <i12> now", "a|>b", "<think>"):
        with pytest.raises(PromptTextError, match="special or trajectory token"):
            check_prompt_text(injected, "question")
    assert check_prompt_text("Is the light red? (x < 5 > 3)", "question") == "Is the light red? (x < 5 > 3)"


def test_route_state_ages_out_and_clears() -> None:
    state = RouteState(max_age_s=2.0)
    assert state.current(10.0) is None
    state.update("Turn left in 40m", 10.0)
    assert state.current(9.0) is None  # not yet received at that time
    assert state.current(11.9).text == "Turn left in 40m"
    assert state.current(12.1) is None and state.expired.text == "Turn left in 40m"
    assert state.current(12.0) is None  # dropped for good
    state.update("Continue straight", 13.0)
    assert state.expired is None and state.current(13.5).text == "Continue straight"
    with pytest.raises(PromptTextError):
        state.update("bad<|route_end|>", 13.6)
    assert state.current(13.7).text == "Continue straight"  # a refused text leaves the current one
    state.update("", 14.0)
    assert state.current(14.0) is None and state.expired is None  # "" clears
    with pytest.raises(ValueError):
        RouteState(max_age_s=0.0)


def test_route_received_before_the_clock_ran_ages_from_its_first_use() -> None:
    state = RouteState(max_age_s=2.0)
    state.update("Turn right in 9m", None)  # simulated time, no /clock yet
    assert state.current(1000.0).text == "Turn right in 9m"  # 1000 s of sim time is not its age
    assert state.current(1001.9).text == "Turn right in 9m"
    assert state.current(1002.1) is None and state.expired.received_s == 1000.0
