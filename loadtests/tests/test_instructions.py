"""The knobs and the target lines of `make instructions` (its counts come from valgrind,
too slow for CI), and its cursor scenarios run in process without valgrind on a seeded
database: the cursors are the bench's, and every request of them is answered."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from loadtests import bench, seed
from loadtests.features import FEATURES
from loadtests.instructions import (
    CALLERS,
    CONFIGURATIONS,
    NOTHING,
    SCENARIOS,
    Config,
    Cursors,
    cursors,
    target_lines,
)
from service.base.settings import SettingsError
from service.database import migrations


def test_requests_are_a_multiple_of_the_callers() -> None:
    assert Config.from_env({}).requests == 320
    assert Config.from_env({"INSTRUCTIONS_REQUESTS": str(2 * CALLERS)}).requests == 2 * CALLERS
    for bad in ("100", "0", "many", "-32"):
        with pytest.raises(SettingsError):
            Config.from_env({"INSTRUCTIONS_REQUESTS": bad})


def test_scenarios_and_layers_can_be_narrowed() -> None:
    config = Config.from_env({})
    assert config.scenarios == SCENARIOS
    # Every scenario of the bench but its mix, in the bench's order.
    assert tuple(scenario for scenario in bench.SCENARIOS if scenario != "mixed") == SCENARIOS
    assert config.configurations == CONFIGURATIONS
    narrow = Config.from_env(
        {"INSTRUCTIONS_SCENARIOS": "patch_post,get_post", "INSTRUCTIONS_LAYERS": "0"}
    )
    assert narrow.scenarios == ("get_post", "patch_post")
    assert [label for label, _, _ in narrow.configurations] == ["Litestar floor", "service"]
    for name, bad in (("INSTRUCTIONS_SCENARIOS", "mixed"), ("INSTRUCTIONS_LAYERS", "2")):
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
    assert layers.startswith("the edge layer at most 15k: met")
    assert "get_post 13.0k" in layers
    assert "patch_post 11.0k" in layers


def test_the_cursors_are_those_the_benchs_walks_are_given(
    feed_database: str, feed_service: bench.Server
) -> None:
    made = cursors(feed_database)
    assert made.deep == bench._deep_cursors(feed_service)
    assert made.events == bench.event_cursors(feed_service)
    assert (len(made.deep), len(made.events)) == (9, 2)  # 2,000 posts, 2,100 events
    assert Cursors.from_env(made.environment()) == made


def _drive(environment: dict[str, str], target: str, scenario: str, without: str) -> None:
    """What valgrind runs, without valgrind; `drive` fails on any answer but the expected."""
    command = ["-m", "loadtests.instructions", "drive", target, scenario, without, str(CALLERS)]
    completed = subprocess.run(
        [sys.executable, *command],
        cwd=bench.ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, (scenario, without, completed.stderr[-2000:])


@pytest.mark.parametrize("target", ["floor", "service"])
def test_the_cursor_scenarios_are_answered_in_process(
    feed_database: str, target: str, tmp_path: Path
) -> None:
    environment = os.environ | cursors(feed_database).environment()
    environment |= {"DATABASE_URL": feed_database, "BENCH_DATA_DIR": str(tmp_path)}
    for scenario in ("list_deep", "events"):
        _drive(environment, target, scenario, NOTHING)


def test_features_can_be_named_and_get_rows_of_their_own() -> None:
    assert Config.from_env({}).features == ()
    assert Config.from_env({"INSTRUCTIONS_FEATURES": "all"}).features == tuple(FEATURES)
    config = Config.from_env(
        {
            "INSTRUCTIONS_FEATURES": "strict_body,edge",
            "INSTRUCTIONS_SCENARIOS": "get_post,create_post",
        }
    )
    # The edge layer is counted once, whether named as a feature or as the layer.
    assert config.configurations == (
        *CONFIGURATIONS,
        ("  without strict_body", "service", "strict_body"),
    )
    assert config.counted("strict_body") == ("create_post",)
    assert config.counted(NOTHING) == ("get_post", "create_post")
    with pytest.raises(SettingsError):
        Config.from_env({"INSTRUCTIONS_FEATURES": "logging"})


async def test_each_feature_taken_out_still_answers_every_request(
    make_database: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    """Each take-out replaces its feature, it does not break the request: the counted
    process answers every request of the feature's scenarios as the service does."""
    database = await make_database()
    migrations.apply(database)
    await seed.seed_url(database, seed.DataSet(users=50, posts=500))
    environment = os.environ | {"DATABASE_URL": database, "BENCH_DATA_DIR": str(tmp_path)}
    for feature in FEATURES.values():
        for scenario in feature.scenarios:
            if scenario not in ("list_deep", "events"):  # these need the bench's cursors
                _drive(environment, "service", scenario, feature.name)
