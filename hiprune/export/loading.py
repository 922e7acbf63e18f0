"""Checkpoints: find them (directory or hub id in the local cache), read their config, and read only the
tensors an encoder adapter asks for, shard by shard (a 7B LLaVA's language model is never loaded)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from hiprune.errors import CheckpointError, one_line

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A checkpoint on local disk.

    Attributes:
        source: what the user passed (a directory or a hub id).
        path: the local directory holding config.json and the weights.
        config: the transformers config, read without remote code.
    """

    source: str
    path: Path
    config: Any

    def describe(self) -> dict[str, str]:
        return {"source": self.source, "path": str(self.path), "model_type": getattr(self.config, "model_type", "?")}


def resolve_checkpoint(model: str) -> Checkpoint:
    """Finds ``model`` as a local directory or a hub id already in the local cache (never downloads)."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"--model {model}: is a file; pass the checkpoint directory that holds config.json")
    elif _looks_like_hub_id(model):
        path = _from_hub_cache(model)
    else:
        raise CheckpointError(
            f"--model {model}: no such directory; pass a checkpoint directory or a hub id already in the local cache"
        )
    if not (path / "config.json").is_file():
        raise CheckpointError(f"--model {model}: {path} has no config.json; pass a transformers checkpoint directory")
    return Checkpoint(source=model, path=path, config=_read_config(path, model))


def _looks_like_hub_id(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "/", "~"))


def _from_hub_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(
            repo_id, local_files_only=True, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.model"]
        )
    except Exception:
        raise CheckpointError(
            f"--model {repo_id}: not a local directory and not in the hub cache; download it first "
            f"(`hf download {repo_id}`) or pass its directory"
        ) from None
    return Path(str(local))


def _read_config(path: Path, source: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    except Exception as exc:
        raise CheckpointError(f"--model {source}: config.json cannot be read ({one_line(exc)})") from None


def weight_files(path: Path, allow_pickle: bool) -> dict[str, Path]:
    """Maps every tensor name in the checkpoint to the file holding it, from the index where there is one."""
    for index_name, single, is_pickle in (
        (SAFETENSORS_INDEX, SAFETENSORS_SINGLE, False),
        (PICKLE_INDEX, PICKLE_SINGLE, True),
    ):
        if is_pickle and not allow_pickle:
            if (path / index_name).exists() or (path / single).exists():
                raise CheckpointError(
                    f"{path} holds only pickle weights ({single}), which can run code when loaded; convert them "
                    "to safetensors, or pass --allow-pickle if you trust the checkpoint"
                )
            continue
        if (path / index_name).is_file():
            return _read_index(path / index_name)
        if (path / single).is_file():
            return {name: path / single for name in _tensor_names(path / single)}
    raise CheckpointError(
        f"{path} has no weights ({SAFETENSORS_SINGLE} or {SAFETENSORS_INDEX}); pass a full checkpoint"
    )


def _read_index(index: Path) -> dict[str, Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{index} is not a valid weights index ({exc}); re-download the checkpoint") from None
    return {name: index.parent / shard for name, shard in weight_map.items()}


def _tensor_names(file: Path) -> list[str]:
    if file.suffix == ".bin":
        return list(_load_pickle(file).keys())
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            return list(handle.keys())
    except Exception as exc:
        raise CheckpointError(
            f"weights file {file} cannot be read ({exc}); it is corrupt or truncated, re-download it"
        ) from None


def _load_pickle(file: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise CheckpointError(f"weights file {file} cannot be read ({exc}); re-download it") from None


def read_tensors(
    files: dict[str, Path], select: Callable[[str], str | None], dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Reads only the tensors whose name ``select`` maps to a new name (``None`` skips), shard by shard.

    Args:
        files: tensor name → file, from :func:`weight_files`.
        select: checkpoint name → module name, or ``None`` for tensors the encoder does not need.
        dtype: floating tensors are cast to it (exports trace in float32).
    """
    wanted: dict[Path, list[tuple[str, str]]] = {}
    for name, file in files.items():
        target = select(name)
        if target is not None:
            wanted.setdefault(file, []).append((name, target))
    out: dict[str, torch.Tensor] = {}
    for file, names in wanted.items():
        for target, tensor in _read_file(file, names):
            out[target] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return out


def _read_file(file: Path, names: Iterable[tuple[str, str]]) -> Iterable[tuple[str, torch.Tensor]]:
    if file.suffix == ".bin":
        state = _load_pickle(file)
        return [(target, state[name]) for name, target in names]
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            return [(target, handle.get_tensor(name)) for name, target in names]
    except Exception as exc:
        raise CheckpointError(
            f"weights file {file} cannot be read ({exc}); it is corrupt or truncated, re-download it"
        ) from None
