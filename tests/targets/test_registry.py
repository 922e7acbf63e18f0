"""Every registered target resolves, has a test module of its own, and takes exactly its declared options."""

from __future__ import annotations

from pathlib import Path

import pytest

from hiprune.errors import ConfigError
from hiprune.targets import OPTIONS, TARGETS, Target, get_target
from hiprune.targets.options import resolve_options


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_registered_target_is_tested(name):
    assert issubclass(get_target(name), Target) and get_target(name).name == name
    assert (Path(__file__).parent / f"test_{name}.py").exists(), f"target {name!r} has no tests/targets/test_{name}.py"


def test_unknown_target_lists_available():
    with pytest.raises(ConfigError, match="--target .nope. is not known; available: onnx, tensorrt"):
        get_target("nope")


def test_declared_options_name_registered_targets_and_valid_defaults():
    for option in OPTIONS:
        assert set(option.targets) <= set(TARGETS), option.key
        for choices in option.targets.values():
            assert choices.default in choices.values and not set(choices.refused) & set(choices.values)


def test_tensorrt_devices_are_the_declared_ones():
    from hiprune.targets.tensorrt import PROFILES

    assert tuple(PROFILES) == tuple(get_target("tensorrt").options()["device"].values)


def test_refused_value_says_why_and_is_not_a_choice():
    with pytest.raises(ConfigError, match=r"^--precision int8 needs calibration data.*; use one of: fp16, bf16, fp32$"):
        resolve_options("tensorrt", {"precision": "int8"})
    assert "int8" not in next(o for o in OPTIONS if o.key == "precision").all_values()


def test_cli_help_and_refusal_come_from_the_declaration(tmp_path):
    from click.testing import CliRunner

    from hiprune.cli import main

    help_text = CliRunner().invoke(main, ["--help"]).output
    assert "--precision [fp16|bf16|fp32]" in help_text and "int8" not in help_text
    result = CliRunner().invoke(main, ["--target", "tensorrt", "--precision", "int8", "--output", str(tmp_path / "o")])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == ConfigError.exit_code and len(lines) == 1, result.output
    assert lines[0].startswith("error: --precision int8 needs calibration data") and not (tmp_path / "o").exists()
