"""The knobs of `make instructions` (its counts come from valgrind, too slow for CI)."""

from __future__ import annotations

import pytest

from loadtests.instructions import CALLERS, Config
from service.base.settings import SettingsError


def test_requests_are_a_multiple_of_the_callers() -> None:
    assert Config.from_env({}).requests == 320
    assert Config.from_env({"INSTRUCTIONS_REQUESTS": str(2 * CALLERS)}).requests == 2 * CALLERS
    for bad in ("100", "0", "many", "-32"):
        with pytest.raises(SettingsError):
            Config.from_env({"INSTRUCTIONS_REQUESTS": bad})
