"""Mixup (Zhang et al., 2018) for ``MLP.fit(..., mixup=alpha)``: the per-epoch plan of which
rows are blended and by how much. The blending itself, and the cross-entropy on the blended
(soft) targets, run in C++ inside the training loop (csrc/network.h, MixupPlan)."""
from __future__ import annotations

import math
from typing import Any, Tuple

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
               alpha: float, dtype: Any) -> Tuple[np.ndarray, np.ndarray]:
    """(partners, lambdas) for one epoch that visits the rows ``order`` in batches.

    Each batch is blended with a random permutation of itself, as in the paper's reference
    code: ``partners[k]`` is the row mixed into position k, drawn from k's own batch, and
    ``lambdas[j] ~ Beta(alpha, alpha)`` is batch j's mixing weight.
    """
    n = order.shape[0]
    n_batches = -(-n // batch_size)
    lambdas = rng.beta(alpha, alpha, size=n_batches).astype(dtype)
    batch_of_position = np.arange(n) // batch_size
    # Sorting by (batch, random key) shuffles positions within each batch only.
    within_batch = np.lexsort(np.stack([rng.random(n), batch_of_position]))
    partners = np.ascontiguousarray(order[within_batch], dtype=np.int64)
    return partners, lambdas
