"""Zero-shot diagnostics: where the gap between zero-shot and the linear probe lies.

Part of every evaluation report (results.json `models.<name>.zeroshot_diagnostics`):

- `text_zeroshot`: the test *reports* scored against the class embeddings, macro AUROC. The
  text side alone: if it cannot match its own reports to the prompts, no ECG encoder can.
- `prompt_cosine`: cosine between the classes' (uncentred) phrasing-mean embeddings [K, K];
  near-collinear classes share most of their score.
- `center_choice`: clean zero-shot macro AUROC on the validation split with and without
  centred class embeddings (eval.center_prompts is chosen from this, never from test).
- `class_mean_bound` (**uses test labels: a diagnostic bound, never a headline**): test ECGs
  scored against the mean embedding of the test reports of each class; how far the shared
  space separates the classes when the text side points exactly at them.

The random-encoder linear probe (the floor pretraining must beat) sits with the linear
probes (`results["random_init_probe"]`, scar_jax.evaluation.run).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from scar_jax.evaluation import zeroshot
from scar_jax.models import scar as scar_model


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows of x L2-normalised (zero rows stay zero)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def embed_texts(model: Any, variables: Any, tokens: Mapping[str, np.ndarray],
                batch_size: int = 256) -> np.ndarray:
    """Text embeddings [N, E] (text tower + head, L2-normalised) of tokenized texts [N, L]."""
    fn = jax.jit(lambda v, t: model.apply(v, t, method=scar_model.Model.embed_text)[0])
    n = len(next(iter(tokens.values())))
    out = []
    for start in range(0, n, batch_size):
        chunk = {k: np.asarray(v[start:start + batch_size]) for k, v in tokens.items()}
        b = len(next(iter(chunk.values())))
        if b < batch_size and n > batch_size:  # one compiled shape: pad the last chunk
            chunk = {k: np.concatenate([v, np.repeat(v[:1], batch_size - b, 0)])
                     for k, v in chunk.items()}
        out.append(np.asarray(fn(variables, {k: jnp.asarray(v) for k, v in chunk.items()}))[:b])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def class_means(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[K, E]: the normalised mean of the normalised rows of z [N, E] positive for each class."""
    labels = np.asarray(labels, bool)
    zn = normalize(z)
    sums = labels.T.astype(np.float64) @ zn
    return normalize(sums).astype(np.float32)


def prompt_cosine(z_cls_raw: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Cosine matrix [K, K] of class embeddings and its most similar pair of classes."""
    zn = normalize(z_cls_raw)
    cos = zn @ zn.T
    k = len(class_names)
    off = cos - 2.0 * np.eye(k)
    i, j = np.unravel_index(int(np.argmax(off)), off.shape) if k > 1 else (0, 0)
    upper = cos[np.triu_indices(k, 1)] if k > 1 else np.zeros(0)
    return {
        "matrix": np.round(cos, 4).tolist(),
        "classes": list(class_names),
        "max_pair": [class_names[i], class_names[j], float(cos[i, j])],
        "mean_offdiag": float(upper.mean()) if upper.size else float("nan"),
    }


def zeroshot_diagnostics(
    *,
    class_names: Sequence[str],
    z_cls_raw: np.ndarray,
    z_cls: np.ndarray,
    test_labels: np.ndarray,
    z_ecg_test: np.ndarray,
    z_reports_test: np.ndarray | None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    centered: bool = False,
) -> dict[str, Any]:
    """The diagnostics of one model (see the module docstring).

    z_cls_raw: uncentred class embeddings [K, E]; z_cls: those zero-shot scores with (centred
    or not, as `centered` says). z_ecg_test [N, E]: clean test ECG embeddings. z_reports_test
    [N, E]: the test reports' embeddings (None: no text diagnostics). val: (clean validation
    ECG embeddings [M, E], validation labels [M, K]) for the centring choice.
    """
    out: dict[str, Any] = {"prompt_cosine": prompt_cosine(z_cls_raw, class_names),
                           "centered": bool(centered)}
    labels = np.asarray(test_labels, bool)
    if z_reports_test is not None:
        out["text_zeroshot"] = zeroshot.macro_auroc(
            labels, zeroshot.scores(z_reports_test, z_cls), class_names)
        bound = class_means(z_reports_test, labels)
        res = zeroshot.macro_auroc(labels, zeroshot.scores(z_ecg_test, bound), class_names)
        res["uses_labels"] = "test labels pick each class's reports: a bound, not a result"
        out["class_mean_bound"] = res
    if val is not None:
        z_val, y_val = val
        centred = normalize(normalize(z_cls_raw) - normalize(z_cls_raw).mean(0, keepdims=True))
        out["center_choice"] = {
            "val_auroc_raw": zeroshot.macro_auroc(
                y_val, zeroshot.scores(z_val, z_cls_raw), class_names)["auroc"],
            "val_auroc_centered": zeroshot.macro_auroc(
                y_val, zeroshot.scores(z_val, centred), class_names)["auroc"],
        }
    return out
