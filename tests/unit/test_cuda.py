"""The engine on a GPU: what only a CUDA device exercises (run by experiments/gpu_check.sh)."""

import numpy as np
import pytest
import torch

from dynaseg.backbones import CNNBackbone
from dynaseg.engine import Segmenter
from dynaseg.stopping import ConvergenceRule, ThresholdStopping
from tests.unit.test_batched import images

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"),
]


def on_gpu(**kwargs) -> Segmenter:
    defaults = {"backbone": lambda: CNNBackbone(16, 2), "n_clusters": 16, "device": "cuda"}
    return Segmenter(**(defaults | kwargs))


@pytest.mark.parametrize("sync_every", [1, 7, 25])
def test_host_reads_in_bursts_stop_at_the_exact_iteration(sync_every):
    reference = on_gpu(max_iter=60, stopping=ThresholdStopping(6), sync_every=1)
    bursts = on_gpu(max_iter=60, stopping=ThresholdStopping(6), sync_every=sync_every)
    a, b = reference.fit(images(1)[0], seed=2), bursts.fit(images(1)[0], seed=2)
    assert (a.iterations, a.stop_reason) == (b.iterations, b.stop_reason)
    assert np.array_equal(a.labels, b.labels)


def test_a_gpu_batch_converges_member_by_member_like_single_fits():
    method = on_gpu(
        max_iter=60, stopping=ThresholdStopping(1), convergence=ConvergenceRule(0.01, 2)
    )
    batch, seeds = images(3), [5, 6, 7]
    for image, seed, result in zip(batch, seeds, method.fit_many(batch, seeds), strict=True):
        alone = method.fit(image, seed=seed)
        assert result.stop_reason == alone.stop_reason == "converged"
        assert abs(result.iterations - alone.iterations) <= 1
        assert (result.labels == alone.labels).mean() > 0.95


def test_gpu_fit_follows_the_cpu_fit_and_bf16_stays_finite():
    image = images(1)[0]
    cpu = Segmenter(
        backbone=lambda: CNNBackbone(16, 2),
        n_clusters=16,
        max_iter=3,
        stopping=ThresholdStopping(0),
    ).fit(image, seed=4)
    gpu = on_gpu(max_iter=3, stopping=ThresholdStopping(0)).fit(image, seed=4)
    assert gpu.history["q"][:2] == cpu.history["q"][:2]
    bf16 = on_gpu(max_iter=20, stopping=ThresholdStopping(0), precision="bf16").fit(image, 4)
    assert all(np.isfinite(bf16.history["loss_sim"])) and bf16.n_clusters >= 2
