"""BERT text tower: parity with transformers' torch BertModel, strict name map, pooling, dropout."""
import dataclasses
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from scar_jax.models import text_encoder as te

TOL = 1e-5
WORDS = ("the heart rate is normal sinus rhythm with left bundle branch block atrial fibrillation "
         "ventricular premature beats st elevation ecg").split()
TINY_TEXTS = ["the heart rate is normal", "sinus rhythm",
              "atrial fibrillation with ventricular premature beats and st elevation on the ecg",
              "left bundle branch block"]
MINILM_TEXTS = ["A man is playing a guitar.", "Hi!",
                "Sinus rhythm with occasional premature ventricular complexes and a prolonged QT.",
                "The quick brown fox jumps over the lazy dog near the river bank."]


def _write_tiny_bert(folder: pathlib.Path, seed: int = 0) -> None:
    """Saves a random tiny torch BertModel (all weights perturbed) + a word-level tokenizer."""
    cfg = te.BertConfig.tiny()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + list(WORDS)
    vocab += [f"[unused{i}]" for i in range(cfg.vocab_size - len(vocab))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(seed)
    model = transformers.BertModel(transformers.BertConfig(**dataclasses.asdict(cfg)))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(folder, safe_serialization=True)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("tiny_bert")
    _write_tiny_bert(folder)
    return folder


def _torch_outputs(folder, batch):
    """Torch BertModel (eager, eval) -> (last hidden [B,L,H], cls, pooler, mean) as numpy."""
    model = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    t = {k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in batch.items()}
    with torch.no_grad():
        out = model(**t)
    h = out.last_hidden_state
    m = t["attention_mask"].unsqueeze(-1).float()
    mean = (h * m).sum(1) / m.sum(1)
    return {"hidden": h.numpy(), "cls": h[:, 0].numpy(), "pooler": out.pooler_output.numpy(),
            "mean": mean.numpy()}


def _max_diffs(folder, batch):
    """Max-abs differences flax vs torch for the masked hidden state and each pooling."""
    ref = _torch_outputs(folder, batch)
    mask = batch["attention_mask"][..., None].astype(bool)
    diffs = {"hidden": 0.0}
    for pooling in te.POOLINGS:
        module, params = te.load_hf_bert(folder, pooling=pooling)
        pooled, aux = module.apply({"params": params}, batch["input_ids"],
                                   batch["attention_mask"], batch["token_type_ids"])
        assert pooled.dtype == jnp.float32 and pooled.shape == ref[pooling].shape
        assert ("pooler" in aux) == (pooling == "pooler")
        diffs[pooling] = float(np.max(np.abs(np.asarray(pooled) - ref[pooling])))
        hidden_diff = np.where(mask, np.asarray(aux["hidden"]) - ref["hidden"], 0.0)
        diffs["hidden"] = max(diffs["hidden"], float(np.max(np.abs(hidden_diff))))
    return diffs


def test_tiny_config_roundtrip(tiny_folder):
    assert te.BertConfig.from_json(tiny_folder) == te.BertConfig.tiny()
    assert te.BertConfig.from_json(tiny_folder / "config.json") == te.BertConfig.tiny()


def test_parity_tiny(tiny_folder):
    batch = te.tokenize(te.load_tokenizer(tiny_folder), TINY_TEXTS, max_len=16)
    # Exercise token types too: second half of each real sequence is segment 1.
    lengths = batch["attention_mask"].sum(1)
    pos = np.arange(16)[None]
    second = (pos >= lengths[:, None] // 2) & (pos < lengths[:, None])
    batch["token_type_ids"] = second.astype(np.int32)
    assert batch["token_type_ids"].any() and (batch["attention_mask"] == 0).any()
    diffs = _max_diffs(tiny_folder, batch)
    print("tiny max-abs diffs:", diffs)
    assert max(diffs.values()) <= TOL, diffs


def test_parity_minilm():
    folder = te.minilm_folder()
    tok = te.load_tokenizer(folder)
    batch = te.tokenize(tok, MINILM_TEXTS, max_len=16)
    assert batch["attention_mask"].sum(1).tolist() == [9, 4, 16, 16]  # padded; last two truncated
    assert batch["input_ids"].dtype == np.int32 and batch["input_ids"].shape == (4, 16)
    assert (batch["input_ids"][:, 0] == tok.cls_token_id).all()
    assert batch["input_ids"][2, 15] == batch["input_ids"][3, 15] == tok.sep_token_id
    diffs = _max_diffs(folder, batch)
    print("MiniLM max-abs diffs:", diffs)
    assert max(diffs.values()) <= TOL, diffs


# ----------------------------------------------------------------------------- Strict name map.

def _variant(src: pathlib.Path, dst: pathlib.Path, edit) -> pathlib.Path:
    """Copy of src's config.json with model.safetensors rewritten by edit(dict) -> dict."""
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    save_file(edit(dict(load_file(str(src / "model.safetensors")))), str(dst / "model.safetensors"))
    return dst


def _with(**extra):
    return lambda w: {**w, **extra}


def test_unknown_weight_fails(tiny_folder, tmp_path):
    extra = _with(**{"encoder.layer.0.foo.weight": np.ones(3, np.float32)})
    folder = _variant(tiny_folder, tmp_path / "m", extra)
    with pytest.raises(ValueError, match=r"not used by the name map.*layer\.0\.foo\.weight"):
        te.load_hf_bert(folder)


def test_missing_weight_fails(tiny_folder, tmp_path):
    def drop(w):
        del w["encoder.layer.1.output.dense.bias"]
        return w
    folder = _variant(tiny_folder, tmp_path / "m", drop)
    with pytest.raises(ValueError,
                       match=r"without a checkpoint weight.*layer\.1\.output\.dense\.bias"):
        te.load_hf_bert(folder)


def test_wrong_shape_fails(tiny_folder, tmp_path):
    name = "encoder.layer.0.intermediate.dense.weight"  # torch [37, 32]
    folder = _variant(tiny_folder, tmp_path / "m", _with(**{name: np.zeros((36, 32), np.float32)}))
    with pytest.raises(ValueError,
                       match=r"Shape mismatch.*intermediate\.dense\.weight.*\(36, 32\).*\(32, 37"):
        te.load_hf_bert(folder)


def test_ignore_unused_and_bert_prefix(tiny_folder, tmp_path):
    _, ref = te.load_hf_bert(tiny_folder, pooling="pooler")
    # An MLM head is dropped (logged, tests/models/test_hf_checkpoint.py); another unknown
    # tensor fails unless ignore_unused names it.
    extra = {"cls.predictions.bias": np.zeros(99, np.float32),
             "classifier.bias": np.zeros(2, np.float32)}
    folder = _variant(tiny_folder, tmp_path / "head",
                      lambda w: {**{"bert." + k: v for k, v in w.items()}, **extra})
    with pytest.raises(ValueError, match=r"not used by the name map: \['classifier\.bias'\]"):
        te.load_hf_bert(folder, pooling="pooler")
    _, params = te.load_hf_bert(folder, pooling="pooler", ignore_unused=[r"classifier\..*"])
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(ref)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, ref)
    # Kernels are transposed torch weights, LayerNorm weight -> scale.
    w = load_file(str(tiny_folder / "model.safetensors"))
    key = params["encoder"]["layer_1"]["attention"]["self"]["key"]
    np.testing.assert_array_equal(key["kernel"], w["encoder.layer.1.attention.self.key.weight"].T)
    np.testing.assert_array_equal(params["embeddings"]["LayerNorm"]["scale"],
                                  w["embeddings.LayerNorm.weight"])


def test_pooler_required_only_for_pooler_pooling(tiny_folder, tmp_path):
    folder = _variant(tiny_folder, tmp_path / "m",
                      lambda w: {k: v for k, v in w.items() if not k.startswith("pooler.")})
    _, params = te.load_hf_bert(folder, pooling="cls")
    assert set(params) == {"embeddings", "encoder"}
    with pytest.raises(ValueError, match="no pooler"):
        te.load_hf_bert(folder, pooling="pooler")


def test_config_rejects_non_bert(tiny_folder, tmp_path):
    raw = json.loads((tiny_folder / "config.json").read_text())
    for key, value, msg in [("model_type", "roberta", "model_type"),
                            ("position_embedding_type", "relative_key", "position_embedding_type"),
                            ("hidden_act", "swish", "swish")]:
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({**raw, key: value}))
        with pytest.raises(ValueError, match=msg):
            te.BertConfig.from_json(path)


def test_load_tokenizer_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        te.load_tokenizer(tmp_path)


# ----------------------------------------------------------------------------- Module behaviour.

def _init(pooling="cls"):
    module = te.BertEncoder(te.BertConfig.tiny(), pooling=pooling)
    ids = jnp.asarray(np.random.default_rng(0).integers(5, 99, (2, 7)), jnp.int32)
    mask = jnp.asarray([[1] * 7, [1] * 4 + [0] * 3], jnp.int32)
    return module, module.init(jax.random.PRNGKey(0), ids, mask), ids, mask


def test_bad_pooling_raises():
    with pytest.raises(ValueError, match=r"'max'.*allowed.*cls.*pooler.*mean"):
        _init("max")


def test_mean_pooling_ignores_padding():
    module, variables, ids, mask = _init("mean")
    pooled, aux = module.apply(variables, ids, mask)
    np.testing.assert_allclose(pooled[1], aux["hidden"][1, :4].mean(0), rtol=1e-6, atol=1e-6)
    # Padding tokens' ids do not change real-token outputs.
    pooled2, _ = module.apply(variables, ids.at[1, 4:].set(0), mask)
    np.testing.assert_allclose(pooled2, pooled, rtol=1e-6, atol=1e-6)


def test_dropout():
    module, variables, ids, mask = _init()
    det1, _ = module.apply(variables, ids, mask)
    det2, _ = module.apply(variables, ids, mask, deterministic=True)
    np.testing.assert_array_equal(det1, det2)
    key = jax.random.PRNGKey(1)
    drop1, _ = module.apply(variables, ids, mask, deterministic=False, rngs={"dropout": key})
    drop2, _ = module.apply(variables, ids, mask, deterministic=False, rngs={"dropout": key})
    np.testing.assert_array_equal(drop1, drop2)
    assert float(jnp.max(jnp.abs(drop1 - det1))) > 1e-3
