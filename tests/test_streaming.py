"""Streaming data with litdata: ``zoo data optimize`` writes an image folder's splits as chunks of the files'
own bytes; ``StreamingDataModule`` trains from them to the folder's accuracy, shards across two DDP processes
without duplicates, and resumes a killed run at the next unseen sample."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAINER
from litdata import StreamingDataset
from test_export import write_digits_folder

from zoo.data.folder import ImageFolderDataModule
from zoo.data.streaming import StreamingDataModule

RECORD = '''"""Train a linear model on a streaming data set; append the sample ids of every batch to a log."""
import json, os, signal, sys

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from zoo.data.streaming import StreamingDataModule


class Recording(StreamingDataModule):
    def make_splits(self):
        splits = super().make_splits()
        for split in splits.values():
            split.return_index = True  # batches are (x, label, sample id)
        return splits


class Linear(LightningModule):
    def __init__(self, log):
        super().__init__()
        self.head, self.log_path = torch.nn.Linear(64, 10), log

    def record(self, stage, ids):
        row = {"rank": self.global_rank, "stage": stage, "epoch": self.current_epoch,
               "step": self.global_step, "ids": ids.tolist()}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(row) + "\\n")

    def training_step(self, batch, i):
        x, y, ids = batch
        self.record("train", ids)
        return F.cross_entropy(self.head(x.flatten(1)), y)

    def validation_step(self, batch, i):
        self.record("val", batch[2])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class KillAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up at all, as when a node dies


if __name__ == "__main__":
    a = json.loads(sys.argv[1])
    os.environ["PL_GLOBAL_SEED"] = "0"
    data = Recording(root=a["root"], channels=1, image_size=8, crop_pct=1.0, crop="center", hflip=0.0,
                     batch_size=a["batch"], num_workers=a["workers"], mean=[0.3], std=[0.3])
    callbacks = [KillAt(a["kill_at"])] if a.get("kill_at") else []
    if a.get("save_every"):
        callbacks.append(ModelCheckpoint(dirpath=a["ckpt_dir"], save_top_k=0, save_last=True,
                                         every_n_train_steps=a["save_every"]))
    trainer = Trainer(accelerator="cpu", devices=a.get("devices", 1), strategy=a.get("strategy", "auto"),
                      max_epochs=a["epochs"], logger=False, enable_checkpointing=bool(a.get("save_every")),
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      callbacks=callbacks)
    trainer.fit(Linear(a["log"]), data, ckpt_path=a.get("resume"), weights_only=True)
'''


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    """40 real digits per class as a folder of PNGs, and the same written by ``zoo data optimize``."""
    from recipes.cli import main

    where = tmp_path_factory.mktemp("streaming")
    folder = write_digits_folder(where / "digits", per_class=40)
    out = where / "optimized"
    assert (
        main(["data", "optimize", "--data.root", str(folder), "--output", str(out), "--num_workers", "2"])
        == 0
    )
    return {"folder": folder, "out": out, "where": where}


def records(split_dir: Path) -> list[dict]:
    ds = StreamingDataset(str(split_dir))
    return [ds[i] for i in range(len(ds))]


def test_optimize_keeps_each_files_bytes_the_folder_split_and_the_classes(digits):
    folder = ImageFolderDataModule(root=str(digits["folder"]), channels=1)
    folder.setup("fit")
    meta = json.loads((digits["out"] / "dataset.json").read_text())
    assert meta["class_names"] == folder.class_names == [str(d) for d in range(10)]
    assert set(meta["splits"]) == set(folder.splits) == {"train", "val", "test"}
    for split, files in folder.splits.items():
        written = records(digits["out"] / split)
        assert len(written) == meta["splits"][split]["count"] == len(files.samples)
        assert sorted(r["index"] for r in written) == list(range(len(files.samples)))
        for r in written:
            path, label = files.samples[r["index"]]
            assert bytes(r["image"]) == Path(path).read_bytes()  # the PNG as it is, not decoded
            assert r["label"] == label == meta["splits"][split]["labels"][r["index"]]
            assert r["name"] == os.path.relpath(path, digits["folder"])
        labels = [r["label"] for r in written[:40]]
        assert len(set(labels)) > 5  # written in a random order: a chunk holds every class


def test_optimize_refuses_to_overwrite_and_names_a_missing_folder(digits, zoo_cli, capsys):
    def fails(*args) -> str:
        code = zoo_cli("data", "optimize", *args)
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        return err

    assert "already holds a streaming data set; give --overwrite true" in fails(
        "--data.root", digits["folder"], "--output", digits["out"]
    )
    assert "'no/such/folder' does not exist" in fails(
        "--data.root", "no/such/folder", "--output", "elsewhere"
    )
    assert not Path("elsewhere").exists()


def test_streaming_module_errors_say_what_to_do(digits, tmp_path):
    with pytest.raises(FileNotFoundError, match="zoo data optimize --data.root IMAGE_FOLDER --output"):
        StreamingDataModule(root=str(tmp_path))
    with pytest.raises(ValueError, match=r"balance=true .* \(zoo.data.ImageFolderDataModule\)"):
        StreamingDataModule(root=str(digits["out"]), balance=True)
    with pytest.raises(ValueError, match="differ from those of"):
        StreamingDataModule(root=str(digits["out"]), class_names=["a", "b"])


def test_a_batch_decodes_the_images_as_the_folder_module_does(digits):
    options = {"channels": 1, "image_size": 8, "crop_pct": 1.0, "batch_size": 400, "num_workers": 0}
    stream = StreamingDataModule(root=str(digits["out"]), mean=[0.3], std=[0.3], **options)
    folder = ImageFolderDataModule(root=str(digits["folder"]), mean=[0.3], std=[0.3], **options)
    for dm in (stream, folder):
        dm.setup("fit")
    x_stream, y_stream = next(iter(stream.val_dataloader()))
    x_folder, y_folder = next(iter(folder.val_dataloader()))
    by_id = {int(r["index"]): i for i, r in enumerate(records(digits["out"] / "val"))}
    order = [by_id[i] for i in range(len(by_id))]  # the stream's position of each id
    assert (y_stream[order] == y_folder).all()
    assert (x_stream[order] == x_folder).all()


def test_workers_are_spawned_and_read_the_same_batches(digits):
    """litdata starts a loader's workers at every epoch: forked from a process that runs threads (DDP's), a
    worker could hang before it started; spawned, it starts from a clean interpreter."""
    options = {
        "channels": 1,
        "image_size": 8,
        "crop_pct": 1.0,
        "batch_size": 400,
        "mean": [0.3],
        "std": [0.3],
    }
    batches = {}
    for workers in (0, 2):
        dm = StreamingDataModule(root=str(digits["out"]), num_workers=workers, **options)
        dm.setup("fit")
        loader = dm.val_dataloader()
        if workers:
            assert loader.multiprocessing_context.get_start_method() == "spawn"
        batches[workers] = torch.cat([y for _, y in loader])
    assert torch.equal(batches[0].sort().values, batches[2].sort().values)


def _png(value: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (8, 8), value).save(out, format="PNG")
    return out.getvalue()


def _bad_record(item):
    index, data = item
    return {"index": index, "label": index % 2, "image": data, "name": f"img{index}.png"}


def test_an_image_that_cannot_be_decoded_is_named_counted_and_replaced(tmp_path):
    import litdata

    from zoo.data.streaming import FORMAT, write_meta

    images = [_png(10 * i) for i in range(8)]
    images[0] = images[0][:30]  # cut short: the header reads, the pixels do not (and no image before it)
    out = tmp_path / "stream"
    litdata.optimize(
        fn=_bad_record,
        inputs=list(enumerate(images)),
        output_dir=str(out / "val"),
        num_workers=1,
        chunk_bytes="1MB",
        start_method="fork",
    )
    labels = [i % 2 for i in range(8)]
    write_meta(str(out), {"format": FORMAT, "class_names": ["a", "b"], "splits": {"val": {"labels": labels}}})
    dm = StreamingDataModule(root=str(out), channels=1, image_size=8, crop_pct=1.0, batch_size=4, num_workers=0,
                             mean=[0.5], std=[0.5])  # fmt: skip
    dm.setup("validate")
    with pytest.warns(UserWarning, match=r"skipped unreadable image img0.png"):
        sizes = [len(y) for _, y in dm.val_dataloader()]
    assert sizes == [4, 4]  # the epoch goes on, batches stay full
    assert dm.splits["val"].skipped == {"img0.png"}


def metric(run: Path, key: str) -> float:
    with (run / "metrics.csv").open() as f:
        return next(float(r[key]) for r in csv.DictReader(f) if r.get(key))


@pytest.mark.slow
def test_fit_from_the_optimized_folder_reaches_the_folders_accuracy(tmp_path, zoo_cli):
    folder = write_digits_folder(tmp_path / "all_digits")  # all 1,797
    out = tmp_path / "all_optimized"
    assert zoo_cli("data", "optimize", "--data.root", folder, "--output", out, "--num_workers", "2") == 0
    common = (
        *(
            "fit",
            "--recipe",
            "folder",
            "--data.channels",
            "1",
            "--data.image_size",
            "8",
            "--data.crop_pct",
            "1",
        ),
        *(
            "--data.crop",
            "center",
            "--data.hflip",
            "0",
            "--data.num_workers",
            "0",
            "--trainer.max_epochs",
            "8",
        ),
        *("--model.model_kwargs", "{widths: [16, 32], depth: 1}", *FAST_TRAINER),
    )
    assert zoo_cli(*common, "--data.root", folder) == 0
    assert zoo_cli(*common, "--data", "zoo.data.StreamingDataModule", "--data.root", out) == 0
    from_folder, from_stream = (metric(Path(f"runs/folder/version_{v}"), "test/top1") for v in (0, 1))
    # Different shuffles give different networks: on 180 test images at ~97 % the two scores differ
    # by about 1.8 points (one standard deviation), so allow three; a wrong label or a wrong
    # normalisation in the stream costs far more than that.
    assert from_folder > 0.93 and from_stream > 0.93
    assert abs(from_stream - from_folder) <= 0.055


def run_record(tmp_path: Path, **args) -> list[dict]:
    script = tmp_path / "record.py"
    script.write_text(RECORD)
    log = tmp_path / f"{args.pop('name')}.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, str(script), json.dumps({**args, "log": str(log)})],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if not args.get("kill_at"):
        assert done.returncode == 0, done.stderr[-3000:]
    else:
        assert done.returncode == -9, done.stderr[-3000:]  # SIGKILL
    return [json.loads(line) for line in log.read_text().splitlines()]


def ids_seen(rows: list[dict], stage: str, epoch: int) -> dict[int, list[int]]:
    """rank -> the sample ids it saw in ``epoch`` of ``stage``."""
    seen = defaultdict(list)
    for r in rows:
        if r["stage"] == stage and r["epoch"] == epoch:
            seen[r["rank"]] += r["ids"]
    return dict(seen)


@pytest.mark.slow
def test_two_ddp_processes_see_each_sample_once_per_epoch(digits, tmp_path):
    batch, world, epochs = 16, 2, 3
    rows = run_record(
        tmp_path, name="ddp", root=str(digits["out"]), batch=batch, workers=2, epochs=epochs, devices=world,
        strategy="ddp",
    )  # fmt: skip
    meta = json.loads((digits["out"] / "dataset.json").read_text())
    n_train, n_val = meta["splits"]["train"]["count"], meta["splits"]["val"]["count"]
    left_out = []
    for epoch in range(epochs):
        train = ids_seen(rows, "train", epoch)
        assert sorted(train) == [0, 1]
        every = train[0] + train[1]
        assert len(every) == len(set(every))  # no sample twice, on one rank or across the two
        assert len(train[0]) == len(train[1])  # the same number of steps on each rank
        # litdata leaves out the last N mod (world × batch) of the shuffled order, others each epoch
        assert len(every) == n_train - n_train % (world * batch)
        left_out.append(set(range(n_train)) - set(every))
        val = ids_seen(rows, "val", epoch)
        assert sorted(val[0] + val[1]) == list(range(n_val))  # validation: every image exactly once
    for a, b in zip(left_out, left_out[1:]):  # others each epoch (by chance some again), not the same ones
        assert len(a & b) < len(a)
    orders = [ids_seen(rows, "train", e)[0] for e in range(epochs)]
    assert orders[0] != orders[1] != orders[2]  # shuffled anew each epoch


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_at_the_next_unseen_sample(digits, tmp_path):
    meta = json.loads((digits["out"] / "dataset.json").read_text())
    steps_per_epoch = meta["splits"]["train"]["count"] // 16
    saved_at, killed_at = steps_per_epoch + 5, steps_per_epoch + 8  # both in the middle of epoch 1
    common = {"root": str(digits["out"]), "batch": 16, "workers": 2, "epochs": 2}
    first = run_record(
        tmp_path,
        name="first",
        **common,
        save_every=saved_at,
        ckpt_dir=str(tmp_path / "ckpt"),
        kill_at=killed_at,
    )
    resumed = run_record(tmp_path, name="resumed", **common, resume=str(tmp_path / "ckpt" / "last.ckpt"))
    before = [r for r in first if r["stage"] == "train"]
    after = [r for r in resumed if r["stage"] == "train"]
    assert before[-1]["step"] == killed_at - 1  # the first run died 3 steps after its checkpoint
    assert (after[0]["epoch"], after[0]["step"]) == (1, saved_at)  # resumed where the checkpoint was
    by_step = {r["step"]: r["ids"] for r in before}
    for r in after[:3]:  # the batches the first run saw after its checkpoint come again, in the same order
        assert r["ids"] == by_step[r["step"]]
    epoch1 = [i for r in before if r["epoch"] == 1 and r["step"] < saved_at for i in r["ids"]]
    epoch1 += [i for r in after if r["epoch"] == 1 for i in r["ids"]]
    assert len(epoch1) == len(set(epoch1)) == steps_per_epoch * 16  # the whole epoch, each sample once


@pytest.mark.slow
def test_optimize_to_an_object_store_and_stream_from_it(digits, monkeypatch, tmp_path, zoo_cli):
    """``s3://`` both ways, against a local S3 server (moto's; the test needs ``pip install 'moto[server]'``)."""
    moto_server = pytest.importorskip("moto.server")
    import boto3
    import litdata.streaming.downloader as downloader

    server = moto_server.ThreadedMotoServer(port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_port}"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(key, "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        # a local server speaks http; litdata's object-store client (obstore) takes https only unless told
        monkeypatch.setattr(downloader, "_OBSTORE_CLIENT_OPTIONS", {"allow_http": "true"})
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="zoo")
        options = json.dumps({"endpoint_url": endpoint})
        args = ("--data.root", digits["folder"], "--output", "s3://zoo/digits", "--storage_options", options)
        assert zoo_cli("data", "optimize", *args, "--num_workers", "2") == 0
        listed = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket="zoo", Prefix="digits/")
        names = {o["Key"] for o in listed["Contents"]}
        assert {"digits/dataset.json", "digits/train/index.json", "digits/val/index.json"} <= names
        dm = StreamingDataModule(
            root="s3://zoo/digits", storage_options={"endpoint_url": endpoint}, cache_dir=str(tmp_path / "cache"),
            channels=1, image_size=8, crop_pct=1.0, batch_size=16, num_workers=0, mean=[0.3], std=[0.3],
        )  # fmt: skip
        dm.setup("fit")
        meta = json.loads((digits["out"] / "dataset.json").read_text())
        assert dm.class_names == meta["class_names"]
        seen = sum(len(y) for _, y in dm.val_dataloader())
        assert seen == meta["splits"]["val"]["count"]  # every validation image, streamed from the store
    finally:
        server.stop()
