"""Preprocessing ops shared by every builder and by single-file inference (plain numpy).

Signals are `[T, L]` arrays (time first, one column per lead) in millivolts. The
order a record goes through (see `prepare_record`):

  reorder_leads (by header names) -> repair_nan (along time, per lead) -> flat_leads
  -> resample (polyphase) -> crop_or_pad (padding unobserved) -> to_int16 for storage;
  the pipeline later applies from_int16 and normalize.

Lead names: `canonical_lead_name` accepts the 12 standard names in any letter case with
surrounding white space ('avr', 'AVR', 'aVR', 'v1', ' V1 ') and nothing else. In
particular 'MLII' (MIT-BIH's modified limb lead II, electrodes on the torso) is *not*
lead II; a caller who wants to treat it as II says so with `aliases={'MLII': 'II'}`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import scipy.signal

from scar_jax.leads import LEAD_NAMES, NUM_LEADS

INT16_MAX = np.iinfo(np.int16).max
INT16_MIN = np.iinfo(np.int16).min
DEFAULT_ECG_SCALE = 0.001  # mV per int16 count (1 uV): +-32.767 mV range
CROP_POLICIES = ("start", "center", "random")
NORMALIZE_KINDS = ("minmax", "zscore", "none")
_CANONICAL = {name.lower(): name for name in LEAD_NAMES}
MAX_NAN_GAP_SECONDS = 0.1  # NaN runs up to this long are interpolated; longer ones hide the lead


def _check_signal(signal: np.ndarray, what: str = "signal") -> np.ndarray:
    """signal: [T, L] -> the same as an ndarray; other ranks raise."""
    signal = np.asarray(signal)
    if signal.ndim != 2:
        raise ValueError(
            f"{what} has shape {signal.shape}; expected [T, L] (time first, one column per "
            "lead). Transpose a [L, T] array first."
        )
    return signal


def canonical_lead_name(name: str, aliases: Mapping[str, str] | None = None) -> str:
    """'avr' / 'AVR' / ' aVR ' -> 'aVR'; unknown names raise a ValueError."""
    key = str(name).strip()
    if aliases:
        for alias, target in aliases.items():
            if key.lower() == alias.strip().lower():
                key = target.strip()
                break
    out = _CANONICAL.get(key.lower())
    if out is None:
        raise ValueError(
            f"Unknown ECG lead name {name!r}; expected one of {LEAD_NAMES} (any letter case). "
            "Pass aliases={...} to map a non-standard name (e.g. {'MLII': 'II'})."
        )
    return out


def reorder_leads(
    signal: np.ndarray, names: Sequence[str], aliases: Mapping[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """signal: [T, L], names: L header names -> (signal [T, 12] in LEAD_NAMES order, observed [12]).

    Leads the record lacks are zero and unobserved; unknown or duplicate names raise.
    Values (NaN included) are copied unchanged; integer input becomes float32.
    """
    signal = _check_signal(signal)
    names = list(names)
    if signal.shape[1] != len(names):
        raise ValueError(
            f"Signal has {signal.shape[1]} leads but the header names {len(names)}: {names}; "
            "the signal must be [T, L] with one column per header name."
        )
    try:
        canon = [canonical_lead_name(n, aliases) for n in names]
    except ValueError as e:
        raise ValueError(f"Record lead names {names}: {e}") from None
    seen: dict[str, int] = {}
    for i, c in enumerate(canon):
        if c in seen:
            raise ValueError(
                f"Record lead names {names} name lead {c} twice (columns {seen[c]} and {i}); "
                "fix the header or drop one column."
            )
        seen[c] = i
    dtype = signal.dtype if np.issubdtype(signal.dtype, np.floating) else np.float32
    out = np.zeros((signal.shape[0], NUM_LEADS), dtype)
    observed = np.zeros(NUM_LEADS, bool)
    for j, lead in enumerate(LEAD_NAMES):
        if lead in seen:
            out[:, j] = signal[:, seen[lead]]
            observed[j] = True
    return out, observed


def resample(signal: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """signal: [T, L] at from_hz -> [ceil(T * to_hz / from_hz), L] at to_hz (polyphase FIR)."""
    signal = _check_signal(signal)
    for what, hz in (("from_hz", from_hz), ("to_hz", to_hz)):
        if int(hz) != hz or hz <= 0:
            raise ValueError(f"resample: {what}={hz!r} must be a positive integer rate in Hz.")
    from_hz, to_hz = int(from_hz), int(to_hz)
    if not np.all(np.isfinite(signal)):
        raise ValueError(
            "resample: the signal has NaN/Inf samples, which the filter would spread; run "
            "repair_nan first."
        )
    if from_hz == to_hz:
        return signal.copy()
    g = np.gcd(from_hz, to_hz)
    dtype = signal.dtype if np.issubdtype(signal.dtype, np.floating) else np.float32
    out = scipy.signal.resample_poly(signal.astype(np.float64), to_hz // g, from_hz // g, axis=0)
    return out.astype(dtype)


def crop_or_pad(
    signal: np.ndarray,
    length: int,
    *,
    policy: str = "start",
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, int]:
    """signal: [T, L] -> (signal [length, L], valid_samples); padding (zeros) goes at the end.

    Rows [valid_samples, length) are padding and must be treated as unobserved. A long
    record is cropped at the start, centre, or a random offset drawn from `rng`.
    """
    signal = _check_signal(signal)
    if length <= 0:
        raise ValueError(f"crop_or_pad: length={length} must be positive.")
    if policy not in CROP_POLICIES:
        raise ValueError(f"crop_or_pad: policy={policy!r}; expected one of {CROP_POLICIES}.")
    t = signal.shape[0]
    if t >= length:
        if policy == "start":
            offset = 0
        elif policy == "center":
            offset = (t - length) // 2
        else:
            if rng is None:
                raise ValueError("crop_or_pad: policy='random' needs rng=np.random.Generator.")
            offset = int(rng.integers(0, t - length + 1))
        return signal[offset : offset + length].copy(), length
    out = np.zeros((length, signal.shape[1]), signal.dtype)
    out[:t] = signal
    return out, t


def _row_mask(valid_samples: int | np.ndarray | None, t: int) -> np.ndarray:
    """A sample count, a bool [T] mask or None (all rows) -> bool [T]."""
    if valid_samples is None:
        return np.ones(t, bool)
    if np.ndim(valid_samples) == 0:
        if not 0 <= int(valid_samples) <= t:
            raise ValueError(f"normalize: valid_samples={valid_samples} is outside [0, T={t}].")
        return np.arange(t) < int(valid_samples)
    rows = np.asarray(valid_samples, bool)
    if rows.shape != (t,):
        raise ValueError(f"normalize: the row mask has shape {rows.shape}; expected ({t},).")
    return rows


def normalize(
    signal: np.ndarray,
    lead_observed: np.ndarray,
    valid_samples: int | np.ndarray | None = None,
    kind: str = "minmax",
    eps: float = 1e-6,
) -> np.ndarray:
    """signal: [T, 12], lead_observed: [12] bool -> float32 [T, 12] normalised.

    minmax: one min and max over the record's observed leads and valid samples, mapped to
    [0, 1]; zscore: mean 0, std 1 per observed lead; none: values unchanged. valid_samples
    is a count (rows [valid_samples, T) are padding) or a bool [T] mask of observed rows.
    Unobserved leads and rows are 0. A constant record (or lead, for zscore) becomes 0.
    minmax and zscore do not depend on the signal's unit, so int16 counts can go in directly.
    """
    signal = _check_signal(signal)
    lead_observed = np.asarray(lead_observed, bool)
    if lead_observed.shape != (signal.shape[1],):
        raise ValueError(
            f"normalize: lead_observed has shape {lead_observed.shape}; expected "
            f"({signal.shape[1]},) to match the signal {signal.shape}."
        )
    rows = _row_mask(valid_samples, signal.shape[0])
    return normalize_batch(signal[None], lead_observed[None], rows[None], kind, eps)[0]


def normalize_batch(
    signal: np.ndarray,
    lead_observed: np.ndarray,
    time_observed: np.ndarray,
    kind: str = "minmax",
    eps: float = 1e-6,
) -> np.ndarray:
    """signal: [B, T, L], lead_observed: [B, L], time_observed: [B, T] -> float32 [B, T, L].

    `normalize` for a batch, example by example (no statistic crosses examples).
    """
    if kind not in NORMALIZE_KINDS:
        raise ValueError(f"normalize: kind={kind!r}; expected one of {NORMALIZE_KINDS}.")
    signal = np.asarray(signal)
    b, t, num_leads = signal.shape
    lead_observed = np.asarray(lead_observed, bool)
    time_observed = np.asarray(time_observed, bool)
    if lead_observed.shape != (b, num_leads) or time_observed.shape != (b, t):
        raise ValueError(
            f"normalize_batch: masks {lead_observed.shape} and {time_observed.shape} do not fit "
            f"the signal {signal.shape}; expected ({b}, {num_leads}) and ({b}, {t})."
        )
    lo, hi = np.zeros(b), np.zeros(b)
    full = time_observed.all(1) & lead_observed.all(1)
    parts = []  # per example: the observed values, or None when nothing is observed
    for i in range(b):  # per example, without batch-sized temporaries (they cost page faults)
        if full[i]:
            part = signal[i]
        elif time_observed[i].any() and lead_observed[i].any():
            part = signal[i][time_observed[i]][:, lead_observed[i]]
        else:
            part = None
        parts.append(part)
        if part is not None:
            lo[i], hi[i] = part.min(), part.max()
    if np.issubdtype(signal.dtype, np.floating):
        bad = ~(np.isfinite(lo) & np.isfinite(hi))
        if bad.any():
            raise ValueError(
                "normalize: NaN/Inf left in the observed samples of example(s) "
                f"{np.flatnonzero(bad).tolist()}; run repair_nan before normalising."
            )
    out = np.empty(signal.shape, np.float32)
    if kind == "minmax":
        spread = hi - lo
        inv = np.where(spread > eps, 1.0 / np.where(spread > eps, spread, 1.0), 0.0)
        np.subtract(signal, lo.astype(np.float32)[:, None, None], out=out, casting="unsafe")
        np.multiply(out, inv.astype(np.float32)[:, None, None], out=out)
    elif kind == "zscore":
        mean, inv = np.zeros((b, num_leads)), np.zeros((b, num_leads))
        for i, part in enumerate(parts):
            if part is not None:
                m = part.mean(0, dtype=np.float64)
                sd = part.std(0, dtype=np.float64)
                mean[i, lead_observed[i]] = m
                inv[i, lead_observed[i]] = np.where(sd > eps, 1.0 / np.where(sd > eps, sd, 1.0), 0)
        np.subtract(signal, mean.astype(np.float32)[:, None, :], out=out, casting="unsafe")
        np.multiply(out, inv.astype(np.float32)[:, None, :], out=out)
    else:
        out[...] = signal
    for i in np.flatnonzero(~full):  # unobserved rows / leads may hold anything: they become 0
        out[i][~time_observed[i]] = 0
        out[i][:, ~lead_observed[i]] = 0
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """mask: [T] bool -> [(start, stop)] of its runs of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def nan_gap_samples(rate: float, seconds: float = MAX_NAN_GAP_SECONDS) -> int:
    """The longest NaN run repair_nan fills at `rate` Hz: round(seconds * rate), at least 1.

    The one NaN-gap rule of the builders and of single-file inference (100 Hz: 10 samples,
    257 Hz: 26, 500 Hz: 50).
    """
    if not rate > 0 or seconds < 0:
        raise ValueError(f"nan_gap_samples: rate={rate} must be > 0 and seconds={seconds} >= 0.")
    return max(1, int(round(seconds * rate)))


def repair_nan(
    signal: np.ndarray, max_gap_samples: int, lead_observed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """signal: [T, L] with NaN/Inf -> (signal [T, L] finite, lead_observed [L], n_repaired).

    Each lead is repaired on its own, along time: a run of at most `max_gap_samples`
    non-finite samples is filled by linear interpolation between its finite neighbours
    (a run at the record's start or end takes the nearest finite value). A lead with a
    longer run, or with no finite sample, becomes unobserved and is set to 0.
    n_repaired counts the samples filled in leads that stay observed.
    """
    signal = _check_signal(signal)
    if max_gap_samples < 0:
        raise ValueError(f"repair_nan: max_gap_samples={max_gap_samples} must be >= 0.")
    dtype = signal.dtype if np.issubdtype(signal.dtype, np.floating) else np.float32
    out = signal.astype(dtype, copy=True)
    num_leads = signal.shape[1]
    observed = (
        np.ones(num_leads, bool) if lead_observed is None else np.array(lead_observed, bool)
    )
    if observed.shape != (num_leads,):
        raise ValueError(
            f"repair_nan: lead_observed has shape {observed.shape}; expected ({num_leads},)."
        )
    bad = ~np.isfinite(out)
    n_repaired = 0
    t = np.arange(signal.shape[0])
    for lead in range(num_leads):
        if not observed[lead]:
            out[:, lead] = 0
            continue
        miss = bad[:, lead]
        if not miss.any():
            continue
        longest = max(stop - start for start, stop in _runs(miss))
        if miss.all() or longest > max_gap_samples:
            observed[lead] = False
            out[:, lead] = 0
            continue
        out[miss, lead] = np.interp(t[miss], t[~miss], out[~miss, lead].astype(np.float64))
        n_repaired += int(miss.sum())
    return out, observed, n_repaired


def flat_leads(
    signal: np.ndarray, tol: float = 1e-6, valid_samples: int | None = None
) -> np.ndarray:
    """signal: [T, L] -> bool [L]: True where a lead's finite valid samples span <= tol.

    A lead with no finite sample counts as flat.
    """
    signal = _check_signal(signal)
    x = signal[: signal.shape[0] if valid_samples is None else int(valid_samples)]
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    hi = np.where(finite, x, -np.inf).max(0, initial=-np.inf)
    lo = np.where(finite, x, np.inf).min(0, initial=np.inf)
    return ~finite.any(0) | (hi - lo <= tol)


def to_int16(signal_mv: np.ndarray, scale: float = DEFAULT_ECG_SCALE) -> tuple[np.ndarray, int]:
    """signal_mv: [T, L] millivolts -> (int16 counts round(mV / scale) [T, L], n_clipped).

    Values beyond the int16 range are clipped and counted; NaN/Inf raise.
    """
    signal_mv = np.asarray(signal_mv)
    if not scale > 0:
        raise ValueError(f"to_int16: scale={scale!r} must be a positive mV per count.")
    if not np.all(np.isfinite(signal_mv)):
        raise ValueError(
            "to_int16: NaN/Inf left in the signal; run repair_nan (and zero unobserved leads) "
            "before storing."
        )
    counts = np.rint(signal_mv.astype(np.float64) / scale)
    n_clipped = int(np.count_nonzero((counts > INT16_MAX) | (counts < INT16_MIN)))
    return np.clip(counts, INT16_MIN, INT16_MAX).astype(np.int16), n_clipped


def from_int16(counts: np.ndarray, scale: float) -> np.ndarray:
    """counts: int16 [..] -> float32 millivolts counts * scale."""
    return np.asarray(counts).astype(np.float32) * np.float32(scale)


def prepare_record(
    signal: np.ndarray,
    names: Sequence[str],
    rate: int,
    *,
    target_rate: int,
    num_samples: int,
    max_gap_samples: int,
    flat_tol: float = 1e-6,
    crop_policy: str = "start",
    rng: np.random.Generator | None = None,
    aliases: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray | int]:
    """One raw record [T, L] (mV, header names, Hz) -> the float parts of the example schema.

    Returns {'ecg': float32 [num_samples, 12] mV (unobserved leads and padding are 0),
    'lead_observed': bool [12], 'valid_samples': int, 'n_repaired': int,
    'flat': bool [12] (observed leads found flat, now unobserved), 'source_rate',
    'source_length'}. Store with `to_int16`.
    """
    signal = _check_signal(signal)
    source_length = signal.shape[0]
    x, observed = reorder_leads(signal, names, aliases)
    x, observed, n_repaired = repair_nan(x, max_gap_samples, observed)
    flat = flat_leads(x, flat_tol) & observed
    observed &= ~flat
    x[:, ~observed] = 0
    x = resample(x, rate, target_rate)
    x, valid = crop_or_pad(x, num_samples, policy=crop_policy, rng=rng)
    x[:, ~observed] = 0
    return {
        "ecg": x.astype(np.float32),
        "lead_observed": observed,
        "valid_samples": int(valid),
        "n_repaired": n_repaired,
        "flat": flat,
        "source_rate": int(rate),
        "source_length": int(source_length),
    }
