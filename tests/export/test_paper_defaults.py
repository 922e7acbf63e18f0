"""The paper's settings for LLaVA-1.5 (spec table "Defaults from the paper"), stated here rather than read back
from the code: parity tests take the layers from the manifest, so only this test pins the defaults themselves."""

from __future__ import annotations

from hiprune.config import HiPruneConfig
from hiprune.export.adapters import adapter_for
from hiprune.export.encoder import plan_selection
from hiprune.export.models import default_llava15_config


def test_llava15_uses_the_papers_layers_and_grid():
    spec = adapter_for(default_llava15_config(), "default").spec
    plan = plan_selection(HiPruneConfig(keep=64), spec)
    # CLIP ViT-L/14-336: 24x24 patches; object layer 9; deep layer 23 = the layer that outputs hidden_states[-2]
    assert (spec.grid, spec.num_tokens, spec.num_layers) == ((24, 24), 576, 24)
    assert (plan.object_layer, plan.deep_layer, plan.hiprune.anchors) == (9, 23, 1)
