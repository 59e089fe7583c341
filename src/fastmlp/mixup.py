"""Mixup (Zhang et al., 2018) for ``MLP.fit(..., mixup=alpha)``: the per-epoch plan of which
rows are blended and by how much. The blending itself, and the cross-entropy on the blended
(soft) targets, run in C++ inside the training loop (csrc/network.h, MixupPlan)."""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["check_mixup_alpha", "mixup_plan"]


def check_mixup_alpha(alpha: Any, class_weights: Any) -> float:
    """``fit``'s mixup argument: 0 (off) or a finite alpha > 0 of Beta(alpha, alpha)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
            or not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"mixup must be 0 (off) or the alpha > 0 of Beta(alpha, alpha), got {alpha!r}")
    if alpha > 0 and class_weights is not None:
        raise ValueError("mixup cannot be combined with class_weights")
    return float(alpha)


def mixup_plan(rng: np.random.Generator, order: np.ndarray, batch_size: int,
               alpha: float, dtype: Any, bounds: Optional[np.ndarray] = None,
               stream: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(partners, lambdas) for one epoch that visits the rows ``order`` in batches.

    Each batch is blended with a random permutation of itself, as in the paper's reference
    code: ``partners[k]`` is the row mixed into position k, drawn from k's own batch, and
    ``lambdas[j] ~ Beta(alpha, alpha)`` is batch j's mixing weight. With ``bounds`` batch j
    is positions bounds[j] .. bounds[j + 1] of order instead of batch_size of them. With
    ``stream`` (a rank of a data-parallel fit over its own rows) the permutations come from a
    generator of that stream, seeded from `rng`, so `rng` takes the same draws on every rank.
    """
    n = order.shape[0]
    if bounds is None:
        n_batches = -(-n // batch_size)
        batch_of_position = np.arange(n) // batch_size
    else:
        n_batches = bounds.size - 1
        batch_of_position = np.repeat(np.arange(n_batches), np.diff(bounds))
    lambdas = rng.beta(alpha, alpha, size=n_batches).astype(dtype)
    keys = rng if stream is None else np.random.default_rng([int(rng.integers(2 ** 63)), stream])
    # Sorting by (batch, random key) shuffles positions within each batch only.
    within_batch = np.lexsort(np.stack([keys.random(n), batch_of_position]))
    partners = np.ascontiguousarray(order[within_batch], dtype=np.int64)
    return partners, lambdas
