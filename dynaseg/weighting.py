"""The weight μ of the continuity term, recomputed every iteration from q' (paper §3.3.1).

``L = L_sim + μ · L_con``. With few clusters left, FSF lowers μ so that feature similarity can
still split regions; SCF raises it so that spatial continuity merges fragments. ``fixed`` is the
Kim et al. (2020) baseline. Each strategy maps q' (a tensor, so it can stay on the device) to μ.
"""

from __future__ import annotations

import torch
from torch import Tensor


class FixedWeighting:
    """Constant μ (Kim et al. 2020; μ = 5 for BSD500 and VOC)."""

    def __init__(self, mu: float = 5.0) -> None:
        if mu < 0:
            raise ValueError(f"mu must be >= 0, got {mu}")
        self.mu = mu

    def __call__(self, n_labels: Tensor) -> Tensor:
        return torch.full((), self.mu, device=n_labels.device)

    def __repr__(self) -> str:
        return f"FixedWeighting(mu={self.mu})"


class FSFWeighting:
    """Feature Similarity Focus: μ = q' / α (paper α = 15)."""

    def __init__(self, alpha: float = 15.0) -> None:
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = alpha

    def __call__(self, n_labels: Tensor) -> Tensor:
        return n_labels.float() / self.alpha

    def __repr__(self) -> str:
        return f"FSFWeighting(alpha={self.alpha})"


class SCFWeighting:
    """Spatial Continuity Focus: μ = α / q' (paper α = 50)."""

    def __init__(self, alpha: float = 50.0) -> None:
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = alpha

    def __call__(self, n_labels: Tensor) -> Tensor:
        return self.alpha / n_labels.float()

    def __repr__(self) -> str:
        return f"SCFWeighting(alpha={self.alpha})"
