import numpy as np
import pytest

from dynaseg.backbones import CNNBackbone
from dynaseg.batched import BatchedSegmenter
from dynaseg.engine import Segmenter, to_tensor
from dynaseg.stopping import SilhouetteStopping, ThresholdStopping
from dynaseg.weighting import SCFWeighting
from tests.synthetic import region_image


def images(n: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        regions = np.zeros((36, 44), dtype=np.int64)
        regions[:, 8 + 6 * i :] = 1
        regions[20:, 24:] = 2
        out.append(region_image(regions, [(200, 40, 40), (40, 170, 60), (50, 60, 210)], 12.0, i))
    return out


def segmenter(**kwargs) -> Segmenter:
    defaults = {"backbone": lambda: CNNBackbone(16, 2), "n_clusters": 16, "max_iter": 25}
    return Segmenter(**(defaults | kwargs))


@pytest.mark.parametrize(
    "stopping", [ThresholdStopping(8), SilhouetteStopping(k_min=2, k_max=6, n_samples=300)]
)
def test_each_image_gets_the_same_result_in_a_batch_as_alone(stopping):
    method = segmenter(stopping=stopping, weighting=SCFWeighting(30.0))
    batch = images(3)
    seeds = [5, 6, 7]
    together = BatchedSegmenter(method).fit(batch, seeds)
    for image, seed, result in zip(batch, seeds, together, strict=True):
        alone = method.fit(image, seed=seed)
        assert (result.iterations, result.stop_reason) == (alone.iterations, alone.stop_reason)
        assert (result.threshold, result.opt_nc) == (alone.threshold, alone.opt_nc)
        assert np.array_equal(result.labels, alone.labels)
        for key, values in alone.history.items():
            np.testing.assert_allclose(result.history[key], values, rtol=1e-4, atol=1e-5)


def test_images_stop_independently():
    results = BatchedSegmenter(segmenter(stopping=ThresholdStopping(8))).fit(images(3), [5, 6, 7])
    stops = [(r.iterations, r.stop_reason) for r in results]
    assert all(reason == "threshold" for _, reason in stops)
    assert len({iteration for iteration, _ in stops}) > 1, (
        "the images should stop at different times"
    )
    for result in results:
        assert result.history["q"][-1] <= 8 < min(result.history["q"][:-1])


def test_a_broken_image_fails_alone_and_the_others_finish():
    batch = [to_tensor(image) for image in images(2)]
    batch[1][0, :2, :2] = float("nan")
    results = BatchedSegmenter(segmenter(stopping=ThresholdStopping(0), max_iter=3)).fit(
        batch, [0, 1]
    )
    assert isinstance(results[1], FloatingPointError) and "iteration 0" in str(results[1])
    assert results[0].iterations == 3


def test_batches_must_be_consistent():
    method = BatchedSegmenter(segmenter())
    with pytest.raises(ValueError, match="one seed per image"):
        method.fit(images(2), [0])
    with pytest.raises(ValueError, match="same size"):
        method.fit([np.zeros((10, 12, 3), np.uint8), np.zeros((12, 10, 3), np.uint8)], [0, 1])


def test_each_image_starts_from_its_own_seed():
    method = segmenter(max_iter=2, stopping=ThresholdStopping(0))
    same_image = images(1) * 3
    results = BatchedSegmenter(method).fit(same_image, [0, 1, 0])
    assert results[0].history == results[2].history
    assert results[0].history != results[1].history
