"""The benchmarks at a tiny size do the same work on both sides: the same optimizer steps on the same images
(the framework tax's plain loop against the digits recipe, ``zoo fit`` against a plain loop on synthetic images,
the GPU benchmark on a CPU). No timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import framework_tax  # noqa: E402
import synthetic_fit  # noqa: E402


def test_the_plain_loop_splits_the_digits_as_the_recipe_does():
    from zoo.data import DigitsDataModule

    data = DigitsDataModule(batch_size=64, val_fraction=0.2, test_fraction=0.2, seed=0)
    data.setup()
    splits = framework_tax.digits_splits(seed=0, val_fraction=0.2, test_fraction=0.2)
    for name, (x, y) in splits.items():
        theirs = data.splits[name]
        assert torch.equal(torch.sort(y).values, torch.sort(theirs.y).values), name
        # the same images (pixel sums per image, in [0, 1] before any normalisation)
        ours = torch.sort(x.flatten(1).sum(1)).values
        assert torch.allclose(ours, torch.sort(theirs.x.flatten(1).sum(1)).values, atol=1e-4), name


def test_the_plain_loop_takes_the_recipes_steps(tmp_path):
    result = framework_tax.plain_fit(1, tmp_path, log=lambda *a: None)
    assert result["split_sizes"] == {"train": 1077, "val": 360, "test": 360}
    assert result["steps"] == result["steps_per_epoch"] == 17  # ⌈1077 / 64⌉, as Lightning counts them
    assert result["train_images"] == 1077 and result["val_batches"] == 6
    ((start, val_start, val_end),) = result["clock"]
    assert start < val_start < val_end


def test_zoo_fit_and_the_plain_loop_run_the_same_network_and_steps_and_clock_the_same_parts(tmp_path):
    """Both sides as the benchmark runs them (fresh processes), with the overhead rows' tiny network."""
    for side in ("zoo", "plain"):
        (tmp_path / side).mkdir()
    zoo = framework_tax.zoo_run(2, tmp_path / "zoo", tiny=True)
    plain = framework_tax.plain_run(2, tmp_path / "plain", tiny=True)
    assert zoo["steps"] == plain["steps"] == 34
    full = framework_tax.plain_fit(1, tmp_path / "full", log=lambda *a: None)["network_size"]
    assert zoo["network_size"] == plain["network_size"] < full / 10  # the tiny network on both sides
    for side in (zoo, plain):
        assert len(side["clock"]) == 2 and all(a < b < c for a, b, c in side["clock"])
        assert side["clock"][0][2] < side["clock"][1][0]  # epoch 0's validation ends before epoch 1 starts
    assert "checkpoints" in zoo["outputs"] and "metrics.csv" in zoo["outputs"]  # the recipe's outputs kept


def test_an_epoch_is_its_start_to_the_next_start_and_its_parts_add_up():
    clock = [
        [0.0, 0.2, 0.25],
        [0.3, 0.6, 0.7],
        [0.75, 1.0, 1.1],
        [1.2, 9.0, 9.5],
    ]  # the last epoch: not counted
    parts = framework_tax.parts(clock)
    assert parts["epoch"] == pytest.approx(0.45) and parts["train"] == pytest.approx(0.25)
    assert parts["val"] == pytest.approx(0.1) and parts["end"] == pytest.approx(0.05)


def test_zoo_fit_and_the_plain_loop_train_on_the_same_images_with_the_same_steps():
    spec = dict(
        arch="resnet18", size=16, batch=4, steps=2, epochs=2, precision="bf16-mixed", channels_last=True
    )
    zoo = synthetic_fit.zoo_side(**spec, device="cpu", classes=3, record=True)
    plain = synthetic_fit.plain_side(**spec, device="cpu", classes=3, record=True)
    assert zoo["steps"] == plain["steps"] == 4
    per_epoch = torch.bincount(torch.arange(8) % 3, minlength=3)  # image i of the split has label i mod 3
    assert zoo["class_counts"] == plain["class_counts"] == (2 * per_epoch).tolist()
    assert len(zoo["image_sums"]) == len(plain["image_sums"]) == 16
    assert zoo["image_sums"] == pytest.approx(plain["image_sums"], rel=1e-6)
    for side in (zoo, plain):
        assert side["images_per_s"] > 0 and side["cpu_ms_per_image"] > 0


def test_compare_runs_the_flushing_plain_loop_as_a_third_side_and_leaves_the_mode_as_it_found_it():
    from callbacks.denormals import flush_denormals, flushing

    flush_denormals(False)
    logged = []
    result = synthetic_fit.compare(
        "resnet18", 16, 4, 2, repeats=2, threads=0, flush_baseline=True, log=logged.append
    )
    assert not flushing()  # the zoo side's CLI turned it on: the plain side after it must not inherit it
    assert set(result["per_repeat"]) == {"zoo", "plain", "plain+flush"}
    order = ["zoo:", "plain:", "plain+flush:", "plain:", "plain+flush:", "zoo:"]  # each side first in turn
    assert [line.split()[-3] for line in logged] == order
    z, f = result["zoo"]["images_per_s"], result["plain+flush"]["images_per_s"]
    assert result["flush_ratio"] == pytest.approx(z / f)
    rows = framework_tax.throughput_rows(result)
    assert len(rows) == 3 and "flushing subnormals" in rows[2] and f"{result['flush_ratio']:.3f}" in rows[2]


def test_the_gpu_benchmark_runs_at_a_tiny_size_on_the_cpu(tmp_path):
    import gpu

    args = ["--device", "cpu", "--arch", "resnet18", "--size", "16", "--batch", "4", "--steps", "2"]
    assert gpu.main([*args, "--repeats", "1", "--configs", "fp32", "bf16-mixed", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert set(result["switches"]) == {"fp32", "bf16-mixed"}
    assert result["fit"]["spec"]["precision"] == "bf16-mixed" and result["fit"]["spec"]["channels_last"]
    text = (tmp_path / "gpu.md").read_text()
    assert "2470" in text and "`zoo fit` vs a plain loop" in text


def test_make_bench_reads_each_benchmarks_rows_back_from_its_results(tmp_path):
    import bench
    import pipeline

    saved = json.loads((Path(bench.HERE) / "results" / "pipeline.json").read_text())
    (tmp_path / "pipeline.json").write_text(json.dumps(saved))
    rows, sources = bench.table(["pipeline", "framework_tax"], tmp_path)
    assert rows == pipeline.rows(saved)  # the pipeline's own rows, nothing dropped or reworded
    assert sources[0].startswith(f"pipeline (input pipeline vs torchvision): {saved['date']}")
    assert sources[1] == "framework_tax: not run yet"
    switches = {"switches": {"m": {"fp32": {"step_s": 0.2, "setup_s": 0}, "compile": {"step_s": 0.1, "setup_s": 9}}},
                "workers": {"0": 0.4, "2": 0.2}}  # fmt: skip
    assert [r.split("|")[-2].strip() for r in bench.rows_of("switches", switches)] == ["2.00", "2.00"]
