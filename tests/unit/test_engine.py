import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from dynaseg.backbones import CNNBackbone
from dynaseg.engine import Segmenter, changed_fraction, image_seed, relabel_by_size
from dynaseg.stopping import ConvergenceRule, SilhouetteStopping, ThresholdStopping
from dynaseg.weighting import FixedWeighting, SCFWeighting
from tests.synthetic import region_image


def small_segmenter(**kwargs) -> Segmenter:
    defaults = {"backbone": lambda: CNNBackbone(channels=16, n_components=2), "n_clusters": 16}
    return Segmenter(**(defaults | kwargs))


def best_iou_per_region(labels: np.ndarray, regions: np.ndarray) -> list[float]:
    """For each true region, the best IoU of any predicted segment (written out by hand)."""
    scores = []
    for region in np.unique(regions):
        truth = regions == region
        scores.append(
            max(
                (truth & (labels == k)).sum() / (truth | (labels == k)).sum()
                for k in np.unique(labels[truth])
            )
        )
    return scores


def test_three_flat_noisy_regions_are_found(three_regions):
    image, regions = three_regions
    # the paper's network and FSF α = 15, stopped as the default loop stops: once labels settle
    result = Segmenter(max_iter=100, convergence=ConvergenceRule()).fit(image, seed=1)
    assert result.stop_reason == "converged"
    assert result.labels.shape == regions.shape
    assert min(best_iou_per_region(result.labels, regions)) >= 0.9


def test_same_seed_gives_identical_labels_and_history(three_regions):
    image, _ = three_regions
    first = small_segmenter(max_iter=15).fit(image, seed=3)
    second = small_segmenter(max_iter=15).fit(image, seed=3)
    assert np.array_equal(first.labels, second.labels)
    assert first.history == second.history


def test_fit_does_not_disturb_the_global_rng(three_regions):
    image, _ = three_regions
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    small_segmenter(max_iter=2).fit(image, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_threshold_stopping_fires_at_the_first_iteration_at_or_below_it(three_regions):
    image, _ = three_regions
    result = small_segmenter(max_iter=200, stopping=ThresholdStopping(6)).fit(image, seed=0)
    q = result.history["q"]
    assert result.stop_reason == "threshold"
    assert q[-1] <= 6 and all(value > 6 for value in q[:-1])
    assert result.iterations == len(q) - 1
    assert result.n_clusters == q[-1]


def test_silhouette_stopping_uses_the_estimate():
    regions = np.zeros((40, 48), dtype=np.int64)
    regions[:, 20:] = 1
    regions[22:, 20:] = 2
    image = region_image(regions, [(200, 40, 40), (40, 170, 60), (50, 60, 210)], 12.0)
    stopping = SilhouetteStopping(k_min=2, k_max=8, n_samples=500)
    # A strong continuity weight merges quickly, so the fit reaches opt_nC within a few updates.
    segmenter = small_segmenter(max_iter=300, stopping=stopping, weighting=FixedWeighting(50.0))
    result = segmenter.fit(image, seed=0)
    assert result.opt_nc == result.threshold == 3
    assert result.stop_reason == "threshold"
    assert result.n_clusters <= 3 < result.history["q"][-2]


def test_max_iter_bounds_the_updates_and_history_records_every_pass(three_regions):
    image, _ = three_regions
    result = small_segmenter(max_iter=4, stopping=ThresholdStopping(0)).fit(image, seed=0)
    assert result.stop_reason == "max_iter" and result.iterations == 4
    assert all(len(values) == 5 for values in result.history.values())
    assert all(1 <= value <= 16 for value in result.history["q"])


def test_snapshots_equal_the_labels_of_shorter_fits(three_regions):
    image, _ = three_regions
    long = small_segmenter(max_iter=6, stopping=ThresholdStopping(0))
    result = long.fit(image, seed=3, snapshots={0, 2, 6, 9})
    assert sorted(result.snapshots) == [0, 2, 6]
    np.testing.assert_array_equal(result.snapshots[6], result.labels)
    short = small_segmenter(max_iter=2, stopping=ThresholdStopping(0)).fit(image, seed=3)
    np.testing.assert_array_equal(result.snapshots[2], short.labels)


def test_snapshots_after_an_early_stop_are_absent(three_regions):
    image, _ = three_regions
    result = small_segmenter(max_iter=50, stopping=ThresholdStopping(15)).fit(
        image, seed=0, snapshots=range(51)
    )
    assert result.stop_reason == "threshold"
    assert max(result.snapshots) == result.iterations


def test_history_mu_follows_the_weighting(three_regions):
    image, _ = three_regions
    result = small_segmenter(
        max_iter=5, stopping=ThresholdStopping(0), weighting=SCFWeighting(50.0)
    ).fit(image, seed=0)
    for q, mu in zip(result.history["q"], result.history["mu"], strict=True):
        assert mu == pytest.approx(50.0 / q)


def test_non_finite_loss_is_reported_with_its_iteration(three_regions):
    image, _ = three_regions
    segmenter = small_segmenter(max_iter=3, weighting=FixedWeighting(float("inf")))
    with pytest.raises(FloatingPointError, match="iteration 0"):
        segmenter.fit(image, seed=0)


def test_image_seed_depends_on_seed_and_id_only():
    assert image_seed(0, "a") == image_seed(0, "a")
    assert len({image_seed(0, "a"), image_seed(0, "b"), image_seed(1, "a")}) == 3


def test_relabel_by_size_orders_segments_largest_first():
    labels = np.array([[5, 5, 5, 1], [2, 2, 5, 1], [9, 2, 5, 5]])
    relabelled = relabel_by_size(labels)
    assert relabelled.tolist() == [[0, 0, 0, 2], [1, 1, 0, 2], [3, 1, 0, 0]]


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="max_iter"):
        Segmenter(max_iter=0)


@pytest.mark.parametrize("sync_every", [3, 7])
def test_reading_q_in_bursts_returns_the_exact_stopping_iteration(three_regions, sync_every):
    image, _ = three_regions
    kwargs = {"max_iter": 40, "stopping": ThresholdStopping(6)}
    every_time = small_segmenter(**kwargs).fit(image, seed=0)
    bursts = small_segmenter(**kwargs, sync_every=sync_every).fit(image, seed=0)
    assert every_time.stop_reason == bursts.stop_reason == "threshold"
    assert bursts.iterations == every_time.iterations
    assert bursts.history == every_time.history
    assert np.array_equal(bursts.labels, every_time.labels)


@pytest.mark.slow
def test_compiled_iterations_compute_the_same_labels(three_regions):
    image, _ = three_regions
    kwargs = {"max_iter": 3, "stopping": ThresholdStopping(0)}
    compiled = small_segmenter(**kwargs, compile=True).fit(image, seed=2)
    eager = small_segmenter(**kwargs).fit(image, seed=2)
    assert (compiled.labels == eager.labels).mean() > 0.999
    np.testing.assert_allclose(compiled.history["loss_sim"], eager.history["loss_sim"], rtol=1e-4)


def test_bf16_forward_runs_close_to_float32(three_regions):
    image, _ = three_regions
    kwargs = {"max_iter": 2, "stopping": ThresholdStopping(0)}
    bf16 = small_segmenter(**kwargs, precision="bf16").fit(image, seed=0)
    fp32 = small_segmenter(**kwargs).fit(image, seed=0)
    assert bf16.labels.shape == fp32.labels.shape
    np.testing.assert_allclose(bf16.history["loss_sim"], fp32.history["loss_sim"], rtol=0.05)
    with pytest.raises(ValueError, match="precision"):
        Segmenter(precision="fp16")


FIXTURE = Path(__file__).parents[1] / "fixtures" / "engine_before.npz"


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("fsf_silhouette", {"stopping": SilhouetteStopping(k_min=2, k_max=6, n_samples=300)}),
        ("scf_thr0", {"weighting": SCFWeighting(50.0), "stopping": ThresholdStopping(0)}),
        ("fixed_thr4", {"weighting": FixedWeighting(5.0), "stopping": ThresholdStopping(4)}),
    ],
)
def test_one_image_fits_match_the_two_loop_engine(name, settings):
    """The fixture was recorded by ``Segmenter.fit`` before the two loops became one. Labels,
    iterations, q' and μ must be identical; the float32 losses drift apart by ~1e-4 relative over
    40 iterations where another CPU's kernels round differently (bit-identical on the machine that
    recorded it)."""
    recorded = np.load(FIXTURE)
    result = small_segmenter(max_iter=40, **settings).fit(recorded["image"], seed=11)
    assert result.iterations == int(recorded[f"{name}/iterations"])
    assert np.array_equal(result.labels, recorded[f"{name}/labels"])
    for key in ("q", "mu"):
        assert np.array_equal(np.array(result.history[key]), recorded[f"{name}/{key}"]), key
    for key in ("loss_sim", "loss_con"):
        got, want = np.array(result.history[key]), recorded[f"{name}/{key}"]
        np.testing.assert_allclose(got, want, rtol=1e-3, err_msg=key)


def frozen(params: object) -> torch.optim.Optimizer:
    """An optimiser that never moves the weights, so the labels never change."""
    return torch.optim.SGD(params, lr=0.0)


def test_changed_fraction_is_zero_for_a_frozen_network_and_converges_after_the_window(
    three_regions,
):
    image, _ = three_regions
    result = small_segmenter(
        max_iter=20,
        optimizer=frozen,
        stopping=ThresholdStopping(1),
        convergence=ConvergenceRule(0.01, 3),
    ).fit(image, seed=0)
    assert result.history["changed"] == [1.0, 0.0, 0.0, 0.0]
    assert (result.iterations, result.stop_reason) == (3, "converged")


def test_changed_fraction_counts_every_pixel_that_changed():
    previous = torch.zeros(2, 3, 4, dtype=torch.int16)
    target = previous + 1
    target[1, 0, :2] = 0  # two of twelve pixels keep their label in the second image
    assert changed_fraction(target, previous).tolist() == pytest.approx([1.0, 10 / 12])


def test_the_threshold_fires_before_convergence_and_zero_means_no_early_stop(three_regions):
    image, _ = three_regions
    still = ConvergenceRule(0.5, 1)
    first = small_segmenter(max_iter=30, stopping=ThresholdStopping(16), convergence=still)
    assert first.fit(image, seed=0).stop_reason == "threshold"  # q' = 16 at iteration 0
    never = small_segmenter(max_iter=6, stopping=ThresholdStopping(0), convergence=still)
    assert never.convergence_rule is None
    result = never.fit(image, seed=0)
    assert (result.iterations, result.stop_reason) == (6, "max_iter")


def test_compile_without_a_cxx_compiler_runs_eager_with_one_warning(tmp_path):
    script = """
import logging, numpy as np, torch
from torch._inductor import config
config.cpp.cxx = ("/nonexistent/c++",)
from dynaseg.backbones import CNNBackbone
from dynaseg.engine import Segmenter
from dynaseg.stopping import ThresholdStopping
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
image = np.random.default_rng(0).integers(0, 255, (12, 14, 3), dtype=np.uint8)
kwargs = dict(backbone=lambda: CNNBackbone(8, 1), n_clusters=8, max_iter=2,
              stopping=ThresholdStopping(0))
compiled = Segmenter(compile=True, **kwargs)
for seed in (0, 1):
    a, b = compiled.fit(image, seed), Segmenter(**kwargs).fit(image, seed)
    assert np.array_equal(a.labels, b.labels) and a.history == b.history
print("same")
"""
    env = os.environ | {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path), "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "same"
    warnings = [line for line in done.stderr.splitlines() if line.startswith("dynaseg.engine")]
    assert len(warnings) == 1 and "running eager" in warnings[0], done.stderr[-2000:]


def test_compiled_fits_reuse_one_graph_per_image_size():
    from torch._dynamo.utils import counters

    counters.clear()
    method = small_segmenter(max_iter=2, stopping=ThresholdStopping(0), compile=True)
    rng = np.random.default_rng(0)
    for height, width in [(12, 14), (12, 14), (12, 14), (13, 15), (13, 15)]:
        method.fit(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), seed=height)
    assert counters["stats"]["unique_graphs"] == 2  # a new network per image is no new graph


@pytest.mark.parametrize(("padding", "one_segment"), [("replicate", True), ("zeros", False)])
def test_a_flat_image_is_one_segment_only_without_zero_padding(padding, one_segment):
    """Zero padding (the paper's) makes the border pixels differ from the interior, so even a
    flat image splits into segments along its edges; replicate padding keeps it one segment."""
    segmenter = Segmenter(
        backbone=partial(CNNBackbone, padding_mode=padding),
        stopping=ThresholdStopping(1),
        convergence=ConvergenceRule(0.005, 5),
        max_iter=50,
    )
    result = segmenter.fit(np.full((24, 32, 3), 120, np.uint8), seed=0)
    assert (result.n_clusters == 1) is one_segment
