"""The MERL-style train step (masker none) in JAX and in PyTorch, from identical weights.

The adversarial masker is training-only and not exported, so the framework comparison
uses the encoder step both frameworks can run: the ECG tower (mean selector) and the
text projection head on cached report features (the text tower is frozen), one
symmetric CLIP loss, global-norm clipping and AdamW with the same learning-rate
schedule and decay mask (matrices and embeddings only). `parity_config` is that step's
config; `JaxStep` runs `scar_jax.update`'s jitted update on it, `TorchStep` runs
`scar_jax.export.torch_modules` with `torch.optim.AdamW` (eager, or `torch.compile`d
forward + loss), starting from the JAX parameters converted by `scar_jax.export.to_torch`.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from scar_jax import losses, optim
from scar_jax import sharding as sharding_lib
from scar_jax import train_state as train_state_lib
from scar_jax import update as update_lib
from scar_jax.export import to_torch
from scar_jax.models import scar

PARITY_TARGETS = (to_torch.ECG, to_torch.TEXT_HEAD)


def parity_config(
    variant: str,
    batch_size: int,
    seconds: float = 10.0,
    sample_rate: int = 500,
    text: str = "minilm",
) -> ml_collections.ConfigDict:
    """configs/scar.py method=merl with the uni-modal term off: masker none, mean selector,
    CLIP(clean view) only, frozen text tower (cached features)."""
    from scar_jax import config_files

    config = config_files.load_family("scar", f"method=merl,variant={variant},text={text}")
    config.batch_size = batch_size
    config.input.seconds = seconds
    config.input.sample_rate = sample_rate
    config.model.uma_dropout = 0.0
    config.loss_weights.uma = 0.0
    return config


def synthetic_batch(config: ml_collections.ConfigDict, seed: int = 0) -> dict[str, np.ndarray]:
    """ecg [B, T, 12] uniform, lead_observed [B, 12] all True, txt_feats [B, H] normal."""
    rng = np.random.default_rng(seed)
    b, t = config.batch_size, int(config.input.sample_rate * config.input.seconds)
    hidden = scar.bert_config_for(config.model.txt.checkpoint).hidden_size
    return {
        "ecg": rng.random((b, t, 12), np.float32),
        "lead_observed": np.ones((b, 12), bool),
        "txt_feats": rng.normal(size=(b, hidden)).astype(np.float32),
    }


class JaxStep:
    """`scar_jax.update`'s jitted update for `config` on one fixed batch; call it to step.

    After construction: compile_s, flops (XLA cost analysis), memory (bytes by kind).
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        batch: Mapping[str, np.ndarray] | None = None,
        *,
        seed: int = 0,
    ):
        self.config = config
        self.model = scar.build_model(config.model)
        batch = dict(synthetic_batch(config, seed) if batch is None else batch)
        mesh = sharding_lib.make_mesh(config.mesh, jax.devices()[:1])  # one device, as torch
        self.state, shardings = train_state_lib.create_train_state(
            self.model, config, batch, mesh
        )
        if not update_lib.text_is_frozen(config, self.state.params):
            raise ValueError("JaxStep feeds cached txt_feats: config.model.txt.freeze must "
                             "freeze every txt/bert parameter.")
        bs = sharding_lib.batch_sharding(mesh)
        self.batch = jax.device_put(batch, bs)
        self.key = jax.random.key(seed)
        jitted = update_lib.jit_update(update_lib.make_update_fn(self.model, config), shardings, bs)
        t0 = time.perf_counter()
        self.compiled = jitted.lower(self.state, self.batch, self.key).compile()
        self.compile_s = time.perf_counter() - t0
        self.flops = compiled_flops(self.compiled)
        self.memory = compiled_memory(self.compiled)

    def __call__(self, steps: int = 1) -> dict[str, jax.Array]:
        """Runs `steps` updates (the state advances) and blocks; -> the last metrics."""
        metrics = None
        for _ in range(steps):
            self.state, metrics = self.compiled(self.state, self.batch, self.key)
        return jax.block_until_ready(metrics)


def compiled_flops(compiled: Any) -> float:
    """FLOPs of a compiled XLA executable from its cost analysis (0 if not reported)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def compiled_memory(compiled: Any) -> dict[str, float]:
    """XLA's memory estimate of a compiled executable: {temp, argument, output, peak} bytes.

    On XLA:CPU peak_bytes equals the argument bytes; temp + argument bytes is the bound.
    """
    mem = compiled.memory_analysis()
    out = {}
    for name in ("temp", "argument", "output"):
        out[f"{name}_bytes"] = float(getattr(mem, f"{name}_size_in_bytes", 0) or 0) if mem else 0.0
    out["peak_bytes"] = float(getattr(mem, "peak_memory_in_bytes", 0) or 0) if mem else 0.0
    return out


# ----------------------------------------------------------------------------- PyTorch side.


def torch_tensors(config: ml_collections.ConfigDict, params: Any) -> dict[str, dict[str, Any]]:
    """JAX params -> {'ecg': ECGTower state dict, 'text_head': TextHead state dict} (numpy)."""
    from scar_jax.export import torch_modules as tm

    bert_config = scar.bert_config_for(config.model.txt.checkpoint)
    modules = {
        to_torch.ECG: tm.ECGTower(**to_torch.ecg_tower_kwargs(config.model)),
        to_torch.TEXT_HEAD: tm.TextHead(**to_torch.text_head_kwargs(config.model, bert_config)),
    }
    expected = {
        k: {n: tuple(t.shape) for n, t in m.state_dict().items()} for k, m in modules.items()
    }
    params = jax.device_get(params)
    params = {**params, "txt": {k: v for k, v in params["txt"].items() if k != "bert"}}
    rules = [r for r in to_torch.model_rules(config) if r.target in PARITY_TARGETS]
    return to_torch.flax_to_torch(params, rules, expected)


class TorchStep:
    """The same step in PyTorch: ECGTower + TextHead, CLIP loss, clipping, AdamW.

    compile=True wraps forward + loss in `torch.compile` (backward through AOTAutograd);
    the optimizer runs eagerly in both modes (fused AdamW where this torch has it).
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        params: Any,
        batch: Mapping[str, np.ndarray],
        *,
        compile: bool = False,
    ):
        import torch

        from scar_jax.export import torch_modules as tm

        self.torch = torch
        self.config = config
        bert_config = scar.bert_config_for(config.model.txt.checkpoint)
        self.tower = tm.ECGTower(**to_torch.ecg_tower_kwargs(config.model))
        self.head = tm.TextHead(**to_torch.text_head_kwargs(config.model, bert_config))
        tensors = torch_tensors(config, params)
        for module, target in ((self.tower, to_torch.ECG), (self.head, to_torch.TEXT_HEAD)):
            module.load_state_dict(
                {k: torch.from_numpy(np.array(v)) for k, v in tensors[target].items()}, strict=True
            )
            module.train()
        self.batch = {k: torch.from_numpy(np.array(v)) for k, v in batch.items()}
        o = config.optim
        named = list(self.tower.named_parameters()) + [
            (f"head.{n}", p) for n, p in self.head.named_parameters()
        ]
        self.params = [p for _, p in named]
        decay = [p for p in self.params if p.ndim >= 2]  # as optim.decay_mask
        no_decay = [p for p in self.params if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        kwargs = {"lr": o.lr, "betas": (o.b1, o.b2), "eps": 1e-8}
        try:
            self.opt = torch.optim.AdamW(groups, fused=True, **kwargs)
            self.fused = True
        except (RuntimeError, TypeError, ValueError):
            self.opt = torch.optim.AdamW(groups, **kwargs)
            self.fused = False
        self.schedule = optim.lr_schedule(
            o.lr, o.warmup_steps, config.total_steps, o.schedule, o.end_lr_factor
        )
        self._lrs: dict[int, float] = {}
        self.step_count = 0
        self.loss_fn = torch.compile(self._loss) if compile else self._loss

    def _loss(self, ecg, lead_observed, txt_feats):
        """Symmetric CLIP loss of the clean view (as scar_jax.losses.clip_loss)."""
        torch = self.torch
        from scar_jax.export import torch_modules as tm

        z = self.tower(ecg, lead_observed)
        z_txt = tm.l2_normalize(self.head.proj(txt_feats))
        scale = torch.exp(self.head.logit_scale.clamp(max=math.log(tm.LOGIT_SCALE_MAX)))
        logits = scale * z @ z_txt.T
        labels = torch.arange(z.shape[0])
        ce = torch.nn.functional.cross_entropy
        return 0.5 * (ce(logits, labels) + ce(logits.T, labels))

    def lr(self, step: int) -> float:
        """The JAX schedule's learning rate at `step` (cached)."""
        if step not in self._lrs:
            self._lrs[step] = float(self.schedule(step))
        return self._lrs[step]

    def __call__(self, steps: int = 1) -> float:
        """Runs `steps` updates; -> the last loss (before its update)."""
        torch = self.torch
        b = self.batch
        loss = None
        for _ in range(steps):
            for g in self.opt.param_groups:
                g["lr"] = self.lr(self.step_count)
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(b["ecg"], b["lead_observed"], b["txt_feats"])
            loss.backward()
            if self.config.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.config.optim.grad_clip)
            self.opt.step()
            self.step_count += 1
        return float(loss.detach())

    def state_dicts(self) -> dict[str, dict[str, np.ndarray]]:
        """Current parameters as {'ecg': ..., 'text_head': ...} numpy state dicts."""
        modules = {to_torch.ECG: self.tower, to_torch.TEXT_HEAD: self.head}
        return {
            target: {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
            for target, m in modules.items()
        }


def jax_loss(step: JaxStep) -> float:
    """The JAX objective (CLIP clean) on the step's batch at its current params, no update."""
    z, out = step.model.apply({"params": step.state.params}, step.batch, train=True,
                              rngs={"masker": step.key, "dropout": step.key})
    total, _ = losses.scar_objective(z, out, dict(step.config.loss_weights), step.config.model.loss)
    return float(total)


def max_abs_diff(a: Mapping[str, Mapping[str, np.ndarray]], b: Mapping) -> float:
    """Largest |a - b| over every tensor of two {'target': {name: array}} trees."""
    worst = 0.0
    for target, tensors in a.items():
        for name, x in tensors.items():
            worst = max(worst, float(np.max(np.abs(np.asarray(x) - np.asarray(b[target][name])))))
    return worst

