"""losses.finding_loss against a direct numpy computation of its definition."""

import jax.numpy as jnp
import numpy as np

from scar_jax import losses


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _reference(z, zf, ids, scale):
    """Loop over distinct findings: softmax over distinct findings (each once) / over ECGs."""
    b, f, _ = zf.shape
    distinct = sorted({int(i) for i in ids.ravel() if i >= 0})
    # a distinct finding's embedding: all its copies are identical (same text, same head)
    emb = {u: zf[np.argwhere(ids == u)[0][0], np.argwhere(ids == u)[0][1]] for u in distinct}
    logits = np.array([[scale * z[i] @ emb[u] for u in distinct] for i in range(b)])  # [B, U]
    pos = np.array([[u in set(ids[i]) for u in distinct] for i in range(b)])
    lse = np.log(np.exp(logits).sum(1, keepdims=True))
    l_ecg = [-(logits[i] - lse[i])[pos[i]].mean() for i in range(b) if pos[i].any()]
    lse0 = np.log(np.exp(logits).sum(0, keepdims=True))
    l_f = [-(logits[:, u] - lse0[0, u])[pos[:, u]].mean() for u in range(len(distinct))]
    return 0.5 * (np.mean(l_ecg) + np.mean(l_f))


def test_finding_loss_matches_the_definition_with_shared_findings_and_padding():
    rng = np.random.default_rng(0)
    b, f, e = 4, 3, 8
    ids = np.array([[0, 1, -1], [1, 2, 3], [0, 1, -1], [-1, -1, -1]])  # record 3: no findings
    table = _unit(rng.normal(size=(4, e)))
    zf = np.where(ids[..., None] >= 0, table[np.maximum(ids, 0)], 0.0)
    z = _unit(rng.normal(size=(b, e)))
    scale = 5.0
    got = float(losses.finding_loss(jnp.asarray(z, jnp.float32), jnp.asarray(zf, jnp.float32),
                                    jnp.asarray(ids), jnp.log(jnp.float32(scale))))
    np.testing.assert_allclose(got, _reference(z, zf, ids, scale), rtol=1e-5)


def test_finding_loss_falls_when_ecgs_point_at_their_findings():
    rng = np.random.default_rng(1)
    table = _unit(rng.normal(size=(5, 16)))
    ids = np.array([[0, 1], [2, -1], [3, 4]])
    zf = np.where(ids[..., None] >= 0, table[np.maximum(ids, 0)], 0.0)
    aligned = _unit(np.stack([table[0] + table[1], table[2], table[3] + table[4]]))
    random = _unit(rng.normal(size=(3, 16)))
    def loss(z):
        return float(losses.finding_loss(jnp.asarray(z, jnp.float32),
                                         jnp.asarray(zf, jnp.float32), jnp.asarray(ids),
                                         jnp.log(jnp.float32(10.0))))

    assert loss(aligned) < loss(random)
