"""Numbers that say what an attention head does, from its (T, T) attention map.

A map's row i holds how query position i spreads its attention over positions 0..i
(a causal model sees no further; each row sums to 1). Four summaries per head:

    entropy      how spread out each row is, as a fraction of the most it could be:
                 1 = uniform over every visible token, 0 = all on one token.
                 Row i can spread over i+1 tokens, so its maximum is log(i+1).
    prev_token   the share of attention on the token just before (position i-1):
                 1.0 for a pure previous-token head.
    first_token  the share on position 0. Many trained heads park attention there when
                 they have nothing to do (an "attention sink").
    induction    on a random sequence repeated twice, the share that a position in the
                 second copy puts on the token *after* the earlier occurrence of its own
                 token: the head that lets a model continue a pattern it has seen
                 ("... A B ... A" -> "B"). 1.0 for a pure induction head.

prev_token and first_token use rows i >= 2, where the previous token and the first
token are different positions, so the two never count the same attention.
All functions take (..., T, T) arrays (any leading axes, e.g. layers × heads) and
return the leading axes.
"""

from __future__ import annotations

import numpy as np

METRICS = ("entropy", "prev_token", "first_token", "induction")
TITLES = {
    "entropy": "entropy (fraction of the maximum)",
    "prev_token": "share on the previous token",
    "first_token": "share on the first token (sink)",
    "induction": "induction score",
}


def _as_maps(w) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    if w.ndim < 2 or w.shape[-1] != w.shape[-2]:
        raise ValueError(f"attention maps must be (..., T, T), got shape {w.shape}")
    return w


def entropy_fraction(w) -> np.ndarray:
    """Mean over rows i >= 1 of entropy(row i) / log(i + 1)."""
    w = _as_maps(w)
    T = w.shape[-1]
    if T < 2:
        return np.zeros(w.shape[:-2])
    rows = w[..., 1:, :]
    ent = -(rows * np.log(np.clip(rows, 1e-12, None))).sum(-1)  # 0·log 0 counts as 0
    return (ent / np.log(np.arange(2, T + 1))).mean(-1)


def prev_token_share(w) -> np.ndarray:
    """Mean over rows i >= 2 of w[i, i-1]."""
    w = _as_maps(w)
    T = w.shape[-1]
    i = np.arange(2, T)
    return w[..., i, i - 1].mean(-1) if len(i) else np.zeros(w.shape[:-2])


def first_token_share(w) -> np.ndarray:
    """Mean over rows i >= 2 of w[i, 0]."""
    w = _as_maps(w)
    T = w.shape[-1]
    return w[..., 2:, 0].mean(-1) if T > 2 else np.zeros(w.shape[:-2])


def induction_score(w, period: int) -> np.ndarray:
    """On a sequence whose second half repeats its first (`period` tokens each): mean over
    rows i in the second copy of w[i, i - period + 1], the token after the earlier copy."""
    w = _as_maps(w)
    T = w.shape[-1]
    if not 1 <= period < T:
        raise ValueError(f"period {period} must be between 1 and T-1 = {T - 1}")
    i = np.arange(period, T)
    return w[..., i, i - period + 1].mean(-1)


def repeated_random_ids(vocab_size: int, n: int, seed: int = 0, avoid: set[int] | None = None) -> list[int]:
    """n random token ids (no id twice, none from `avoid`, e.g. special tokens), then the same n again.
    Random tokens, so a head can only predict the second copy by looking back at the first."""
    rng = np.random.default_rng(seed)  # a private generator: the training RNG is left alone
    pool = np.array([i for i in range(vocab_size) if i not in (avoid or set())])
    first = rng.choice(pool, size=min(n, len(pool)), replace=False).tolist()
    return first + first


def head_metrics(maps, induction_maps=None, period: int | None = None) -> dict[str, np.ndarray]:
    """All four metrics: entropy, prev_token, first_token from `maps` (the probe prompt),
    induction from `induction_maps` (the repeated random sequence; NaN without it)."""
    out = {"entropy": entropy_fraction(maps), "prev_token": prev_token_share(maps),
           "first_token": first_token_share(maps)}
    if induction_maps is not None:
        out["induction"] = induction_score(induction_maps, period or np.asarray(induction_maps).shape[-1] // 2)
    else:
        out["induction"] = np.full(out["entropy"].shape, np.nan)
    return {k: v.astype(np.float32) for k, v in out.items()}
