"""Settings: environment to one validated struct; a bad value stops start-up in one line."""

from __future__ import annotations

import pytest

from service.base.settings import SettingsError, from_env
from tests.helpers import refused_start


def test_defaults():
    settings = from_env({})
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.embedded
    assert settings.should_migrate_on_start


def test_values_are_read_and_converted():
    settings = from_env(
        {
            "PORT": "9000",
            "WORKERS": "2",
            "DATABASE_URL": "postgresql://u@h/d",
            "DB_POOL_MIN": "1",
            "DB_POOL_MAX": "4",
            "LOG_LEVEL": "debug",
            "UNRELATED": "ignored",
        }
    )
    assert (settings.port, settings.workers, settings.db_pool_max) == (9000, 2, 4)
    assert settings.log_level == "DEBUG"
    assert not settings.embedded
    assert not settings.should_migrate_on_start
    assert from_env(
        {"DATABASE_URL": "postgresql://h/d", "MIGRATE_ON_START": "1"}
    ).should_migrate_on_start


def test_feed_retention_and_pruning_take_fractions():
    assert (from_env({}).events_retention_hours, from_env({}).events_prune_seconds) == (168, 30)
    quick = from_env({"EVENTS_RETENTION_HOURS": "0.001", "EVENTS_PRUNE_SECONDS": "0.5"})
    assert (quick.events_retention_hours, quick.events_prune_seconds) == (0.001, 0.5)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"PORT": "0"}, "PORT"),
        ({"WORKERS": "0"}, "WORKERS"),
        ({"DB_POOL_MAX": "0"}, "DB_POOL_MAX"),
        ({"DB_POOL_MIN": "-1"}, "DB_POOL_MIN"),
        ({"DB_POOL_MIN": "20", "DB_POOL_MAX": "10"}, "DB_POOL_MIN"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"MIGRATE_ON_START": "perhaps"}, "MIGRATE_ON_START"),
        ({"DATABASE_URL": "mysql://h/d"}, "DATABASE_URL"),
        ({"CURSOR_SECRET": "short"}, "CURSOR_SECRET"),
        ({"EVENTS_PRUNE_SECONDS": "0"}, "EVENTS_PRUNE_SECONDS"),
    ],
)
def test_bad_value_names_the_variable(environ, named):
    with pytest.raises(SettingsError, match=named):
        from_env(environ)


def test_bad_setting_stops_the_command_with_one_line_and_no_traceback():
    assert refused_start({"PORT": "not-a-port"}).strip().splitlines() == [
        "configuration error: PORT='not-a-port': Expected `int`, got `str`"
    ]
