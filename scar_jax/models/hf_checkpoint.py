"""Hugging Face checkpoint folders -> named numpy tensors, in every layout HF writes.

Layouts, in the order `transformers` prefers them (the first present is read):

  model.safetensors                                    one file
  model.safetensors.index.json + model-0000i-of-0000n.safetensors   sharded
  pytorch_model.bin                                    one torch pickle (needs torch)
  pytorch_model.bin.index.json + pytorch_model-0000i-of-0000n.bin   sharded (needs torch)

bfloat16 tensors come back as float32 (numpy has no bfloat16). Legacy LayerNorm names of
early TensorFlow ports (`LayerNorm.gamma`/`LayerNorm.beta`) are renamed to `weight`/`bias`,
as transformers does. What the tensors mean is the caller's business
(scar_jax/models/text_encoder.py maps BERT's).
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"
LAYOUTS = (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX)
_LEGACY = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}
_CONVERT = ("python -c \"import transformers; transformers.AutoModel.from_pretrained('{f}')"
            ".save_pretrained('{f}', safe_serialization=True)\"")


def _layout(folder: pathlib.Path) -> tuple[list[pathlib.Path], dict[str, pathlib.Path] | None]:
    """(weight files, the shard index's weight_map or None) of the first layout present."""
    for name in LAYOUTS:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path], None
        weight_map = _index(path)
        return sorted(set(weight_map.values())), weight_map
    others = sorted(p.name for p in folder.glob("*") if p.suffix in (".h5", ".msgpack", ".ckpt"))
    raise FileNotFoundError(
        f"No weights in {folder}: expected one of {', '.join(LAYOUTS)}"
        + (f" (found {', '.join(others)}: TensorFlow/Flax weights are not read; convert them "
           "with transformers to model.safetensors)" if others else "") + ".")


def weight_files(folder: str | pathlib.Path) -> list[pathlib.Path]:
    """The files that hold the folder's weights (one, or every shard its index names)."""
    return _layout(pathlib.Path(folder))[0]


def _index(path: pathlib.Path) -> dict[str, pathlib.Path]:
    """A shard index's weight_map: tensor name -> shard file (inside the folder, present)."""
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
    except (ValueError, KeyError) as e:
        raise ValueError(f"{path} is not a shard index (JSON with a 'weight_map'): {e}") from e
    root = path.parent.resolve()
    out = {}
    for name, shard in weight_map.items():
        file = (path.parent / shard).resolve()
        if root not in file.parents:
            raise ValueError(f"{path}: shard {shard!r} of {name!r} lies outside {root}.")
        if not file.is_file():
            raise FileNotFoundError(f"{path} names shard {shard!r} (for {name!r}), which is "
                                    f"missing from {root}; download every shard.")
        out[name] = file
    return out


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Every tensor of one .safetensors file (bfloat16 -> float32)."""
    from safetensors import safe_open

    out, bf16 = {}, []
    with safe_open(str(path), framework="np") as f:
        for name in f.keys():  # noqa: SIM118  (safe_open is not iterable)
            if f.get_slice(name).get_dtype() == "BF16":
                bf16.append(name)
            else:
                out[name] = f.get_tensor(name)
    if bf16:  # numpy cannot hold bfloat16; read those through jax (ml_dtypes)
        with safe_open(str(path), framework="flax") as f:
            for name in bf16:
                out[name] = np.asarray(f.get_tensor(name), np.float32)
    return out


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Every tensor of one pytorch_model*.bin (torch pickle, read with weights_only)."""
    try:
        import torch
    except ImportError as e:
        folder = path.parent
        raise ImportError(
            f"{path.name} in {folder} is a PyTorch pickle; reading it needs torch (`pip install "
            f"-e .[torch]`), or convert the folder once, on a machine with torch, to "
            f"model.safetensors: {_CONVERT.format(f=folder)}") from e
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    out = {}
    for name, t in state.items():
        t = t.detach()
        out[name] = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    return out


def read_tensors(folder: str | pathlib.Path) -> dict[str, np.ndarray]:
    """name -> numpy tensor of every weight in the folder (see the module docstring)."""
    folder = pathlib.Path(folder)
    files, weight_map = _layout(folder)
    out: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}  # name as stored -> file
    for file in files:
        read = _read_safetensors if file.suffix == ".safetensors" else _read_torch
        for stored, value in read(file).items():
            name = stored
            for old, new in _LEGACY.items():
                if name.endswith(old):
                    name = name[: -len(old)] + new
            if name in out:
                raise ValueError(f"Tensor {name!r} appears twice in {folder} (legacy "
                                 "LayerNorm gamma/beta names count as weight/bias).")
            out[name], origin[stored] = value, file.name
    if weight_map is not None:
        absent = sorted(n for n, f in weight_map.items() if origin.get(n) != f.name)
        if absent:
            raise ValueError(f"The shard index in {folder} lists tensors its shards do not "
                             f"hold: {absent[:10]}{' ...' if len(absent) > 10 else ''}.")
    return out
