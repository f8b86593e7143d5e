"""``StreamingDataModule``: train from litdata's chunked format, on a local disk or an object store (``s3://``).

``zoo data optimize`` (:func:`write_streaming`) lists an image folder as :class:`ImageFolderDataModule` does
(the same train / val / test split) and writes each split with ``litdata.optimize`` in parallel: chunks of
records ``{index, label, image, name}``, the image the file's own bytes (JPEG or PNG, never decoded and
re-encoded), plus ``dataset.json`` (classes and the labels of each split). Training reads it back with
litdata's ``StreamingDataset`` and ``StreamingDataLoader``: chunks are fetched ahead and cached, the order is
shuffled per epoch from the run's seed, each DDP rank (on any number of nodes) streams its own share without a
``DistributedSampler``, and the loader's ``state_dict`` goes into every checkpoint (Lightning saves it), so a
run resumes mid-epoch at the next unseen sample. Images are decoded and augmented by the same pipeline as the
image-folder module (:mod:`zoo.data.transforms`).

One epoch of training sees every image at most once; so that every rank takes the same number of full batches,
litdata leaves out the last N mod (world × batch) images of the shuffled order (others each epoch).
Validation and test see every image exactly once.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import multiprocessing
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming.sampler import ChunkedIndex
from PIL import Image
from torch.utils.data import Dataset

from zoo.data.base import ImageDataModule
from zoo.data.decode import READ_ERRORS, Source, orientation
from zoo.data.files import ImageFiles, list_images

# Lightning warns that an IterableDataset's __len__ may be wrong with several workers; litdata's is computed
# for the loader's workers and ranks (it is what Lightning counts batches by), so the warning does not apply
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
# predict: the CSV's ids come with each batch, so Lightning's batch indices (which a stream has none of) are unused
warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices fetched from your dataloader")

META = "dataset.json"
FORMAT = "lightning-zoo streaming images 1"
SPLITS = ("train", "val", "test")
FORK = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
# litdata starts a loader's workers anew at every epoch; a fork of a process that runs threads (a DDP process
# group's, the last loader's queue feeders) can hang in the child before it starts (seen: a rank stuck at its
# second epoch). Spawned workers start clean (each imports the dataset's modules, about 1-2 s) and, as children
# of the run's process, end with it; the forkserver's would outlive a run killed with SIGKILL.
WORKER_START = "spawn"


def is_remote(path: str) -> bool:
    return "://" in str(path)


def join(root: str, *parts: str) -> str:
    return "/".join([str(root).rstrip("/"), *parts]) if is_remote(root) else str(Path(root, *parts))


def _filesystem(path: str, storage_options: dict | None):
    # litdata's own client for s3:// and gs:// (the user's credentials, as its StreamingDataset uses them)
    from zoo.compat import remote_filesystem

    return remote_filesystem(path, storage_options)


def read_meta(root: str, storage_options: dict | None = None) -> dict:
    """``root/dataset.json`` (local or remote), or an error saying how to make it."""
    path = join(root, META)
    try:
        if is_remote(root):
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, META)
                _filesystem(path, storage_options).download_file(path, local)
                text = Path(local).read_text()
        else:
            text = Path(path).read_text()
        meta = json.loads(text)
    except FileNotFoundError:
        meta = None
    except (OSError, ValueError) as err:  # unreadable, or not JSON
        raise ValueError(f"cannot read {path}: {err}") from err
    except Exception as err:  # an object store's client error (no such key, no access)
        raise ValueError(f"cannot read {path}: {type(err).__name__}: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise FileNotFoundError(
            f"{root} holds no streaming data set ({META} missing or of another format); write one with "
            f"`zoo data optimize --data.root IMAGE_FOLDER --output {root}`"
        )
    return meta


def write_meta(root: str, meta: dict, storage_options: dict | None = None) -> None:
    text = json.dumps(meta) + "\n"
    if not is_remote(root):
        Path(root).mkdir(parents=True, exist_ok=True)
        Path(join(root, META)).write_text(text)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, META)
        Path(local).write_text(text)
        _filesystem(root, storage_options).upload_file(local, join(root, META))


def exists(root: str, storage_options: dict | None = None) -> bool:
    if is_remote(root):
        return _filesystem(root, storage_options).exists(join(root, META))
    return Path(root, META).exists()


def _record(item: tuple[str, int, int, str]) -> dict:
    """One sample as written: the file's bytes as they are, its label, its id in the split and its name."""
    path, label, index, name = item
    with open(path, "rb") as f:
        return {"index": index, "label": label, "image": f.read(), "name": name}


def write_streaming(
    datamodule,
    output: str,
    num_workers: int | None = None,
    chunk_bytes: str = "64MB",
    storage_options: dict | None = None,
    seed: int = 0,
) -> dict:
    """Write the splits of ``datamodule`` (an :class:`ImageFolderDataModule`, set up) under ``output``; the meta."""
    import litdata

    workers = max(1, num_workers or os.cpu_count() or 1)
    root = datamodule.root
    meta = {"format": FORMAT, "class_names": list(datamodule.class_names), "source": str(root), "splits": {}}
    for split in SPLITS:
        if split not in datamodule.splits:
            continue
        samples = datamodule.splits[split].samples
        items = [
            (path, int(label), i, os.path.relpath(path, root) if root else path)
            for i, (path, label) in enumerate(samples)
        ]
        # written in a random order: a chunk then holds every class, not a run of one (the listing is by class)
        order = np.random.default_rng(seed).permutation(len(items))
        litdata.optimize(
            fn=_record,
            inputs=[items[i] for i in order],
            output_dir=join(output, split),
            chunk_bytes=chunk_bytes,
            num_workers=min(workers, len(items)),
            mode="overwrite",
            storage_options=storage_options or {},
            verbose=False,
            start_method=FORK,  # the writers only read files: fork starts them at once, spawn re-imports torch
        )
        meta["splits"][split] = {"count": len(items), "labels": [label for _, label, _, _ in items]}
        print(f"Wrote the {split} split: {len(items)} images to {join(output, split)}")
    write_meta(output, meta, storage_options)
    return meta


class BytesSource(Source):
    """:class:`~zoo.data.decode.Source` over bytes already in memory (a streamed record), not a file."""

    def __init__(self, data: bytes, mode: str = "RGB", name: str = ""):
        self.path, self.mode, self.data = name, mode, bytes(data)
        self.img = Image.open(io.BytesIO(self.data))
        self.turned = orientation(self.img) in (5, 6, 7, 8)


class StreamingImages(StreamingDataset):
    """One split of a streaming data set: ``(transform(image), label)``, or ``(…, name)`` with ``return_name``.

    ``transform`` is the image transform; litdata applies a dataset's ``transform`` to each raw record, so the
    attribute litdata sees decodes the record first (:meth:`sample`). A record that cannot be decoded is
    warned about once by name, counted in ``skipped`` (per process) and replaced by the next readable one
    (batches stay full, as with :class:`~zoo.data.files.ImageFiles`), or dropped (``return_name``:
    :func:`collate_present` leaves it out).
    """

    def __init__(
        self,
        input_dir: str,
        labels: list[int],
        mode: str = "RGB",
        return_name: bool = False,
        split: str = "",
        **kw,
    ):
        self.image_transform = None
        super().__init__(input_dir, **kw)
        self.labels, self.mode, self.return_name, self.split = list(labels), mode, return_name, split
        self.return_index = False  # yield (x, label, index): which samples were seen, for checks
        self.skipped: set[str] = set()
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def __getitem__(self, index):
        if self.shuffle and isinstance(index, ChunkedIndex):
            index = self.permute(index)
        out = super().__getitem__(index)
        if out is None and not self.return_name:  # undecodable: the next readable image takes its place
            position = index.index if isinstance(index, ChunkedIndex) else int(index)
            for step in range(1, self.count):
                out = super().__getitem__((position + step) % self.count)
                if out is not None:
                    break
        return out

    def permute(self, index: ChunkedIndex) -> ChunkedIndex:
        """Position p of a chunk of n images reads image π(p), π a permutation drawn from (seed, epoch, chunk).

        litdata leaves out the tail positions of the epoch's last chunk (``drop_last``); without this the same
        images would be left out every epoch when a data set has few chunks. A bijection inside each chunk:
        every other image is still read once, from the chunk already fetched."""
        _, start, end, _ = self.cache.get_chunk_intervals()[index.chunk_index]
        key = (self.current_epoch, index.chunk_index)
        if end - start < 2 or not start <= index.index < end:
            return index
        if key not in self._perms:
            self._perms = {k: v for k, v in self._perms.items() if k[0] == key[0]}  # this epoch's only
            self._perms[key] = np.random.default_rng([self.seed, *key]).permutation(end - start)
        return dataclasses.replace(index, index=start + int(self._perms[key][index.index - start]))

    @property
    def targets(self) -> list[int]:
        """Labels by sample id (``index``), as written."""
        return self.labels

    @property
    def count(self) -> int:
        """Images in the split (``len()`` is this rank's share)."""
        return len(self.labels)

    @property
    def transform(self):
        return self.sample

    @transform.setter
    def transform(self, fn) -> None:
        self.image_transform = fn

    def image(self, record: dict):
        data, mode = record["image"], self.mode
        fn = self.image_transform
        if fn is not None and getattr(fn, "takes_source", False):
            return BytesSource(data, mode, record.get("name", ""))
        return BytesSource(data, mode, record.get("name", "")).pil()

    def sample(self, record: dict):
        """A raw record → ``(x, label)`` (``(x, name)`` with ``return_name``; ``(x, label, index)`` with
        ``return_index``); None for a record that cannot be decoded."""
        name = record.get("name", str(record["index"]))
        try:
            image = self.image(record)
            x = self.image_transform(image) if self.image_transform is not None else image
        except READ_ERRORS as err:
            if name not in self.skipped:
                self.skipped.add(name)
                warnings.warn(
                    f"skipped unreadable image {name}: {err} ({len(self.skipped)} so far)", stacklevel=2
                )
            return None
        if self.return_name:
            return x, name
        label = int(record["label"])
        return (x, label, int(record["index"])) if self.return_index else (x, label)


class ByIndex(Dataset):
    """Random access to every image of a streaming split (all ranks read the same ones): for statistics."""

    def __init__(self, split: StreamingImages):
        self.split = copy.copy(split)

    def __len__(self) -> int:
        return self.split.count

    def __getitem__(self, i: int):
        return self.split[int(i)]

    def __copy__(self):
        return ByIndex(self.split)

    @property
    def transform(self):
        return self.split.image_transform

    @transform.setter
    def transform(self, fn) -> None:
        self.split.transform = fn


class StreamingDataModule(ImageDataModule):
    """Images written by ``zoo data optimize`` under ``root`` (a folder, or ``s3://bucket/prefix``), streamed.

    Args:
        root: the optimized data set (``OUT`` of ``zoo data optimize``): local, or ``s3://`` / ``gs://``.
        predict_dir: images to predict (a folder); None: the test split (else validation) of ``root``.
        class_names: the classes in label order; None: those saved in ``root``. Needed without ``root``.
        channels: 3 (RGB) or 1 (grey images).
        cache_dir: where chunks of a remote ``root`` are cached; None: litdata's default.
        max_cache_size: cache budget (e.g. ``"100GB"``); None: litdata's default.
        storage_options: options of the object store's client (endpoint, region, ...); the credentials are
            the user's usual ones (environment, ``~/.aws``).
        **kwargs: preprocessing, augmentation and loader options of :class:`ImageDataModule` (as for the
            image-folder module; ``balance`` needs random access and is not available here).
    """

    def __init__(
        self,
        root: str | None = None,
        predict_dir: str | None = None,
        class_names: list[str] | None = None,
        channels: int = 3,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        storage_options: dict | None = None,
        **kwargs,
    ):
        if kwargs.get("balance"):
            raise ValueError(
                "balance=true draws images by class at random, which a stream read chunk by chunk cannot do; "
                "train from the image folder (zoo.data.ImageFolderDataModule) for class-balanced sampling"
            )
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), not {channels}")
        self.num_channels = channels
        self.root = str(root).rstrip("/") if root else None
        self.meta = read_meta(self.root, storage_options) if self.root else None
        saved = self.meta["class_names"] if self.meta else None
        if saved is not None and class_names is not None and list(class_names) != list(saved):
            raise ValueError(
                f"class_names {list(class_names)} (given, or saved in the checkpoint) differ from those of "
                f"{self.root}: {saved}; a model predicts the classes it was trained on"
            )
        if saved is None and class_names is None:
            raise ValueError(
                "give --data.root (a data set written by `zoo data optimize`) or, to predict only, "
                "--data.class_names"
            )
        self.class_names = list(saved if saved is not None else class_names)
        self.hparams["class_names"] = self.class_names  # saved in checkpoints, read back by `zoo predict`

    @property
    def _mode(self) -> str:
        return "L" if self.num_channels == 1 else "RGB"

    def _open(self, split: str, shuffle: bool = False, return_name: bool = False) -> StreamingImages:
        hp = self.hparams
        return StreamingImages(
            join(self.root, split),
            self.meta["splits"][split]["labels"],
            mode=self._mode,
            return_name=return_name,
            split=split,
            shuffle=shuffle,
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),  # the run's seed: every rank the same order
            item_shuffle_window=0 if shuffle else None,  # a full permutation inside each chunk
            cache_dir=hp.cache_dir,
            max_cache_size=hp.max_cache_size,
            storage_options=hp.storage_options,
        )

    def make_splits(self) -> dict[str, Dataset]:
        if self.meta is None:
            raise ValueError(
                "fit, validate and test need --data.root (a data set written by `zoo data optimize`)"
            )
        return {
            name: self._open(name, shuffle=name == "train") for name in SPLITS if name in self.meta["splits"]
        }

    def make_predict_set(self) -> Dataset:
        directory = self.hparams.predict_dir
        if directory is None:
            if self.meta is None:
                raise ValueError("predict needs --data.predict_dir (a folder of images) or --data.root")
            split = next(n for n in ("test", "val", "train") if n in self.meta["splits"])
            return self._open(split, return_name=True)
        if not Path(directory).is_dir():
            raise FileNotFoundError(f"predict_dir {directory!r} does not exist or is not a folder")
        listing = list_images(directory, check=True)
        listing.report(directory)
        if not listing.samples:
            raise FileNotFoundError(f"predict_dir {directory!r} holds no readable images (.jpg, .png, ...)")
        return ImageFiles(listing.samples, mode=self._mode, on_error="drop", return_path=True)

    def dataset_stats(self, cfg: dict) -> tuple[list[float], list[float]]:
        """The image-folder module's statistics, over the training images by random access (iterating the
        stream would give each DDP rank only its own share, and each rank other statistics)."""
        if self.stats is None:
            self.setup("fit")
            stream = self.splits["train"]
            self.splits["train"] = ByIndex(stream)
            try:
                return super().dataset_stats(cfg)
            finally:
                self.splits["train"] = stream
        return self.stats["mean"], self.stats["std"]

    def _loader(self, dataset: Dataset, train: bool = False, collate=None):
        """litdata's loader: the dataset shuffles and shards itself; training drops the remainder so every rank
        takes the same number of full batches, evaluation reads every image once."""
        if not isinstance(dataset, StreamingDataset):  # predict_dir: files on disk
            return super()._loader(dataset, train=train, collate=collate)
        world = self.trainer.world_size if self.trainer is not None else 1
        count, split = dataset.count, dataset.split
        if count < world * self.batch_size and (train or world > 1):
            raise ValueError(
                f"the {split} split of {self.root} has {count} images, fewer than one batch of "
                f"{self.batch_size} for each of the {world} processes; lower --data.batch_size"
            )
        workers = self.hparams.num_workers
        return StreamingDataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=workers,
            multiprocessing_context=WORKER_START if workers else None,
            drop_last=train,
            collate_fn=collate,
            pin_memory=self.trainer is not None and self.trainer.strategy.root_device.type == "cuda",
        )
