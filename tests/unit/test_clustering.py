import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, silhouette_score

from dynaseg.clustering import kmeans_batched, silhouette_scores


def blobs(
    n_per: int, centres: np.ndarray, spread: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    points = np.concatenate([c + rng.normal(0, spread, (n_per, centres.shape[1])) for c in centres])
    return points.astype(np.float32), np.repeat(np.arange(len(centres)), n_per)


def test_silhouette_matches_scikit_learn_on_random_labellings():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(120, 3)).astype(np.float32)
    labels = np.stack([rng.integers(0, k, 120) for k in (2, 3, 5, 9)])
    labels[3, :2] = [7, 8]  # make sure a singleton-prone labelling is covered
    x = torch.from_numpy(points)
    ours = silhouette_scores(torch.cdist(x, x), torch.from_numpy(labels), 9)
    expected = [silhouette_score(points, row) for row in labels]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_silhouette_counts_singletons_as_zero_like_scikit_learn():
    points = np.array([[0.0], [0.1], [5.0], [9.0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 2])
    x = torch.from_numpy(points)
    ours = float(silhouette_scores(torch.cdist(x, x), torch.from_numpy(labels[None]), 3)[0])
    assert ours == pytest.approx(silhouette_score(points, labels), rel=1e-5)


def test_single_cluster_scores_minus_one():
    x = torch.rand(10, 2)
    assert (
        float(silhouette_scores(torch.cdist(x, x), torch.zeros(1, 10, dtype=torch.long), 3)) == -1
    )


def test_kmeans_recovers_separated_blobs_for_the_right_k():
    centres = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], dtype=np.float32)
    points, truth = blobs(50, centres, 0.5)
    labels = kmeans_batched(torch.from_numpy(points), [2, 4, 6], torch.Generator().manual_seed(0))
    assert labels.shape == (3, 200)
    assert adjusted_rand_score(truth, labels[1].numpy()) == 1.0
    for run, k in enumerate([2, 4, 6]):
        assert labels[run].max() < k


def test_kmeans_is_reproducible_from_the_seed():
    points = torch.rand(300, 3)
    first = kmeans_batched(points, [3, 5], torch.Generator().manual_seed(7))
    second = kmeans_batched(points, [3, 5], torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def test_kmeans_rejects_more_clusters_than_points():
    with pytest.raises(ValueError, match="exceeds the number of points"):
        kmeans_batched(torch.rand(5, 2), [6], torch.Generator())
