"""Settings arithmetic and validation messages."""

from __future__ import annotations

import pytest

from hiprune.config import HiPruneConfig, anchor_count
from hiprune.errors import ConfigError


@pytest.mark.parametrize(
    ("keep", "alpha", "anchors"), [(64, 0.1, 1), (128, 0.1, 3), (192, 0.1, 4), (125, 0.1, 2), (8, 0.1, 0), (10, 1.0, 2)]
)
def test_anchor_count_uses_python_rounding(keep, alpha, anchors):
    # 125 * 0.1 / 5 = 2.5 → 2 (banker's rounding, as the reference code's round())
    assert anchor_count(keep, alpha) == anchors


def test_messages_name_k_alpha_a_and_n():
    with pytest.raises(ConfigError, match=r"--keep 600 is more than the encoder's N = 576 .*alpha 0.1, anchors a = 12"):
        HiPruneConfig(keep=600).validate_for(576)
    with pytest.raises(ConfigError, match=r"--neighbors 'diag' is not known; use one of: paper, grid"):
        HiPruneConfig(neighbors="diag").validate_static()


def test_no_prune_refuses_pruning_settings_and_records_only_prune():
    HiPruneConfig(prune=False).validate_for(576)
    with pytest.raises(ConfigError, match=r"^--keep 10000 does not apply with --no-prune, which keeps every token"):
        HiPruneConfig(keep=10_000, prune=False).validate_for(576)
    assert HiPruneConfig(prune=False).as_metadata() == {"hiprune.prune": "false"}
