"""k-means and the silhouette score, batched over a range of k, in plain PyTorch.

The silhouette phase (paper §3.3.2) clusters an image's pixels for every k in [k_min, k_max] and
keeps the k with the best silhouette score. Doing that with scikit-learn costs a Python loop over
k and an O(n²) silhouette per k; here every k runs in the same tensor operations (centres padded
to k_max and masked), and the n×n distance matrix of the subsample is computed once and shared by
all k. It runs on whatever device the points are on.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kmeans_batched(
    points: Tensor,
    ks: list[int],
    generator: torch.Generator,
    n_iter: int = 50,
) -> Tensor:
    """Lloyd's k-means with k-means++ seeding, one run per k, all runs in one batch.

    Args:
        points: ``(n, d)`` float points.
        ks: the numbers of clusters, one run each (every k ≤ n).
        generator: seeds the k-means++ draws (on the points' device).
        n_iter: Lloyd iterations (runs that have converged stay put).

    Returns:
        ``(len(ks), n)`` cluster labels; run r uses labels in ``[0, ks[r])``.
    """
    n, _ = points.shape
    k_max = max(ks)
    if k_max > n:
        raise ValueError(f"k={k_max} exceeds the number of points ({n})")
    runs = len(ks)
    device = points.device
    k_of_run = torch.tensor(ks, device=device)
    valid = torch.arange(k_max, device=device)[None, :] < k_of_run[:, None]  # (runs, k_max)

    # k-means++: the first centre uniformly, then each next one with probability ∝ D².
    first = torch.randint(n, (runs,), generator=generator, device=device)
    centres = points[first][:, None, :].repeat(1, k_max, 1)  # (runs, k_max, d)
    closest = ((points[None] - centres[:, :1]) ** 2).sum(-1)  # (runs, n)
    for j in range(1, k_max):
        weights = closest.clamp_min(0) + 1e-12
        pick = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        centres[:, j] = points[pick]
        closest = torch.minimum(closest, ((points[None] - points[pick][:, None]) ** 2).sum(-1))

    labels = torch.zeros(runs, n, dtype=torch.long, device=device)
    for _ in range(n_iter):
        distances = torch.cdist(points[None].expand(runs, -1, -1), centres)  # (runs, n, k_max)
        distances = distances.masked_fill(~valid[:, None, :], float("inf"))
        new_labels = distances.argmin(-1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
        onehot = torch.zeros(runs, n, k_max, device=device, dtype=points.dtype)
        onehot.scatter_(2, labels[..., None], 1.0)
        counts = onehot.sum(1)  # (runs, k_max)
        sums = onehot.transpose(1, 2) @ points  # (runs, k_max, d)
        keep = counts == 0  # an emptied centre stays where it was
        centres = torch.where(keep[..., None], centres, sums / counts.clamp_min(1)[..., None])
    return labels


def silhouette_scores(distances: Tensor, labels: Tensor, n_labels: int) -> Tensor:
    """Mean silhouette coefficient of each labelling, as scikit-learn defines it.

    For a point i in cluster C: a = mean distance to the other points of C, b = the smallest mean
    distance to another cluster, s = (b − a) / max(a, b), and s = 0 when C is a singleton.

    Args:
        distances: ``(n, n)`` pairwise distances.
        labels: ``(runs, n)`` labels in ``[0, n_labels)``.
        n_labels: the label range (empty labels are ignored).

    Returns:
        ``(runs,)`` scores; a labelling with fewer than two non-empty clusters scores ``-1``.
    """
    runs, n = labels.shape
    onehot = torch.zeros(runs, n, n_labels, device=labels.device, dtype=distances.dtype)
    onehot.scatter_(2, labels[..., None], 1.0)
    counts = onehot.sum(1)  # (runs, n_labels)
    to_cluster = distances[None] @ onehot  # (runs, n, n_labels): summed distance to each cluster
    own = labels[..., None]
    own_count = counts.gather(1, labels)  # (runs, n)
    a = to_cluster.gather(2, own).squeeze(2) / (own_count - 1).clamp_min(1)
    mean_to = to_cluster / counts[:, None, :].clamp_min(1)
    mean_to = mean_to.masked_fill((counts == 0)[:, None, :], float("inf"))
    mean_to = mean_to.scatter(2, own, float("inf"))
    b = mean_to.min(2).values
    s = (b - a) / torch.maximum(a, b).clamp_min(1e-12)
    s = torch.where(own_count > 1, s, torch.zeros_like(s))
    score = s.mean(1)
    return torch.where((counts > 0).sum(1) >= 2, score, torch.full_like(score, -1.0))
