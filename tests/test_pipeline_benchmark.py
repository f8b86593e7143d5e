"""The pipeline benchmark at a tiny size: both sides read the same images and deliver the same batches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import pipeline  # noqa: E402


def test_both_sides_read_the_same_images_and_deliver_the_same_batches(tmp_path):
    root = pipeline.make_folder(tmp_path / "jpegs", 12, size=(100, 75), classes=3)
    ref, _ = pipeline.reference_loader(root, 32, 4, 0)
    zoo, finish = pipeline.zoo_loader(root, 32, 4, 0)
    files = getattr(zoo.dataset, "dataset", zoo.dataset)  # the image files behind any sampling wrapper
    assert sorted(p for p, _ in ref.dataset.samples) == sorted(p for p, _ in files.samples)
    assert sorted(y for _, y in ref.dataset.samples) == sorted(files.targets)
    result = pipeline.measure(root, size=32, batch=4, workers=0, repeats=2)
    delivered = result["delivered"]
    assert (
        delivered["zoo"]
        == delivered["torchvision"]
        == {"images": 12, "shape": [3, 32, 32], "dtype": "float32"}
    )
    assert delivered["zoo uint8"] == {"images": 12, "shape": [3, 32, 32], "dtype": "uint8"}
    assert set(result["images_per_s"]) == {"zoo", "zoo uint8", "torchvision"}
    assert len(result["per_repeat"]["zoo"]) == 2 and set(result["median_repeat_ratio"]) == {
        "zoo",
        "zoo uint8",
    }
    assert set(result["cpu_ms_per_image"]) == {"zoo", "zoo uint8", "torchvision"}
    assert all(v > 0 for v in result["cpu_ms_per_image"].values())
    n, _, x, cpu = pipeline.epoch(zoo, finish)  # normalised on the way out, as the reference's are
    assert cpu is not None and cpu > 0
    assert n == 12 and x.dtype == torch.float32 and -3 < x.mean() < 3


def test_writes_results_and_prints_one_table_row(tmp_path, capsys):
    args = ["--images", "8", "--repeats", "1", "--workers", "0", "--batch", "4", "--crop", "32"]
    assert pipeline.main([*args, "--source", "100", "75", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out.strip().splitlines()[-4:]
    for row in table:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0].startswith("input pipeline") and len(cells) == 4
        zoo, ref, ratio = (float(c) for c in cells[1:])
        better = ref / zoo if "CPU ms" in cells[0] else zoo / ref  # fewer ms, more images/s
        assert ratio == pytest.approx(better, rel=0.05, abs=0.02)  # from the printed, rounded figures
    saved = json.loads((tmp_path / "pipeline.json").read_text())
    assert {"date", "machine", "images_per_s", "ratio", "per_repeat"} <= set(saved) and "torch" in saved[
        "machine"
    ]
    assert saved["repeats"] == 1 and saved["images"] == 8  # the settings, next to the figures
    assert "| input pipeline, images/s, normalised on the CPU" in (tmp_path / "pipeline.md").read_text()
