"""Every registered target resolves, and has a test module of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from hiprune.errors import ConfigError
from hiprune.targets import TARGETS, Target, get_target


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_registered_target_is_tested(name):
    assert issubclass(get_target(name), Target) and get_target(name).name == name
    assert (Path(__file__).parent / f"test_{name}.py").exists(), f"target {name!r} has no tests/targets/test_{name}.py"


def test_unknown_target_lists_available():
    with pytest.raises(ConfigError, match="--target .nope. is not known; available: onnx, tensorrt"):
        get_target("nope")


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_option_owners_match_target_options(name):
    from hiprune.targets import OPTION_OWNERS

    assert OPTION_OWNERS[name] == tuple(get_target(name).options)
