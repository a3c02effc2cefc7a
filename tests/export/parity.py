"""Shared helpers of the export tests: tiny text checkpoint, random params, JAX vs torch outputs."""

import dataclasses
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from configs import scar as scar_config
from scar_jax import losses
from scar_jax.export import to_torch
from scar_jax.models import scar
from scar_jax.models import text_encoder as te

TOL = 1e-5
WORDS = "sinus rhythm atrial fibrillation normal ecg left bundle branch block st elevation".split()
PROMPTS = ["atrial fibrillation", "sinus rhythm", "normal ecg", "left bundle branch block"]
T = 1000  # samples per record in the parity tests (10 segments of 100)


def write_text_source(folder: pathlib.Path) -> pathlib.Path:
    """A tiny random HF BERT folder with a word-level tokenizer (the text 'checkpoint')."""
    cfg = te.BertConfig.tiny()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    vocab += [f"[unused{i}]" for i in range(cfg.vocab_size - len(vocab))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(**dataclasses.asdict(cfg)))
    bert.save_pretrained(folder, safe_serialization=True)
    return folder


def make_config(arg: str, text: str):
    """runlocal config with `arg`; runlocal's variant mu is replaced by arg's variant if given."""
    config = scar_config.get_config(f"runlocal,{arg}")
    config.model.ecg.variant = config.arg.variant if "variant=" in arg else "mu"
    config.model.txt.checkpoint = text
    return config


def ecg_inputs(batch: int = 5, t: int = T, seed: int = 0):
    """Signals in [0, 1] with missing leads (NaN-filled), removed time spans and a soft keep."""
    rng = np.random.default_rng(seed)
    ecg = rng.random((batch, t, 12)).astype(np.float32)
    lead_obs = np.ones((batch, 12), bool)
    lead_obs[1, 6:] = False  # limb leads only
    lead_obs[2, [0, 2, 4, 7, 9, 11]] = False
    lead_obs[4] = False  # nothing observed at all
    ecg[~lead_obs[:, None, :].repeat(t, 1)] = np.nan  # absent leads hold garbage
    time_obs = np.ones((batch, t), bool)
    time_obs[0, 250:500] = False  # a removed span (segments 2-4)
    time_obs[2, 730:] = False  # a partial segment removes segment 7 too
    keep = rng.random((batch, 12, t // 100)).astype(np.float32) + 0.05
    keep[3, :, 5:] = 0.0  # the second half removed by keep
    keep[3, 3] = 0.0  # and lead aVR
    return ecg, lead_obs, time_obs, keep


def random_params(config, seed: int = 0, log_scale: float = np.log(50.0)) -> dict:
    """Random params of the model of `config` (numpy, no compile); every entry is non-trivial.

    LayerNorm scales are 1 + noise, everything else noise, so a wrong bias or scale mapping
    shows in the outputs. The text tower's weights are loaded from its checkpoint, if any, then
    perturbed the same way.
    """
    rng = np.random.default_rng(seed)
    shapes = to_torch.flax_shapes(config)
    variables = scar.load_text_weights(
        {"params": jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)},
        config.model.txt.checkpoint,
        config.model.txt.pooling,
    )

    def fill(path, x):
        name = jax.tree_util.keystr(path)
        noise = rng.normal(scale=0.2, size=x.shape).astype(np.float32)
        return jnp.asarray(np.asarray(x) + noise + (1.0 if name.endswith("['scale']") else 0.0))

    params = jax.tree_util.tree_map_with_path(fill, variables["params"])
    params["logit_scale"] = jnp.asarray(log_scale, jnp.float32)
    return params


def init(config, seed: int = 0, **kw):
    """(model, random variables) for `config`."""
    return scar.build_model(config.model), {"params": random_params(config, seed, **kw)}


def load_tower_module(out_dir: pathlib.Path):
    """Imports the exported ecg_tower.py under a unique name (no sys.path changes)."""
    name = f"ecg_tower_{abs(hash(str(out_dir)))}"
    spec = importlib.util.spec_from_file_location(name, out_dir / "ecg_tower.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jax_outputs(model, variables, ecg, lead_obs, time_obs, keep, text):
    """JAX ECG embeddings (three input modes), text embeddings and logits, in one jit."""

    @jax.jit
    def run(ecg, lead_obs, time_obs, keep, text):
        embed = lambda *a: model.apply(variables, *a, method=model.embed_ecg)  # noqa: E731
        z_plain, _ = embed(ecg, lead_obs)
        z_time, _ = embed(ecg, lead_obs, time_obs)
        z_keep, aux_keep = embed(ecg, lead_obs, time_obs, keep)
        z_txt, _ = model.apply(variables, text, method=model.embed_text)
        p = variables["params"]
        logits = losses.capped_scale(p["logit_scale"]) * z_keep @ z_txt.T
        if "logit_bias" in p:
            logits = logits + p["logit_bias"]
        return dict(
            z_plain=z_plain,
            z_time=z_time,
            z_keep=z_keep,
            z_txt=z_txt,
            logits=logits,
            weights=aux_keep["weights"],
            pre_logits=aux_keep["pre_logits"],
        )

    out = run(ecg, lead_obs, time_obs, keep, text)
    return {k: np.asarray(v) for k, v in out.items()}


def torch_outputs(out_dir, ecg, lead_obs, time_obs, keep, text):
    """The same from the export folder: ecg_tower.py, HF AutoModel and the text head."""
    mod = load_tower_module(out_dir)
    tower, head = mod.load_ecg_tower(out_dir), mod.load_text_head(out_dir)
    bert = transformers.AutoModel.from_pretrained(out_dir / "text").eval()
    t = lambda x: torch.from_numpy(np.array(x))  # noqa: E731
    with torch.no_grad():
        z_plain = tower(t(ecg), t(lead_obs))
        z_time = tower(t(ecg), t(lead_obs), t(time_obs))
        z_keep, aux = tower.embed(t(ecg), t(lead_obs), t(time_obs), t(keep))
        ids = {k: t(v).long() for k, v in text.items()}
        hf = bert(**ids)
        z_txt = head(hf.last_hidden_state, ids["attention_mask"], hf.pooler_output)
        logits = head.logits(z_keep, z_txt)
    out = dict(
        z_plain=z_plain,
        z_time=z_time,
        z_keep=z_keep,
        z_txt=z_txt,
        logits=logits,
        weights=aux["weights"],
        pre_logits=aux["pre_logits"],
    )
    return {k: v.numpy() for k, v in out.items()}


def tokens(folder, texts=PROMPTS):
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    enc = tok(texts, padding=True, return_tensors="np")
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return {k: np.asarray(enc[k], np.int32) for k in keys}
