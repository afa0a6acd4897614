"""The bundled BSDS500-layout sample images (4 val images with their `.mat` ground truth).

They let the demo, the docs and the tests run without downloading anything.
"""

from __future__ import annotations

from pathlib import Path

from dynaseg.data.base import DatasetError

__all__ = ["sample_root"]


def sample_root() -> Path:
    """Return the folder to pass as `BSDS500(root=...)` to read the bundled samples.

    The files are package data inside `dynaseg/samples/BSDS500`, located from this module so
    the path is valid both in a source checkout and after `pip install`.
    """
    root = Path(__file__).resolve().parent.parent / "samples" / "BSDS500"
    if not (root / "images" / "val").is_dir():
        raise DatasetError(
            f"bundled samples {root}: expected images/val/*.jpg and groundTruth/val/*.mat; "
            "the package was installed without its sample data"
        )
    return root
