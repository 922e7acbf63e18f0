"""Target options, declared once: which targets take each option, its values, default, help and refusals.

The CLI builds its ``--precision``/``--device``/... options and their help from :data:`OPTIONS`; targets
resolve their settings through :func:`resolve_options`. Nothing here imports a target module (or torch),
so ``hiprune-export --help`` stays fast. A new option or value is one entry below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from hiprune.errors import ConfigError

NEEDS_CALIBRATION = "needs calibration data, which hiprune-export does not support yet"


@dataclasses.dataclass(frozen=True)
class OptionChoices:
    """One target's take on one option.

    Attributes:
        values: allowed value → what it means, for the help ("" where the name says it).
        default: the value used when the option is not given.
        refused: values users may ask for that this target refuses → why (completes "--flag VALUE ...").
            Not listed as choices; asking for one gives that reason.
    """

    values: Mapping[str, str]
    default: str
    refused: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        parts = []
        for value, meaning in self.values.items():
            notes = (["default"] if value == self.default else []) + ([meaning] if meaning else [])
            parts.append(f"{value} ({'; '.join(notes)})" if notes else value)
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class TargetOption:
    """A target-specific CLI option (``--precision``, ``--device``, ...) and the targets that take it."""

    key: str
    help: str
    targets: Mapping[str, OptionChoices]

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    def all_values(self) -> tuple[str, ...]:
        """Every value some target accepts, in declaration order (for the CLI's metavar)."""
        return tuple(dict.fromkeys(v for choices in self.targets.values() for v in choices.values))

    def describe(self) -> str:
        """The CLI help: what the option does, then each target's values."""
        return " ".join([self.help, *(f"{name}: {choices.describe()}." for name, choices in self.targets.items())])


OPTIONS: tuple[TargetOption, ...] = (
    TargetOption(
        "precision",
        "Precision of the artifact.",
        {
            "tensorrt": OptionChoices(
                {"fp16": "strongly typed, selection + layernorm fp32", "bf16": "", "fp32": ""},
                "fp16",
                refused={"int8": NEEDS_CALIBRATION, "fp8": NEEDS_CALIBRATION},
            ),
            "coreml": OptionChoices({"fp16": "", "fp32": ""}, "fp16"),
        },
    ),
    TargetOption(
        "device",
        "Build settings sized for the device.",
        {
            "tensorrt": OptionChoices(
                {
                    "gpu": "discrete NVIDIA GPU",
                    "jetson-orin": "JetPack 6.1+",
                    "jetson-thor": "JetPack 7",
                    "rtx": "TensorRT-RTX engine for RTX GPUs, built on any machine",
                },
                "gpu",
            )
        },
    ),
    TargetOption(
        "build",
        "When the engine is built.",
        {
            "tensorrt": OptionChoices(
                {
                    "auto": "engine if this device's TensorRT can build here, else a bundle",
                    "now": "",
                    "defer": "bundle",
                },
                "auto",
            )
        },
    ),
    TargetOption(
        "min_target",
        "Minimum deployment target of the package.",
        {
            "coreml": OptionChoices(
                {"iOS17": "same spec as macOS14", "macOS14": "", "iOS18": "", "macOS15": ""}, "iOS17"
            )
        },
    ),
    TargetOption(
        "compute_units",
        "Compute units recorded in the package (runners load with them).",
        {
            "coreml": OptionChoices(
                {
                    "all": "CPU, GPU and Neural Engine",
                    "cpu_and_ne": "CPU and Neural Engine",
                    "cpu_and_gpu": "",
                    "cpu_only": "",
                },
                "all",
            )
        },
    ),
)


def target_options(target: str) -> dict[str, OptionChoices]:
    """The options ``target`` takes, key → its choices, in declaration order."""
    return {option.key: option.targets[target] for option in OPTIONS if target in option.targets}


def resolve_options(target: str, given: Mapping[str, str]) -> dict[str, str]:
    """Every option of ``target`` with its value: given ones checked, the rest defaulted.

    Raises:
        ConfigError: an option the target does not take, a refused value (with why) or an unknown value.
    """
    declared = {option.key: option for option in OPTIONS}
    mine = target_options(target)
    for key, value in given.items():
        flag = declared[key].flag if key in declared else "--" + key.replace("_", "-")
        if key not in mine:
            owners = ", ".join(sorted(declared[key].targets)) if key in declared else "no target"
            raise ConfigError(f"{flag} does not apply to --target {target}; it applies to: {owners}")
        allowed = ", ".join(mine[key].values)
        if value in mine[key].refused:
            raise ConfigError(f"{flag} {value} {mine[key].refused[value]}; use one of: {allowed}")
        if value not in mine[key].values:
            raise ConfigError(f"{flag} {value!r} is not available for --target {target}; use one of: {allowed}")
    return {key: given.get(key, choices.default) for key, choices in mine.items()}
