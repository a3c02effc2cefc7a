"""The README's PyTorch usage example: python scar_jax/export/README_example.py EXPORT_DIR.

Everything after this docstring is the README's example verbatim; the test
tests/export/test_to_torch.py::test_readme_example_runs runs this file and checks its logits
against JAX.
"""

import importlib.util
import json
import sys

import torch
import transformers

export_dir = sys.argv[1]  # what `python -m scar_jax.main export --out=...` wrote
spec = importlib.util.spec_from_file_location("ecg_tower", f"{export_dir}/ecg_tower.py")
ecg_tower = importlib.util.module_from_spec(spec)  # the exported torch-only source
spec.loader.exec_module(ecg_tower)

ecg_model = ecg_tower.load_ecg_tower(export_dir)  # strict state-dict load, eval mode
text_head = ecg_tower.load_text_head(export_dir)
tokenizer = transformers.AutoTokenizer.from_pretrained(f"{export_dir}/text")
bert = transformers.AutoModel.from_pretrained(f"{export_dir}/text").eval()

with open(f"{export_dir}/manifest.json") as f:
    data = json.load(f)["config"]["input"]  # the record the model was trained on
num_samples = int(data["sample_rate"] * data["seconds"])  # e.g. 10 s at 100 Hz: 1000
ecg = torch.randn(1, num_samples, 12, generator=torch.Generator().manual_seed(0))  # leads I..V6
lead_observed = torch.ones(1, 12, dtype=torch.bool)
lead_observed[0, 6:] = False  # the chest leads are missing: no retraining, no zero-filling
prompts = tokenizer(["atrial fibrillation", "sinus rhythm"], padding=True, return_tensors="pt")
with torch.no_grad():
    z_ecg = ecg_model(ecg, lead_observed)  # [1, E], L2-normalised
    out = bert(**prompts)
    z_txt = text_head(out.last_hidden_state, prompts["attention_mask"], out.pooler_output)
    logits = text_head.logits(z_ecg, z_txt)  # [1, 2] ECG-prompt similarity logits
print(logits.softmax(-1))
