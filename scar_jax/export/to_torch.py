"""Export a SCAR model to PyTorch: a declarative Flax -> torch name map, checked both ways.

`export(params, config, out_dir)` writes

  ecg_tower.py            torch-only source of the ECG tower (a copy of torch_modules.py)
  ecg_tower.json          ECGTower constructor arguments
  ecg_tower.safetensors   its state dict (load_state_dict(strict=True) loads it)
  text/                   Hugging Face BertModel folder: config.json, model.safetensors and the
                          tokenizer files of the source checkpoint (AutoModel / AutoTokenizer)
  text_head.json          TextHead arguments: pooling mode, sizes, loss kind
  text_head.safetensors   text projection head and the learned logit scale (and SigLIP bias)
  manifest.json           config, package versions, sha256 of every file written

Every Flax parameter is either mapped by exactly one rule or dropped by a named reason (the
training-only masker); any other parameter, any torch tensor left unfilled and any shape
mismatch stops the export with the names. Weights are stored with safetensors only (no pickle);
`load_exported_params` reads them back into Flax params, inverting each rule exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import pathlib
import shutil
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from scar_jax.export import torch_modules as tm
from scar_jax.models import common
from scar_jax.models import hf_checkpoint
from scar_jax.models import scar
from scar_jax.models import text_encoder

FORMAT = "scar_jax.export/1"
ECG, TEXT, TEXT_HEAD = "ecg", "text", "text_head"
FILES = {  # weight file of each target, relative to the export folder
    ECG: tm.ECG_WEIGHTS,
    TEXT: "text/model.safetensors",
    TEXT_HEAD: tm.TEXT_HEAD_WEIGHTS,
}
# Flax subtrees that are deliberately not exported, with the reason.
DROPPED = {("masker",): "the adversarial masker is used only in training"}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
)
VERSIONED_PACKAGES = (
    "scar_jax", "jax", "jaxlib", "flax", "numpy", "torch", "transformers", "safetensors",
    "tokenizers",
)  # fmt: skip
SAFETENSORS_METADATA = {"format": "pt"}  # what transformers expects in model.safetensors


# ----------------------------------------------------------------------------- Transforms.


@dataclasses.dataclass(frozen=True)
class Transform:
    """An invertible array transform: to_torch(x), to_flax(y, flax_shape)."""

    name: str
    to_torch: Callable[[np.ndarray], np.ndarray]
    to_flax: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]


IDENTITY = Transform("identity", lambda x: x, lambda y, shape: y.reshape(shape))
FLATTEN = Transform("flatten", lambda x: x.reshape(-1), lambda y, shape: y.reshape(shape))


def linear_kernel(in_axes: int = 1) -> Transform:
    """Flax kernel [*in, *out] -> torch Linear weight [prod(out), prod(in)] (and back).

    in_axes=1 for Dense and attention q/k/v ([D, H, hd] -> [H*hd, D]); in_axes=2 for the
    attention output kernel ([H, hd, D] -> [D, H*hd]).
    """

    def to_torch(x: np.ndarray) -> np.ndarray:
        return x.reshape(math.prod(x.shape[:in_axes]), -1).T

    def to_flax(y: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return y.T.reshape(shape)

    return Transform(f"linear_kernel(in_axes={in_axes})", to_torch, to_flax)


DENSE = linear_kernel(1)
ATTN_OUT = linear_kernel(2)
# Flax Conv kernel [k, in, out] <-> torch Conv1d weight [out, in, k].
CONV1D = Transform(
    "conv1d_kernel", lambda x: x.transpose(2, 1, 0), lambda y, shape: y.transpose(2, 1, 0)
)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One map entry: Flax param path -> (target file, torch name) through `transform`."""

    flax: tuple[str, ...]
    target: str
    torch: str
    transform: Transform


def _dense(rules: list[Rule], flax: tuple[str, ...], target: str, torch: str) -> None:
    rules.append(Rule(flax + ("kernel",), target, f"{torch}.weight", DENSE))
    rules.append(Rule(flax + ("bias",), target, f"{torch}.bias", IDENTITY))


def _layer_norm(rules: list[Rule], flax: tuple[str, ...], target: str, torch: str) -> None:
    rules.append(Rule(flax + ("scale",), target, f"{torch}.weight", IDENTITY))
    rules.append(Rule(flax + ("bias",), target, f"{torch}.bias", IDENTITY))


def ecg_rules(depth: int, selector: str, stem: str = "linear") -> list[Rule]:
    """Rules for params['ecg'] -> ECGTower state dict."""
    rules: list[Rule] = []
    e = ("ecg",)
    if stem == "linear":
        _layer_norm(rules, e + ("patch_norm",), ECG, "patch_norm")
    else:
        for i in range(len(tm.CONV_STEM)):
            rules.append(Rule(e + (f"stem_convs_{i}", "kernel"), ECG, f"stem.{i}.weight", CONV1D))
            rules.append(Rule(e + (f"stem_convs_{i}", "bias"), ECG, f"stem.{i}.bias", IDENTITY))
    _dense(rules, e + ("patch_embed",), ECG, "patch_embed")
    for name in ("lead_embed", "time_embed") + (("cls",) if selector == "cls" else ()):
        rules.append(Rule(e + (name,), ECG, name, IDENTITY))
    for i in range(depth):
        fx, pt = e + ("encoder", f"block_{i}"), f"blocks.{i}"
        _layer_norm(rules, fx + ("ln1",), ECG, f"{pt}.ln1")
        _layer_norm(rules, fx + ("ln2",), ECG, f"{pt}.ln2")
        for name in ("query", "key", "value"):
            attn, torch_attn = fx + ("attn", name), f"{pt}.attn.{name}"
            rules.append(Rule(attn + ("kernel",), ECG, f"{torch_attn}.weight", DENSE))
            rules.append(Rule(attn + ("bias",), ECG, f"{torch_attn}.bias", FLATTEN))
        rules.append(Rule(fx + ("attn", "out", "kernel"), ECG, f"{pt}.attn.out.weight", ATTN_OUT))
        rules.append(Rule(fx + ("attn", "out", "bias"), ECG, f"{pt}.attn.out.bias", IDENTITY))
        _dense(rules, fx + ("mlp", "fc1"), ECG, f"{pt}.mlp.fc1")
        _dense(rules, fx + ("mlp", "fc2"), ECG, f"{pt}.mlp.fc2")
    _layer_norm(rules, e + ("encoder", "ln_final"), ECG, "ln_final")
    if selector == "adaptive":
        _dense(rules, e + ("selector_fc1",), ECG, "selector_fc1")
        _dense(rules, e + ("selector_fc2",), ECG, "selector_fc2")
    _dense(rules, e + ("head",), ECG, "head")
    return rules


def text_rules(bert_config: text_encoder.BertConfig, pooling: str, loss: str,
               head_bias: bool = True) -> list[Rule]:
    """Rules for params['txt'] and the logit scale -> BertModel and TextHead state dicts.

    The BERT part is the inverse of text_encoder.hf_name_map (checked value by value on export).
    """
    rules = []
    table = text_encoder.hf_name_map(bert_config, with_pooler=pooling == "pooler")
    for hf_name, (path, _) in table.items():
        transform = DENSE if path[-1] == "kernel" else IDENTITY
        rules.append(Rule(("txt", "bert") + path, TEXT, hf_name, transform))
    _dense(rules, ("txt", "head"), TEXT_HEAD, "proj")
    if not head_bias:  # a bias-free text head (model.txt.head_bias=False)
        rules.pop()
    rules.append(Rule(("logit_scale",), TEXT_HEAD, "logit_scale", IDENTITY))
    if loss == "siglip":
        rules.append(Rule(("logit_bias",), TEXT_HEAD, "logit_bias", IDENTITY))
    return rules


# ----------------------------------------------------------------------------- Model specs.


def ecg_tower_kwargs(model_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """ECGTower constructor arguments for `config.model`."""
    v = common.decode_variant(model_config.ecg.variant)
    return {
        "width": v.width,
        "depth": v.depth,
        "num_heads": v.num_heads,
        "mlp_dim": v.mlp_dim,
        "patch_size": int(model_config.ecg.patch_size),
        "num_leads": tm.NUM_LEADS,
        "max_segments": int(model_config.ecg.max_segments),
        "embed_dim": int(model_config.embed_dim),
        "selector": str(model_config.selector.kind),
        "selector_hidden": int(model_config.selector.hidden),
        "stem": str(model_config.ecg.get("stem", "linear")),
        "normalize": str(model_config.ecg.get("normalize", "none")),
    }


def text_head_kwargs(
    model_config: ml_collections.ConfigDict, bert_config: text_encoder.BertConfig
) -> dict[str, Any]:
    """TextHead constructor arguments for `config.model`."""
    return {
        "hidden_size": bert_config.hidden_size,
        "embed_dim": int(model_config.embed_dim),
        "pooling": str(model_config.txt.pooling),
        "loss": str(model_config.loss),
        "head_bias": bool(model_config.txt.get("head_bias", True)),
        "normalize_features": bool(model_config.txt.get("normalize_features", False)),
    }


def hf_config_dict(
    bert_config: text_encoder.BertConfig, source: pathlib.Path | None
) -> dict[str, Any]:
    """config.json of the exported BertModel: the source's, with the architecture fields set."""
    raw = json.loads((source / "config.json").read_text()) if source else {}
    raw.update(dataclasses.asdict(bert_config))
    raw.update(model_type="bert", architectures=["BertModel"])
    raw.setdefault("position_embedding_type", "absolute")
    raw.setdefault("pad_token_id", 0)
    return raw


def model_rules(config: ml_collections.ConfigDict) -> list[Rule]:
    """Every rule for a model built from `config` (see scar.build_model)."""
    m = config.model
    bert_config = scar.bert_config_for(m.txt.checkpoint)
    depth = common.decode_variant(m.ecg.variant).depth
    stem = m.ecg.get("stem", "linear")
    return ecg_rules(depth, m.selector.kind, stem) + text_rules(
        bert_config, m.txt.pooling, m.loss, bool(m.txt.get("head_bias", True)))


def torch_shapes(config: ml_collections.ConfigDict) -> dict[str, dict[str, tuple[int, ...]]]:
    """State-dict shapes of the three torch targets (modules built on the meta device)."""
    import torch
    import transformers

    m = config.model
    bert_config = scar.bert_config_for(m.txt.checkpoint)
    with torch.device("meta"):
        modules = {
            ECG: tm.ECGTower(**ecg_tower_kwargs(m)),
            TEXT: transformers.BertModel(
                transformers.BertConfig(**hf_config_dict(bert_config, None))
            ),
            TEXT_HEAD: tm.TextHead(**text_head_kwargs(m, bert_config)),
        }
    return {
        k: {n: tuple(t.shape) for n, t in mod.state_dict().items()} for k, mod in modules.items()
    }


def flax_shapes(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Param shapes (ShapeDtypeStruct tree) of the model built from `config`; no compute."""
    model = scar.build_model(config.model)
    patch = int(config.model.ecg.patch_size)
    t = max(patch, int(config.input.sample_rate * config.input.seconds) // patch * patch)
    batch = {
        "ecg": jnp.zeros((2, t, tm.NUM_LEADS), jnp.float32),
        "lead_observed": jnp.ones((2, tm.NUM_LEADS), bool),
        "input_ids": jnp.ones((2, 4), jnp.int32),
        "attention_mask": jnp.ones((2, 4), jnp.int32),
    }
    rngs = {"params": jax.random.key(0), "masker": jax.random.key(1)}
    return jax.eval_shape(lambda: model.init(rngs, batch))["params"]


# ----------------------------------------------------------------------------- Conversion.


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Nested dict -> {path tuple: leaf}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, prefix + (str(key),)))
        else:
            out[prefix + (str(key),)] = value
    return out


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    """{path tuple: leaf} -> nested dict."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def _is_dropped(path: tuple[str, ...]) -> bool:
    return any(path[: len(prefix)] == prefix for prefix in DROPPED)


def _names(paths) -> list[str]:
    return sorted("/".join(p) for p in paths)


def _unwrap(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accepts model variables ({'params': ...}) or the params tree itself."""
    return params["params"] if set(params) == {"params"} else params


def flax_to_torch(
    params: Mapping[str, Any],
    rules: Sequence[Rule],
    expected: Mapping[str, Mapping[str, tuple[int, ...]]],
    *,
    optional: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Flax params -> {target: {torch name: array}}, strictly.

    Raises ValueError naming every Flax parameter without a rule (and not in DROPPED), every
    rule whose parameter is missing, every shape mismatch against `expected` (torch state-dict
    shapes) and every expected torch tensor left unfilled (except names in `optional`).
    """
    flat = {p: v for p, v in _flatten(_unwrap(params)).items() if not _is_dropped(p)}
    by_path = {r.flax: r for r in rules}
    if len(by_path) != len(rules):
        raise ValueError("Export map has duplicate Flax paths; fix the rules.")
    errors = []
    unmapped = set(flat) - set(by_path)
    if unmapped:
        errors.append(
            f"Flax parameters without an export rule: {_names(unmapped)} (add a Rule, or a DROPPED "
            "entry with a reason)"
        )
    missing = set(by_path) - set(flat)
    if missing:
        errors.append(f"Export rules whose Flax parameter is missing: {_names(missing)}")
    out: dict[str, dict[str, np.ndarray]] = {t: {} for t in expected}
    for path, rule in by_path.items():
        if path not in flat:
            continue
        value = np.asarray(jax.device_get(flat[path]), np.float32)  # exported in float32
        converted = np.array(rule.transform.to_torch(value), order="C")
        want = expected.get(rule.target, {}).get(rule.torch)
        if want is None:
            errors.append(
                f"Rule {'/'.join(path)} -> {rule.target}:{rule.torch}: no such torch name"
            )
        elif converted.shape != tuple(want):
            errors.append(
                f"Shape mismatch: {'/'.join(path)} {value.shape} -> {rule.target}:{rule.torch} "
                f"{converted.shape} via {rule.transform.name}, torch expects {tuple(want)}"
            )
        else:
            out[rule.target][rule.torch] = converted
    optional = optional or {}
    for target, names in expected.items():
        unfilled = sorted(set(names) - set(out[target]) - set(optional.get(target, ())))
        if unfilled:
            errors.append(f"Torch tensors of {target} that no rule fills: {unfilled}")
    if errors:
        raise ValueError("Export to torch failed:\n  " + "\n  ".join(errors))
    return out


def torch_to_flax(
    tensors: Mapping[str, Mapping[str, np.ndarray]],
    rules: Sequence[Rule],
    shapes: Mapping[str, Any],
    *,
    ignore: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """{target: {torch name: array}} -> Flax params (DROPPED subtrees absent), strictly.

    `shapes` is the Flax param shape tree; raises ValueError naming missing torch tensors,
    tensors no rule reads (except names in `ignore`) and shape mismatches.
    """
    flat_shapes = {p: s for p, s in _flatten(_unwrap(shapes)).items() if not _is_dropped(p)}
    errors, flat = [], {}
    used = {t: set() for t in tensors}
    for rule in rules:
        source = tensors.get(rule.target, {})
        if rule.torch not in source:
            errors.append(f"Missing torch tensor {rule.target}:{rule.torch}")
            continue
        if rule.flax not in flat_shapes:
            errors.append(f"Rule target {'/'.join(rule.flax)} is not a parameter of this model")
            continue
        used[rule.target].add(rule.torch)
        want = tuple(flat_shapes[rule.flax].shape)
        y = np.asarray(source[rule.torch])
        if y.size != math.prod(want):
            errors.append(
                f"Shape mismatch: {rule.target}:{rule.torch} {y.shape} cannot become "
                f"{'/'.join(rule.flax)} {want}"
            )
            continue
        flat[rule.flax] = np.array(rule.transform.to_flax(y, want), order="C")
    ignore = ignore or {}
    for target, names in tensors.items():
        unused = sorted(set(names) - used[target] - set(ignore.get(target, ())))
        if unused:
            errors.append(f"Torch tensors of {target} not read by any rule: {unused}")
    unset = set(flat_shapes) - set(flat)
    if unset and not errors:
        errors.append(f"Flax parameters no rule sets: {_names(unset)}")
    if errors:
        raise ValueError("Import from torch failed:\n  " + "\n  ".join(errors))
    return _unflatten(flat)


# ----------------------------------------------------------------------------- Files.


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _versions() -> dict[str, str | None]:
    out = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _save(tensors: Mapping[str, np.ndarray], path: pathlib.Path) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(dict(tensors), str(path), metadata=SAFETENSORS_METADATA)
    path.chmod(0o644)  # safetensors writes 0600; an export is meant to be shared


def _source_pooler(source: pathlib.Path | None) -> dict[str, np.ndarray]:
    """pooler.dense.{weight,bias} of the source checkpoint, any layout ({} when it has none)."""
    if source is None:
        return {}
    tensors = hf_checkpoint.read_tensors(source)
    short = {n.removeprefix(text_encoder.HF_PREFIX): v for n, v in tensors.items()}
    return {n: v for n, v in short.items() if n.startswith("pooler.dense.")}


def pooler_names(config: ml_collections.ConfigDict) -> dict[str, list[str]]:
    """BertModel pooler tensors that SCAR's params do not hold (pooling other than 'pooler')."""
    unused = config.model.txt.pooling != "pooler"
    return {TEXT: ["pooler.dense.weight", "pooler.dense.bias"] if unused else []}


def _prepare_out_dir(out_dir: pathlib.Path, overwrite: bool) -> None:
    """Creates out_dir; refuses a non-empty one unless it is an export and `overwrite`."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"Export folder {out_dir} is not empty; choose a new folder or pass "
                "overwrite=True (--overwrite) to replace a previous export."
            )
        if not (out_dir / "manifest.json").is_file():
            raise FileExistsError(
                f"{out_dir} is not empty and holds no manifest.json, so it is not a previous "
                "export; refusing to overwrite it. Choose a new folder."
            )
        old = json.loads((out_dir / "manifest.json").read_text()).get("sha256", {})
        for rel in list(old) + ["manifest.json"]:
            (out_dir / rel).unlink(missing_ok=True)
    (out_dir / "text").mkdir(parents=True, exist_ok=True)


def _check_bert_inverse(
    tensors: Mapping[str, np.ndarray], params: Mapping[str, Any], bert_config, pooling: str
) -> None:
    """Re-imports the BERT tensors through text_encoder.hf_name_map; must give the params."""
    table = text_encoder.hf_name_map(bert_config, with_pooler=pooling == "pooler")
    bert = _flatten(_unwrap(params)["txt"]["bert"])
    for hf_name, (path, transform) in table.items():
        if not np.array_equal(transform(tensors[hf_name]), np.asarray(bert[path])):
            raise ValueError(
                f"Exported {hf_name} does not load back to txt/bert/{'/'.join(path)} through "
                "text_encoder.hf_name_map; the export rule's transform is wrong."
            )


def export(
    params: Mapping[str, Any],
    config: ml_collections.ConfigDict,
    out_dir: str | pathlib.Path,
    *,
    source: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Writes the PyTorch export of `params` (a model from `config`) to out_dir; -> manifest.

    `source` (e.g. {'checkpoint': path, 'step': n}) is recorded in the manifest. out_dir must
    be empty or absent, or a previous export when `overwrite` (its files are replaced).
    """
    from scar_jax import checkpointing

    if checkpointing.is_url(out_dir):
        raise ValueError(
            f"export writes a local folder, not {os.fspath(out_dir)}; export to a local path "
            "and copy it (e.g. gcloud storage cp -r)."
        )
    out_dir = pathlib.Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    m = config.model
    text_source = scar.text_checkpoint_folder(m.txt.checkpoint)
    bert_config = scar.bert_config_for(m.txt.checkpoint)
    expected = torch_shapes(config)
    pooler = {}
    if m.txt.pooling != "pooler":
        # SCAR does not use BERT's pooler here; keep the source's untouched so the HF model
        # loads complete (pooler_output is then the source model's).
        pooler = _source_pooler(text_source)
    tensors = flax_to_torch(params, model_rules(config), expected, optional=pooler_names(config))
    _check_bert_inverse(tensors[TEXT], params, bert_config, m.txt.pooling)
    for name, value in pooler.items():
        if tuple(value.shape) != expected[TEXT][name]:
            raise ValueError(
                f"Source checkpoint's {name} has shape {value.shape}; the exported BertModel "
                f"expects {expected[TEXT][name]}."
            )
        tensors[TEXT][name] = np.array(value, np.float32, order="C")

    written = []
    for target, rel in FILES.items():
        _save(tensors[target], out_dir / rel)
        written.append(rel)
    (out_dir / "ecg_tower.py").write_text(pathlib.Path(tm.__file__).read_text())
    (out_dir / tm.ECG_CONFIG).write_text(json.dumps(ecg_tower_kwargs(m), indent=2) + "\n")
    head_kwargs = text_head_kwargs(m, bert_config)
    (out_dir / tm.TEXT_HEAD_CONFIG).write_text(json.dumps(head_kwargs, indent=2) + "\n")
    text_dir = out_dir / "text"
    (text_dir / "config.json").write_text(
        json.dumps(hf_config_dict(bert_config, text_source), indent=2) + "\n"
    )
    written += ["ecg_tower.py", tm.ECG_CONFIG, tm.TEXT_HEAD_CONFIG, "text/config.json"]
    tokenizer = []
    if text_source is not None:
        for name in TOKENIZER_FILES:
            if (text_source / name).is_file():
                shutil.copyfile(text_source / name, text_dir / name)
                tokenizer.append(name)
    if not tokenizer:
        logging.warning(
            "Text checkpoint %r has no tokenizer files; %s has none and AutoTokenizer cannot "
            "load it (train with a Hugging Face folder that holds a tokenizer).",
            m.txt.checkpoint,
            text_dir,
        )
    written += [f"text/{n}" for n in tokenizer]

    scale = float(np.asarray(_unwrap(params)["logit_scale"]))
    manifest = {
        "format": FORMAT,
        "source": dict(source or {}),
        "config": json.loads(config.to_json_best_effort()),
        "versions": _versions(),
        "ecg_tower": {"module": "ecg_tower.py:ECGTower", "kwargs": ecg_tower_kwargs(m)},
        "text": {
            "folder": "text",
            "checkpoint": str(m.txt.checkpoint),
            "pooling": str(m.txt.pooling),
            "max_len": int(m.txt.max_len),
            "tokenizer": tokenizer,
            "pooler": "trained"
            if m.txt.pooling == "pooler"
            else ("copied from the source checkpoint (unused by SCAR)" if pooler else "absent"),
            "head": {"module": "ecg_tower.py:TextHead", "kwargs": head_kwargs},
        },
        "logit_scale": {"log": scale, "scale": min(math.exp(scale), tm.LOGIT_SCALE_MAX)},
        "dropped": {"/".join(k) + "/": v for k, v in DROPPED.items()},
        "sha256": {rel: _sha256(out_dir / rel) for rel in sorted(written)},
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    logging.info(
        "Exported %d ECG, %d text, %d head tensors to %s.",
        len(tensors[ECG]),
        len(tensors[TEXT]),
        len(tensors[TEXT_HEAD]),
        out_dir,
    )
    return manifest


def read_manifest(out_dir: str | pathlib.Path, *, verify: bool = True) -> dict[str, Any]:
    """manifest.json of an export; with `verify`, every listed file's sha256 is checked."""
    out_dir = pathlib.Path(out_dir)
    path = out_dir / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"No manifest.json in {out_dir}; is it a scar_jax export folder?")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}.")
    if verify:
        bad = [
            rel
            for rel, digest in manifest["sha256"].items()
            if not (out_dir / rel).is_file() or _sha256(out_dir / rel) != digest
        ]
        if bad:
            raise ValueError(f"Files of {out_dir} missing or changed since export: {bad}.")
    return manifest


def load_exported_params(
    out_dir: str | pathlib.Path,
) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
    """(config, Flax params) read back from an export folder (no masker); no pickle involved.

    Self-contained: the BERT architecture is read from the export's own text/config.json, so
    the text checkpoint the model was trained from need not be present.
    """
    from safetensors.numpy import load_file

    out_dir = pathlib.Path(out_dir)
    manifest = read_manifest(out_dir)
    config = ml_collections.ConfigDict(manifest["config"])
    local = ml_collections.ConfigDict(manifest["config"])
    local.model.txt.checkpoint = str(out_dir / "text")  # a Hugging Face BERT folder itself
    tensors = {t: load_file(str(out_dir / rel)) for t, rel in FILES.items()}
    params = torch_to_flax(
        tensors, model_rules(local), flax_shapes(local), ignore=pooler_names(local)
    )
    return config, params


# ----------------------------------------------------------------------------- Checkpoints.

def export_checkpoint(
    checkpoint_dir: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    *,
    step: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Exports checkpoint `step` (default: the latest) of a training run; -> manifest.

    The model is rebuilt from the config saved with the checkpoint; the text checkpoint it
    names (e.g. 'minilm' or a Hugging Face folder) must be present for its tokenizer files.
    """
    from scar_jax import checkpointing

    folder = checkpointing.checkpoint_folder(checkpoint_dir)  # absolute; a gs:// URL kept as is
    if step is None:
        step = checkpointing.latest_step(folder)
        if step is None:
            raise FileNotFoundError(f"No complete checkpoint in {folder}; nothing to export.")
    params, saved_config = checkpointing.restore_params(folder, step)
    if saved_config is None or "model" not in saved_config:
        raise ValueError(
            f"Checkpoint {folder} step {step} has no saved config with a 'model' block; the "
            "export needs it to rebuild the model. Export in-memory params with "
            "export(params, config, out_dir) instead."
        )
    config = ml_collections.ConfigDict(saved_config)
    params = jax.tree.map(np.asarray, params)
    source = {"checkpoint": folder, "step": int(step)}
    return export(params, config, out_dir, source=source, overwrite=overwrite)


def run(checkpoint: str, out: str, step: int | None = None, overwrite: bool = False) -> dict:
    """The `scar_jax.main export` command: export, verify the hashes, log a summary."""
    manifest = export_checkpoint(checkpoint, out, step=step, overwrite=overwrite)
    read_manifest(out)
    logging.info(
        "Exported %s step %s to %s: %s",
        manifest["source"]["checkpoint"],
        manifest["source"]["step"],
        out,
        ", ".join(sorted(manifest["sha256"])),
    )
    return manifest
