"""The knobs and the target lines of `make instructions` (its counts come from valgrind,
too slow for CI)."""

from __future__ import annotations

import pytest

from loadtests.instructions import CALLERS, CONFIGURATIONS, SCENARIOS, Config, target_lines
from service.base.settings import SettingsError


def test_requests_are_a_multiple_of_the_callers() -> None:
    assert Config.from_env({}).requests == 320
    assert Config.from_env({"INSTRUCTIONS_REQUESTS": str(2 * CALLERS)}).requests == 2 * CALLERS
    for bad in ("100", "0", "many", "-32"):
        with pytest.raises(SettingsError):
            Config.from_env({"INSTRUCTIONS_REQUESTS": bad})


def test_scenarios_and_layers_can_be_narrowed() -> None:
    config = Config.from_env({})
    assert config.scenarios == SCENARIOS == ("get_post", "user_posts", "create_post", "patch_post")
    assert config.configurations == CONFIGURATIONS
    narrow = Config.from_env(
        {"INSTRUCTIONS_SCENARIOS": "patch_post,get_post", "INSTRUCTIONS_LAYERS": "0"}
    )
    assert narrow.scenarios == ("get_post", "patch_post")
    assert [label for label, _, _ in narrow.configurations] == ["Litestar floor", "service"]
    for name, bad in (("INSTRUCTIONS_SCENARIOS", "list_deep"), ("INSTRUCTIONS_LAYERS", "2")):
        with pytest.raises(SettingsError):
            Config.from_env({name: bad})


def test_the_targets_are_checked_on_every_scenario() -> None:
    labels = [label for label, _, _ in CONFIGURATIONS]
    counts = {"get_post": (500_000, 549_000, 536_000), "patch_post": (500_000, 551_000, 540_000)}
    per_request = {
        (label, scenario): float(values[min(index, 2)])
        for scenario, values in counts.items()
        for index, label in enumerate(labels)
    }
    ratio, layers = target_lines(per_request, CONFIGURATIONS, ("get_post", "patch_post"))
    assert ratio.startswith("service / floor at most 1.10x: NOT met")
    assert "get_post 1.098x" in ratio
    assert "patch_post 1.102x" in ratio
    assert layers.startswith("observer + limits + token gate at most 15k: met")
    assert "get_post 13.0k" in layers
    assert "patch_post 11.0k" in layers
