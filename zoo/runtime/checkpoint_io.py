"""Checkpoints written atomically: a kill during a save leaves the previous file whole.

Lightning's ``TorchCheckpointIO`` opens the target for writing and writes into it, so a job killed in the middle
of a save (pre-emption, out of memory, the time limit) leaves a truncated ``last.ckpt`` and nothing to resume
from. Here the bytes go to a temporary file in the same folder, are flushed to disk (``fsync``), and the file is
renamed over the target (``os.replace``, atomic on POSIX file systems): a reader sees the old file or the new
one, never a part. A save the machine refuses (disk full, a file-size limit, a quota, a permission) is one
:class:`~zoo.errors.MachineFault` naming the file and the cause, and the file before it is left as it was.
Remote paths (``s3://`` ...) keep Lightning's own writer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from zoo.errors import MACHINE_FAULTS, fault_error, machine_fault


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``<dir>/.<name>.<pid>.tmp``, fsync, then rename it to ``<dir>/<name>``.

    A temporary file left by a process killed while saving is deleted by the next save of the same name, or
    when the checkpoint beside it is loaded (a resumed run writes into a new folder).
    """

    @override
    def load_checkpoint(self, path: str | os.PathLike, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if isinstance(get_filesystem(path), LocalFileSystem):
            _remove_stale(Path(path))
        return super().load_checkpoint(path, *args, **kwargs)

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r})")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(target)
        tmp = _tmp_path(target)
        try:
            with tmp.open("wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException as err:
            tmp.unlink(missing_ok=True)
            fault = machine_fault(err)
            if fault is None:
                raise
            kept = f"{target.name} is as it was" if target.exists() else "nothing was written"
            raise fault_error(
                target, fault, "cannot save checkpoint", f"{MACHINE_FAULTS[fault.errno][1]} ({kept})"
            ) from err
        _fsync_dir(target.parent)  # the rename itself reaches the disk


def atomic_link(source: str | os.PathLike, target: str | os.PathLike) -> bool:
    """Make ``target`` a hard link of ``source`` (the same file under a second name: no bytes written), as
    atomically as a save: link to ``.<name>.<pid>.tmp``, then rename it over ``target``. False, with nothing
    changed, where that cannot be done (remote paths, a file system without hard links): the caller saves."""
    if not all(isinstance(get_filesystem(p), LocalFileSystem) for p in (source, target)):
        return False
    target = Path(target)
    _remove_stale(target)
    tmp = _tmp_path(target)
    try:
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    _fsync_dir(target.parent)
    return True


def _tmp_path(target: Path) -> Path:
    """Where this process writes ``target`` before renaming it: ``<dir>/.<name>.<pid>.tmp``."""
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def _remove_stale(target: Path) -> None:
    """Delete ``.<name>.<pid>.tmp`` files of processes that no longer run (killed in the middle of a save)."""
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        pid = tmp.name[len(target.name) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform without directory handles
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
