r"""Compile the SCAR update for a named TPU topology on this (CPU) machine; print its memory use.

  python launch/aot_compile.py --config=configs/scar.py:variant=base --topology=v5e:4x4
  python launch/aot_compile.py --config=configs/scar.py:variant=mu,runlocal,text=random-tiny \
      --topology=host          # the local devices instead (a check of the script itself)

Nothing runs: the train state and the batch are abstract (`jax.eval_shape`), the
mesh is laid over compile-only devices from `jax.experimental.topologies`, and
`jax.jit(update).trace(...).lower().compile()` gives the executable whose
`memory_analysis()` (arguments, outputs, temporaries, per device) is printed with
the compile time. Use it to pick batch size, `model.ecg.remat` and the mesh before
asking for TPUs. A TPU topology needs libtpu (`pip install -e .[tpu]`, i.e.
jax[tpu]: libtpu 0.0.42.* for jax 0.10.2); no TPU has to be attached.
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags



def define_flags() -> None:
    """The script's flags (defined only when run as a script, so importing it is side-effect free)."""
    global _CONFIG, _TOPOLOGY
    _CONFIG = config_flags.DEFINE_config_file(
        "config", None, "Config file[:arg].", lock_config=True
    )
    _TOPOLOGY = flags.DEFINE_string(
        "topology",
        "v5e:2x2",
        "TPU topology name as libtpu spells it ('v5e:2x2', 'v4:2x2x1', 'v5p:2x2x2'), or 'host' "
        "for the devices attached to this machine.",
    )


def topology_devices(name: str) -> list:
    """Compile-only devices of TPU topology `name` ('host': jax.devices())."""
    if name == "host":
        return list(jax.devices())
    from jax.experimental import topologies

    try:
        return list(topologies.get_topology_desc(topology_name=name, platform="tpu").devices)
    except RuntimeError as e:
        if "TPU support not installed" in str(e):
            raise SystemExit(
                f"Cannot describe TPU topology {name!r}: libtpu is not installed, and jax "
                "needs it to build TPU compile-only devices (it holds the TPU compiler). "
                "Install it with `pip install -e .[tpu]` (jax[tpu]==0.10.2 -> libtpu 0.0.42.*); "
                "no TPU has to be attached. Or pass --topology=host to compile for the local "
                "devices."
            ) from None
        raise SystemExit(
            f"libtpu could not build topology {name!r}: {e}. Check the name (e.g. v5e:2x2, "
            "v4:2x2x1, v5p:2x2x2)."
        ) from None


def compile_update(config, devices: list) -> dict:
    """Lower and compile the jitted update on `devices`; {'compile_s', 'memory', 'mesh'}."""
    from scar_jax import sharding as sharding_lib
    from scar_jax import train as train_lib
    from scar_jax import train_state as train_state_lib
    from scar_jax import update as update_lib
    from scar_jax.models import scar

    mesh = sharding_lib.make_mesh(config.mesh, devices)
    model = scar.build_model(config.model)
    spec = train_lib._batch_spec(config)
    init = train_state_lib.make_init_fn(model, config, spec)
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=sharding_lib.replicated(mesh))
    shapes = jax.eval_shape(init, jax.random.key(config.seed))
    shardings = train_state_lib.state_shardings(shapes, mesh, config)
    state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings
    )
    batch_sharding = sharding_lib.batch_sharding(mesh)
    b, t = config.batch_size, spec["ecg"].shape[1]
    length = config.model.txt.max_len
    batch = {
        "ecg": jax.ShapeDtypeStruct((b, t, 12), jnp.float32, sharding=batch_sharding),
        "lead_observed": jax.ShapeDtypeStruct((b, 12), jnp.bool_, sharding=batch_sharding),
        "time_observed": jax.ShapeDtypeStruct((b, t), jnp.bool_, sharding=batch_sharding),
    }
    if config.train.cache_text_features and update_lib.text_is_frozen(config, shapes.params):
        # The loop feeds cached features of the frozen text tower (train.py).
        hidden = scar.bert_config_for(config.model.txt.checkpoint).hidden_size
        batch["txt_feats"] = jax.ShapeDtypeStruct((b, hidden), jnp.float32, sharding=batch_sharding)
    else:
        for key in ("input_ids", "attention_mask"):
            batch[key] = jax.ShapeDtypeStruct((b, length), jnp.int32, sharding=batch_sharding)
    update = update_lib.jit_update(
        update_lib.make_update_fn(model, config), shardings, batch_sharding
    )
    t0 = time.perf_counter()
    lowered = update.trace(state, batch, rng).lower()
    compiled = lowered.compile()
    return {
        "compile_s": time.perf_counter() - t0,
        "memory": compiled.memory_analysis(),
        "mesh": dict(mesh.shape),
        "devices": f"{len(devices)} x {devices[0].device_kind}",
    }


def _gib(n) -> str:
    return f"{n / 2**30:.3f} GiB"


def main(argv):
    del argv
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/scar.py:variant=base")
    out = compile_update(config, topology_devices(_TOPOLOGY.value))
    mem = out["memory"]
    print(f"topology {_TOPOLOGY.value}: {out['devices']}, mesh {out['mesh']}")
    print(f"global batch {config.batch_size}, compile {out['compile_s']:.1f}s")
    if mem is None:
        print("memory_analysis: not reported by this backend")
        return
    fields = (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "alias_size_in_bytes",
        "temp_size_in_bytes",
        "generated_code_size_in_bytes",
    )
    for f in fields:
        if hasattr(mem, f):
            print(f"  {f:<32}{_gib(getattr(mem, f))}")
    if getattr(mem, "peak_memory_in_bytes", 0):
        print(f"  {'peak_memory_in_bytes':<32}{_gib(mem.peak_memory_in_bytes)}")
    bound = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        - mem.alias_size_in_bytes
        + mem.temp_size_in_bytes
    )
    print(f"  {'args + outputs - aliased + temp':<32}{_gib(bound)}  (upper bound per device)")


if __name__ == "__main__":
    define_flags()
    app.run(main)
