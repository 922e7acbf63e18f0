"""Peak memory of an export and of its post-export check, estimated from the encoder's shapes and the batch.

An export traces with a real example input (the batch of images is materialized once) and then runs the same
batch through the PyTorch module and through the artifact's runtime, both with every layer's activations at the
static batch. Past a few thousand tiny images, or a few hundred full-size ones, that is more memory than a
machine has, and the kernel kills the process (often taking others with it). :func:`estimate_memory` answers
before any of that starts; the runtime can use it for its own batches too. No heavy imports.

Calibration (Linux x86_64, ORT 1.32, torch 2.13; peak RSS above the loaded process, per phase): the check grows
by 1.0x :func:`_activation_bytes` per image (tiny CLIP 32 px and 64 px towers, batches 1 to 65,536, linear
throughout; the default CLIP-L/336 at batches 1 and 3: 61 MiB per image) plus one copy of the weights; tracing
grows by one copy of the input. The estimate doubles both slopes as a margin for allocator growth.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

FLOAT = 4  # bytes: activations run in fp32 on the CPU paths that export and check
FIXED = 256 << 20  # interpreter, libraries' arenas and graph bookkeeping, above the loaded process
MARGIN = 2.0


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes an export needs above what the loaded process holds: ``export`` (trace, convert, save) and
    ``check`` (PyTorch reference + runtime session on the same batch); each is ``fixed + batch * per_image``."""

    batch: int
    export_fixed: int
    export_per_image: int
    check_fixed: int
    check_per_image: int

    @property
    def export(self) -> int:
        return self.export_fixed + self.batch * self.export_per_image

    @property
    def check(self) -> int:
        return self.check_fixed + self.batch * self.check_per_image

    @property
    def peak(self) -> int:
        return max(self.export, self.check)

    def largest_batch(self, available: int) -> int:
        """The largest batch whose export and check both fit in ``available`` bytes (0 if none does)."""
        fits = [
            (available - fixed) // per if per else math.inf
            for fixed, per in ((self.export_fixed, self.export_per_image), (self.check_fixed, self.check_per_image))
        ]
        return max(0, int(min(fits)))


def estimate_memory(
    spec: Any, batch: int, weights_bytes: int, heads: int, intermediate: int, copies_weights: bool = False
) -> MemoryEstimate:
    """The estimate for an encoder of geometry ``spec`` (an :class:`~hiprune.export.adapters.EncoderSpec`).

    Args:
        spec: the encoder's geometry (image size, grid, widths, views).
        batch: the static batch of the artifact.
        weights_bytes: the encoder's weights as loaded (fp32).
        heads: attention heads of the tower; ``intermediate``: its MLP width.
        copies_weights: the target converts the weights into a copy (precision conversion, Core ML) while exporting.
    """
    per_image = int(MARGIN * spec.views * _activation_bytes(spec, heads, intermediate))
    image = spec.views * 3 * spec.image_size[0] * spec.image_size[1] * FLOAT
    export_fixed = FIXED + (weights_bytes if copies_weights else 0)
    return MemoryEstimate(batch, export_fixed, int(MARGIN * image), FIXED + weights_bytes, per_image)


def _activation_bytes(spec: Any, heads: int, intermediate: int) -> int:
    """One view's live activations at the widest point of a layer, counted as the calibration found them: the
    input four times (torch, numpy and the runtime's copies), hidden states twice, attention scores twice (the
    score layers' explicit softmax and the runtime's attention), the MLP's hidden once."""
    tokens = spec.num_tokens + 1  # a CLS-like prefix token where the tower has one; an upper bound otherwise
    image = 3 * spec.image_size[0] * spec.image_size[1]
    hidden, attention, mlp = tokens * spec.feature_dim, heads * tokens * tokens, tokens * intermediate
    return FLOAT * (4 * image + 2 * hidden + 2 * attention + mlp)


def available_memory() -> int | None:
    """Bytes this process may still allocate: the system's available memory, capped by a cgroup limit
    (containers); ``None`` where neither can be read."""
    try:
        import psutil

        system: int | None = int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unsupported platform
        system = None
    limits = [system, _cgroup_room()]
    known = [value for value in limits if value is not None]
    return min(known) if known else None


def _cgroup_room() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2, then v1), or ``None`` where unlimited or unknown."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= 1 << 60:
            return None
        return max(0, int(limit_text) - usage)
    return None
