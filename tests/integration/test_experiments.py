"""The Table 1 and iterations-study scripts on the bundled samples, as a user runs them."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.segmentation import felzenszwalb

from dynaseg.data import BSDS500, sample_root
from dynaseg.outputs import RUN, label_image, save_png

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

from seeds_study import majority_partition, medoid  # noqa: E402
from tables import pool  # noqa: E402


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_pool_weights_best_iou_by_gt_segments_and_averages_the_rest():
    image_rows = [
        {
            "b/all": 0.5,
            "b/n_all": 3,
            "b/fine": 0.2,
            "b/n_fine": 1,
            "b/coarse": 0.9,
            "b/n_coarse": 1,
            "b/segments_per_image": 10,
            "b_regions/voi": 1.0,
            "b_regions/covering_pooled": 0.5,
            "b_regions/n_annotation_pixels": 300,
        },
        {
            "b/all": 0.1,
            "b/n_all": 1,
            "b/fine": 0.6,
            "b/n_fine": 3,
            "b/coarse": 0.3,
            "b/n_coarse": 2,
            "b/segments_per_image": 30,
            "b_regions/voi": 2.0,
            "b_regions/covering_pooled": 0.9,
            "b_regions/n_annotation_pixels": 100,
        },
    ]
    pooled = pool(image_rows, metric="b")
    assert pooled["all"] == pytest.approx((0.5 * 3 + 0.1) / 4)
    assert pooled["fine"] == pytest.approx((0.2 + 0.6 * 3) / 4)
    assert pooled["coarse"] == pytest.approx((0.9 + 0.3 * 2) / 3)
    assert pooled["mean"] == pytest.approx((pooled["all"] + pooled["fine"] + pooled["coarse"]) / 3)
    assert pooled["segments"] == 20 and pooled["voi"] == 1.5
    assert pooled["covering_pooled"] == pytest.approx((0.5 * 300 + 0.9 * 100) / 400)
    with pytest.raises(ValueError):
        pool([])


@pytest.mark.slow
def test_table1_and_the_iterations_study_agree_with_the_harness(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "results"
    table1 = [
        "table1.py",
        "--root",
        sample_root(),
        "--split",
        "val",
        "--methods",
        "felzenszwalb",
        "fsf",
        "--dynaseg-limit",
        "1",
        "--max-side",
        "48",
        "--max-iter",
        "3",
        "--runs",
        runs,
        "--out",
        out,
    ]
    script(*table1)
    results = out / "table1_bsd500_val.md"
    text = results.read_text()
    for method, folder in (("fsf", "val_fsf_48px_T3"), ("felzenszwalb", "val_felzenszwalb_native")):
        scores = json.loads((runs / folder / "metrics.json").read_text())
        pooled = pool(rows(out / f"table1_bsd500_val_{method}_per_image.csv"))
        assert pooled["all"] == pytest.approx(scores["bsd500/all"])
        assert pooled["mean"] == pytest.approx(scores["bsd500/mean"])
        assert f"| {pooled['all']:.3f} | {pooled['fine']:.3f} |" in text
    assert "On the 1 images every method ran on" in text
    assert "| 0.349 | 0.307 | 0.420 | 0.359 |" in text  # the paper's FSF row beside ours

    results.write_text(text + "\nOur analysis.\n")
    predictions = runs / "val_fsf_48px_T3" / "predictions"
    stamp = [p.stat().st_mtime_ns for p in sorted(predictions.iterdir())]
    script(*table1)
    assert results.read_text().endswith("\nOur analysis.\n")
    assert [p.stat().st_mtime_ns for p in sorted(predictions.iterdir())] == stamp  # read back

    shutil.rmtree(runs / "val_felzenszwalb_native")  # a row whose run folder is lost
    script(*table1, "--report-only")
    assert results.read_text() == text + "\nOur analysis.\n"  # its committed CSV stands in
    assert not (runs / "val_felzenszwalb_native").exists()

    study = tmp_path / "study"
    script(
        "iterations_study.py",
        "--root",
        sample_root(),
        "--split",
        "val",
        "--limit",
        "1",
        "--max-side",
        "48",
        "--checkpoints",
        "0",
        "3",
        "--out",
        study,
        "--compare",
        out / "table1_bsd500_val_fsf_per_image.csv",
    )
    by_t = {row["t"]: row for row in rows(study.with_suffix(".csv"))}
    harness = rows(out / "table1_bsd500_val_fsf_per_image.csv")[0]
    assert by_t["3"]["id"] == harness["id"]
    assert float(by_t["3"]["bsd500/all"]) == pytest.approx(float(harness["bsd500/all"]))
    assert float(by_t["0"]["q"]) > float(by_t["3"]["q"])
    report = study.with_suffix(".md").read_text()
    all_at_3 = f"{float(by_t['3']['bsd500/all']):.3f}"
    assert f"| 3 | {float(by_t['3']['q']):.1f} | {all_at_3} |" in report
    assert f"| `table1_bsd500_val_fsf_per_image.csv` | – | {all_at_3} |" in report


def test_the_segments_study_scores_a_runs_labels_as_the_run_did(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "results"
    common = ["--root", sample_root(), "--split", "val"]
    script("table1.py", *common, "--methods", "felzenszwalb", "--runs", runs, "--out", out)
    study = tmp_path / "study"
    script(
        "segments_study.py",
        *common,
        "--run",
        runs / "val_felzenszwalb_native",
        "--colour-space",
        "lab",
        "--linkage",
        "mean",
        "--colour-threshold",
        "0",
        "--ward-threshold",
        "0",
        "300",
        "--min-size",
        "1",
        "--out",
        study,
    )
    harness = {row["id"]: row for row in rows(out / "table1_bsd500_val_felzenszwalb_per_image.csv")}
    found = rows(study.with_suffix(".csv"))
    as_run = [r for r in found if r["connected"] == "False" and float(r["ward"]) == 0]
    assert sorted(r["id"] for r in as_run) == sorted(harness)
    for row in as_run:  # nothing changed: the run's own scores
        for key in ("bsd500/all", "bsd500_regions/covering_pooled", "bsd500_regions/voi"):
            assert float(row[key]) == pytest.approx(float(harness[row["id"]][key]))
    merged = [r for r in found if r["connected"] == "True" and float(r["ward"]) == 300]
    for row in merged:
        assert float(row["bsd500/segments_per_image"]) < float(
            harness[row["id"]]["bsd500/segments_per_image"]
        )
    assert "| – | – | yes | none | LAB 300 | 1 |" in study.with_suffix(".md").read_text()


def write_csv(path: Path, rows_: list[dict[str, float]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows_[0]))
        writer.writeheader()
        writer.writerows(rows_)


def image_row(item_id: str, best_iou: float, covering: float, voi: float) -> dict:
    return {
        "id": item_id,
        "bsd500/all": best_iou,
        "bsd500/n_all": 10,
        "bsd500/segments_per_image": 5,
        "bsd500_regions/covering_pooled": covering,
        "bsd500_regions/n_annotation_pixels": 100,
        "bsd500_regions/pri": 0.7,
        "bsd500_regions/voi": voi,
    }


def test_the_shortfall_analysis_finds_the_best_other_row_of_each_measure(tmp_path):
    from argparse import Namespace

    from shortfall import against_best

    ids = ["a", "b", "c"]
    table = {
        "ours": [image_row(i, 0.4, 0.5, 2.0) for i in ids],
        "sharp": [image_row(i, v, 0.3, 3.0) for i, v in zip(ids, (0.6, 0.5, 0.3), strict=True)],
        "coarse": [image_row(i, 0.1, 0.6, v) for i, v in zip(ids, (1.0, 2.5, 1.5), strict=True)],
        "partial": [image_row("a", 0.9, 0.9, 0.1)],  # lacks images: no competitor
    }
    for name, image_rows in table.items():
        write_csv(tmp_path / f"table1_bsd500_val_{name}_per_image.csv", image_rows)
    args = Namespace(results=tmp_path, split="val", against="ours")
    text = "\n".join(against_best(args, {"a": 5.0, "b": 10.0, "c": 20.0}))
    assert "the 2 rows with all these images (coarse, sharp)" in text
    # best IoU: sharp pools to 0.467 > 0.4; ours better on c only; gaps by third −0.2, −0.1, +0.1
    iou = "| best IoU (All) | sharp | 0.400 / 0.467 | 1 / 3 | -0.100 | -0.200 | -0.100 | +0.100 |"
    assert iou in text
    assert "| covering | coarse | 0.500 / 0.600 | 0 / 3 | -0.100 |" in text
    # VoI: lower is better; coarse pools to 1.667; ours (2.0) better on b only
    assert "| VoI | coarse | 2.000 / 1.667 | 1 / 3 | -0.500 | -1.000 | +0.500 | -0.500 |" in text


def test_the_fit_studys_refinement_takes_each_superpixels_majority_label():
    from fit_study import Refined

    # arg-max labels of a 1×4 map: 2, 2, 1, 0; superpixels: the first three pixels, the last one
    response = torch.zeros(1, 3, 1, 4)
    for pixel, label in enumerate([2, 2, 1, 0]):
        response[0, label, 0, pixel] = 1.0
    refined = Refined()
    refined.superpixels = torch.tensor([0, 0, 0, 1])
    refined.count = 2
    target, n_labels, loss_sim, _ = refined(lambda x: (x, response), torch.zeros(1), 3)
    assert target.tolist() == [[[2, 2, 2, 0]]]
    assert int(n_labels) == 2
    assert float(loss_sim) == pytest.approx(
        float(torch.nn.functional.cross_entropy(response, target))
    )


@pytest.mark.slow
def test_a_default_run_keeps_its_fits_and_the_study_redoes_its_step(tmp_path):
    """The default run writes its segments and, in ``fitted/``, the fit's own labels; the study,
    given the default step's settings, turns those into exactly the segments the run scored."""
    runs, out = tmp_path / "runs", tmp_path / "results"
    common = ["--root", sample_root(), "--split", "val", "--max-side", "48"]
    fit = ["--methods", "default", "--dynaseg-limit", "2", "--max-iter", "3"]
    script("table1.py", *common, *fit, "--runs", runs, "--out", out)
    run = runs / "val_default_48px_T3"
    fitted = sorted((run / "fitted").glob("*.png"))
    assert len(fitted) == 2
    for path in fitted:
        segments = np.asarray(Image.open(run / "predictions" / path.name))
        as_fitted = np.asarray(Image.open(path))
        assert max(as_fitted.shape) == 48 and max(segments.shape) == 481
    study = tmp_path / "study"
    step = ["--vote-scale", "100", "--cut-scale", "1000", "--colour-space", "lab"]
    step += ["--linkage", "mean", "--colour-threshold", "12", "--ward-threshold", "200"]
    script("segments_study.py", *common, "--run", run, *step, "--min-size", "20", "--out", study)
    harness = {row["id"]: row for row in rows(out / "table1_bsd500_val_default_per_image.csv")}
    stepped = [r for r in rows(study.with_suffix(".csv")) if r["connected"] == "True"]
    assert sorted(r["id"] for r in stepped) == sorted(harness)
    for row in stepped:
        for key in ("bsd500/all", "bsd500/segments_per_image", "bsd500_regions/voi"):
            assert float(row[key]) == pytest.approx(float(harness[row["id"]][key]))


def test_majority_boundaries_keep_the_boundaries_most_fits_draw():
    left = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]])
    extra = left.copy()
    extra[:, 3] = 2  # one fit draws one boundary more
    shifted = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]])  # and one another, once
    assert majority_partition([left, extra, shifted]).tolist() == left.tolist()
    apart = np.arange(12).reshape(3, 4)
    assert np.unique(majority_partition([apart, apart, left])).size == 12
    assert np.unique(majority_partition([left, left + 5, left * 7])).size == 2  # ids don't matter
    # a boundary kept by two maps of four is dropped: a tie joins
    assert np.unique(majority_partition([left, left, left * 0, left * 0])).size == 1


def test_the_medoid_is_the_fit_nearest_the_others():
    halves = np.repeat([[0, 0, 1, 1]], 4, axis=0)
    close = halves.copy()
    close[0, 1] = 1
    speckled = np.arange(16).reshape(4, 4)
    assert medoid([speckled, close, halves, halves]) == 2
    assert medoid([speckled, speckled, halves]) == 0  # the majority wins, even a poor one


@pytest.mark.slow
def test_the_seeds_study_picks_the_fit_the_others_agree_with(tmp_path):
    """Three "seeds" of one image: two near-identical maps and one shredded; the medoid row
    must be one of the two, and each seed's row scores that seed's map through the step."""
    dataset = BSDS500(sample_root(), "val", limit=1)
    item_id = dataset.ids[0]
    image = np.asarray(Image.open(dataset.image_dir / f"{item_id}.jpg"))
    good = felzenszwalb(image, scale=300, sigma=0.5, min_size=400)
    near = good.copy()
    near[:5] = good.max() + 1
    shredded = np.arange(good.size).reshape(good.shape) % 251
    runs = []
    for name, labels in (("shredded", shredded), ("good", good), ("near", near)):
        run = tmp_path / name
        save_png(RUN.path(run, "labels", item_id), label_image(labels))
        runs.append(run)
    out = tmp_path / "seeds"
    study = ["--root", sample_root(), "--split", "val", "--limit", "1", "--runs", *runs]
    script("seeds_study.py", *study, "--out", out)
    found = {row["rule"]: row for row in rows(out.with_suffix(".csv"))}
    assert found["medoid"]["medoid"] in ("good", "near")
    medoid_row = found[f"seed of {found['medoid']['medoid']}"]
    for key in ("bsd500/all", "bsd500_regions/voi"):
        assert float(found["medoid"][key]) == float(medoid_row[key])
    assert float(found["seed of shredded"]["bsd500/segments_per_image"]) > float(
        found["seed of good"]["bsd500/segments_per_image"]
    )
    assert "| majority boundaries |" in out.with_suffix(".md").read_text()
