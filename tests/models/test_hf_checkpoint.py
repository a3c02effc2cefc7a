"""HF BERT checkpoints in every layout and variant: loaded output == the torch model that wrote it.

Each test writes a tiny random checkpoint with transformers + torch (offline), loads it with
text_encoder.load_hf_bert and compares the encoder's hidden states and pooled features with
the very torch model that was saved (eager attention, eval mode), max-abs difference <= TOL.
"""
import json
import logging
import pathlib
import shutil
import sys

import numpy as np
import pytest
import torch
import transformers

from scar_jax.models import hf_checkpoint
from scar_jax.models import text_encoder as te

TOL = 1e-5  # float32 both sides; measured max-abs differences are ~1e-6
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)

# Tiny configs with the fields that tell the clinical BERTs apart (vocabulary, positions,
# token types, norm eps, activation, heads, head class). Sizes are shrunk; vocab sizes are
# the real ones (the embedding table is where a wrong vocab_size shows).
VARIANTS = {
    # bert-base-uncased: BertForPreTraining (MLM + NSP heads, `bert.` prefix)
    "bert": (transformers.BertForPreTraining, dict(vocab_size=30522)),
    # PubMedBERT / BiomedBERT: BertForMaskedLM (MLM head, no pooler), its own vocabulary
    "pubmedbert": (transformers.BertForMaskedLM, dict(vocab_size=30522)),
    # BiomedBERT-large shape: 1024 wide with 16 heads -> here 64 wide, 16 heads of 4
    "biomedbert_large": (transformers.BertForMaskedLM,
                         dict(vocab_size=30522, hidden_size=64, num_attention_heads=16,
                              intermediate_size=96)),
    # MedCPT-Query-Encoder: a plain BertModel with its pooler (CLS pooling in MedCPT)
    "medcpt": (transformers.BertModel, dict(vocab_size=30522, max_position_embeddings=512)),
    # BioLinkBERT: BertModel, 28895-token vocabulary
    "biolinkbert": (transformers.BertModel, dict(vocab_size=28895)),
    # Other values of the remaining architecture fields a BERT config may carry
    "other_fields": (transformers.BertModel,
                     dict(vocab_size=120, max_position_embeddings=24, type_vocab_size=1,
                          layer_norm_eps=1e-5, hidden_act="gelu_new", num_hidden_layers=3)),
    "relu": (transformers.BertModel, dict(vocab_size=64, hidden_act="relu", type_vocab_size=3)),
}


def _write(folder: pathlib.Path, cls=transformers.BertModel, seed: int = 0, **save_kwargs):
    """Saves a random (perturbed) `cls` with TINY sizes + the VARIANTS-style `fields` given in
    save_kwargs['fields']; returns the torch model (eval) that was saved."""
    fields = {**TINY, **save_kwargs.pop("fields", {})}
    dtype = save_kwargs.pop("dtype", None)
    torch.manual_seed(seed)
    model = cls(transformers.BertConfig(**fields), **({} if cls is not transformers.BertModel
                                                       else {"add_pooling_layer": True}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(folder, **save_kwargs)
    return model.eval()


def _batch(config: te.BertConfig, seed: int = 0, length: int = 12) -> dict[str, np.ndarray]:
    """Random ids [3, length] in the vocabulary, padding in two rows, token types in range."""
    rng = np.random.default_rng(seed)
    length = min(length, config.max_position_embeddings)
    mask = np.ones((3, length), np.int32)
    mask[1, length - 4:] = 0
    mask[2, 3:] = 0
    return {"input_ids": rng.integers(0, config.vocab_size, (3, length)).astype(np.int32),
            "attention_mask": mask,
            "token_type_ids": rng.integers(0, config.type_vocab_size, (3, length)).astype(np.int32)}


def _reference(model, batch) -> dict[str, np.ndarray]:
    """Hidden states [B, L, H] (+ pooler output) of the saved torch model's encoder."""
    bert = getattr(model, "bert", model)  # heads models hold the encoder as .bert
    bert = bert.float().eval()
    bert.config._attn_implementation = "eager"
    t = {k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()}
    with torch.no_grad():
        out = bert(**t)
    ref = {"hidden": out.last_hidden_state.numpy()}
    if out.pooler_output is not None:
        ref["pooler"] = out.pooler_output.numpy()
    return ref


def _max_diff(folder: pathlib.Path, model, poolings=("cls", "mean")) -> float:
    """Max-abs difference of our loader's hidden states / pooled outputs vs the torch model."""
    config = te.BertConfig.from_json(folder)
    batch = _batch(config)
    ref = _reference(model, batch)
    mask = batch["attention_mask"][..., None].astype(bool)
    worst = 0.0
    for pooling in poolings:
        module, params = te.load_hf_bert(folder, pooling=pooling)
        pooled, aux = module.apply({"params": params}, batch["input_ids"],
                                   batch["attention_mask"], batch["token_type_ids"])
        hidden = np.asarray(aux["hidden"])
        worst = max(worst, float(np.max(np.abs(np.where(mask, hidden - ref["hidden"], 0)))))
        want = {"cls": ref["hidden"][:, 0],
                "mean": (ref["hidden"] * mask).sum(1) / mask.sum(1),
                "pooler": ref.get("pooler")}[pooling]
        worst = max(worst, float(np.max(np.abs(np.asarray(pooled) - want))))
    return worst


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_loads_and_matches_torch(name, tmp_path, caplog):
    cls, fields = VARIANTS[name]
    model = _write(tmp_path, cls, fields=fields)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["architectures"] == [cls.__name__]
    config = te.BertConfig.from_json(tmp_path)
    for key in ("vocab_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
                "hidden_act", "hidden_size", "num_attention_heads"):
        assert getattr(config, key) == raw[key], key
    poolings = ("cls", "mean") + (("pooler",) if cls is transformers.BertModel else ())
    with caplog.at_level(logging.INFO, logger="absl"):
        diff = _max_diff(tmp_path, model, poolings)
    assert diff <= TOL, (name, diff)
    head_lines = [r.getMessage() for r in caplog.records if "pre-training head" in r.getMessage()]
    if cls is transformers.BertModel:
        assert head_lines == []
    else:  # one line per load naming the dropped head tensors; the prefix was `bert.`
        stored = hf_checkpoint.read_tensors(tmp_path)
        heads = sorted(n for n in stored if n.startswith("cls."))
        assert heads and all(n.startswith("bert.") or n.startswith("cls.") for n in stored)
        assert len(head_lines) == len(poolings)
        assert f"{len(heads)} pre-training head tensor(s)" in head_lines[0]
        assert all(h in head_lines[0] for h in heads)
        if cls is transformers.BertForPreTraining:
            assert "cls.seq_relationship.weight" in head_lines[0]


@pytest.mark.parametrize("serialization", ["safetensors", "bin"])
def test_sharded_checkpoint_matches_torch(serialization, tmp_path):
    model = _write(tmp_path, transformers.BertForPreTraining, fields={"vocab_size": 500},
                   max_shard_size="40KB", safe_serialization=serialization == "safetensors")
    index = {"safetensors": hf_checkpoint.SAFETENSORS_INDEX,
             "bin": hf_checkpoint.TORCH_BIN_INDEX}[serialization]
    weight_map = json.loads((tmp_path / index).read_text())["weight_map"]
    shards = sorted(set(weight_map.values()))
    assert len(shards) >= 3 and hf_checkpoint.weight_files(tmp_path) == [
        tmp_path / s for s in shards]
    assert not (tmp_path / hf_checkpoint.SAFETENSORS).exists()
    assert _max_diff(tmp_path, model) <= TOL


def test_single_bin_and_legacy_gamma_beta_without_model_type(tmp_path):
    """An early checkpoint (Bio_ClinicalBERT era): config.json without model_type, one
    pytorch_model.bin whose LayerNorm tensors are named gamma/beta, cased 28996 vocab."""
    model = _write(tmp_path, transformers.BertForMaskedLM, fields={"vocab_size": 28996},
                   safe_serialization=False)
    state = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                       "LayerNorm.beta"): v
              for k, v in state.items()}
    assert sum(k.endswith("LayerNorm.gamma") for k in legacy) == 1 + 2 * TINY["num_hidden_layers"] + 1
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    raw = json.loads((tmp_path / "config.json").read_text())
    del raw["model_type"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert _max_diff(tmp_path, model) <= TOL


def test_bfloat16_safetensors_load_as_float32(tmp_path):
    model = _write(tmp_path, transformers.BertModel, fields={"vocab_size": 50},
                   dtype=torch.bfloat16)
    stored = hf_checkpoint.read_tensors(tmp_path)
    assert {v.dtype for v in stored.values() if v.dtype.kind == "f"} == {np.dtype(np.float32)}
    assert _max_diff(tmp_path, model, ("cls", "pooler")) <= TOL  # the bf16 weights, exactly


def test_safetensors_preferred_over_bin(tmp_path):
    model = _write(tmp_path, transformers.BertModel, fields={"vocab_size": 50})
    torch.save({"junk": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    assert hf_checkpoint.weight_files(tmp_path) == [tmp_path / "model.safetensors"]
    assert _max_diff(tmp_path, model) <= TOL


# ----------------------------------------------------------------------------- Clear errors.

def _raw_config(**edit):
    raw = transformers.BertConfig(vocab_size=50, **TINY).to_dict()
    raw.update(edit)
    return {k: v for k, v in raw.items() if v is not None}


@pytest.mark.parametrize("edit,named", [
    ({"position_embedding_type": "relative_key"}, "position_embedding_type='relative_key'"),
    ({"position_embedding_type": "relative_key_query"}, "position_embedding_type"),
    ({"is_decoder": True}, "is_decoder=True"),
    ({"add_cross_attention": True}, "add_cross_attention=True"),
    ({"pruned_heads": {"0": [1]}}, "pruned_heads"),
    ({"hidden_act": "swish"}, "hidden_act 'swish'"),
    ({"model_type": "roberta"}, "model_type='roberta'"),
    ({"model_type": None, "architectures": ["RobertaModel"]}, "model_type=None"),
    ({"vocab_size": None}, r"lacks the BERT config field\(s\) \['vocab_size'\]"),
])
def test_unsupported_config_fields_are_named(edit, named, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_raw_config(**edit)))
    with pytest.raises(ValueError, match=named):
        te.BertConfig.from_json(tmp_path)


def test_missing_required_tensor_is_named_with_heads_present(tmp_path):
    _write(tmp_path, transformers.BertForPreTraining, fields={"vocab_size": 50})
    from safetensors.numpy import load_file, save_file
    weights = dict(load_file(str(tmp_path / "model.safetensors")))
    del weights["bert.encoder.layer.1.attention.self.query.weight"]
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"lacks 1 tensor\(s\).*layer\.1\.attention\.self\.query"
                                         r"\.weight"):
        te.load_hf_bert(tmp_path)


def test_unknown_non_head_tensor_still_fails(tmp_path):
    _write(tmp_path, transformers.BertForPreTraining, fields={"vocab_size": 50})
    from safetensors.numpy import load_file, save_file
    weights = dict(load_file(str(tmp_path / "model.safetensors")))
    weights["classifier.weight"] = np.zeros((2, 32), np.float32)
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"not used by the name map: \['classifier\.weight'\]"):
        te.load_hf_bert(tmp_path)
    te.load_hf_bert(tmp_path, ignore_unused=[r"classifier\..*"])


def test_shard_errors_name_the_shard(tmp_path):
    _write(tmp_path, transformers.BertModel, fields={"vocab_size": 500}, max_shard_size="40KB")
    index_path = tmp_path / hf_checkpoint.SAFETENSORS_INDEX
    index = json.loads(index_path.read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(tmp_path / shard, moved / shard)
    with pytest.raises(FileNotFoundError, match=f"names shard '{shard}'.*download every shard"):
        te.load_hf_bert(tmp_path)
    shutil.move(moved / shard, tmp_path / shard)
    bad = dict(index, weight_map={**index["weight_map"], "pooler.dense.bias": "../x.safetensors"})
    index_path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"'\.\./x\.safetensors'.*lies outside"):
        hf_checkpoint.read_tensors(tmp_path)
    extra = dict(index, weight_map={**index["weight_map"], "encoder.layer.9.x": shard})
    index_path.write_text(json.dumps(extra))
    with pytest.raises(ValueError, match=r"shards do not hold: \['encoder\.layer\.9\.x'\]"):
        hf_checkpoint.read_tensors(tmp_path)


def test_no_weights_names_the_layouts(tmp_path):
    (tmp_path / "tf_model.h5").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors, .*pytorch_model\.bin.*"
                                                r"tf_model\.h5"):
        hf_checkpoint.read_tensors(tmp_path)


def test_bin_without_torch_says_how_to_convert(tmp_path, monkeypatch):
    _write(tmp_path, transformers.BertModel, fields={"vocab_size": 50}, safe_serialization=False)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"needs torch.*save_pretrained"):
        hf_checkpoint.read_tensors(tmp_path)


def test_tokenizer_of_an_early_checkpoint_without_model_type(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "sinus", "rhythm", "normal", "ecg"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "config.json").write_text(json.dumps(_raw_config(model_type=None)))
    tok = te.load_tokenizer(tmp_path)
    assert isinstance(tok, transformers.BertTokenizerFast)
    out = te.tokenize(tok, ["Sinus rhythm, normal ECG"], max_len=8)
    assert out["input_ids"][0].tolist() == [2, 5, 6, 1, 7, 8, 3, 0]  # lower-cased; ',' unknown
