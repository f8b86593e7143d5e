"""The one checkpoint reader: ``torch.load`` with ``weights_only=True`` unless the user opts out, and one error
style for every file that cannot be used (missing, a folder, unreadable, not a torch file, truncated, pickled
Python objects, no ``state_dict``, weights of another model).

torch's own errors for these cases range from ``KeyError: 101`` (a text file) to a page about pickle
protocols, and Lightning adds none of its own, so each becomes a :class:`~zoo.errors.CheckpointError` here:
one line naming the file and what to do. A refused pickle never ran: ``weights_only=True`` only rebuilds
tensors and plain types, so nothing in the file executes. Zoo checkpoints hold nothing else
(:func:`non_plain` finds what would break that), so they load with ``weights_only=True`` everywhere.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path, PurePath
from typing import Any

import torch
from torch import nn

from zoo.errors import CheckpointError, MissingCheckpoint

__all__ = [
    "CheckpointError",
    "MissingCheckpoint",
    "check_fits",
    "load",
    "non_plain",
    "read_checkpoint",
    "to_plain",
]

TRUST_HINT = "--weights_only false"  # how the zoo's commands let a user load a pickled file they trust
PLAIN = (torch.Tensor, str, int, float, bool, bytes, type(None), torch.dtype, torch.device, torch.Size)


def _pickled_global(err: BaseException) -> str | None:
    """The Python object a weights-only load refused (``posix.system``, ``pathlib.PosixPath``), if named."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    return found.group(1) if found else None


def load(
    path: str | Path, weights_only: bool = True, trust_hint: str = TRUST_HINT, mmap: bool = False
) -> Any:
    """Whatever ``path`` holds, read with ``torch.load(map_location="cpu")``; every failure is one
    :class:`~zoo.errors.CheckpointError` naming the file (``trust_hint``: the option that allows pickles)."""
    path = Path(path).expanduser()
    name = repr(str(path))
    if not path.exists():
        raise MissingCheckpoint(f"checkpoint {name} does not exist; check the path")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {name} is a folder; give the .ckpt file inside it")
    if mmap:
        with open(path, "rb") as f:
            mmap = f.read(4) == b"PK\x03\x04"  # torch maps only its zip format; older files load whole
    try:
        with warnings.catch_warnings():  # torch's notes on odd files: the errors below say what is wrong
            warnings.filterwarnings("ignore", module=r"torch\.")
            return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except PermissionError as err:
        raise CheckpointError(f"cannot read checkpoint {name}: permission denied ({err.strerror})") from err
    except pickle.UnpicklingError as err:
        found = _pickled_global(err)
        if weights_only and found:
            raise CheckpointError(
                f"cannot load checkpoint {name} with weights_only=True: it holds pickled Python objects "
                f"({found}), which could run code when loaded; nothing was run. Pass {trust_hint} only if you "
                "trust the file"
            ) from err
        raise CheckpointError(f"cannot load checkpoint {name}: not a torch checkpoint, or damaged") from err
    except RuntimeError as err:
        what = "truncated or damaged" if "zip archive" in str(err) else str(err).splitlines()[0]
        raise CheckpointError(f"cannot load checkpoint {name}: {what}; save or copy it again") from err
    except Exception as err:  # noqa: BLE001 - torch's unpicklers raise KeyError, IndexError, EOFError, ...
        raise CheckpointError(f"cannot load checkpoint {name}: not a torch checkpoint, or truncated") from err


def read_checkpoint(
    path: str | Path, weights_only: bool = True, trust_hint: str = TRUST_HINT, mmap: bool = False
) -> dict:
    """A Lightning checkpoint (a dict with a ``state_dict``), read by :func:`load`."""
    ckpt = load(path, weights_only, trust_hint, mmap)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(
            f"{str(path)!r} is not a Lightning checkpoint (it has no 'state_dict'); give a .ckpt written by "
            "`zoo fit`, or load plain weights with --model.pretrained_path"
        )
    return ckpt


def check_fits(model: nn.Module, state_dict: dict, source: str, arch: str | None = None) -> None:
    """Raise an error naming ``source`` and the missing, unexpected and mis-shaped keys if the weights do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
        for k, v in own.items()
        if k in state_dict and hasattr(state_dict[k], "shape") and state_dict[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return

    def show(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

    found = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": shapes}
    parts = [f"{name} {show(keys)}" for name, keys in found.items() if keys]
    ours = dict(getattr(model, "hparams", {})).get("arch")
    what = f"checkpoint arch {arch!r}, model arch {ours!r}"
    raise CheckpointError(
        f"{source}: the checkpoint does not fit the model ({what}): {'; '.join(parts)}. Use it with the "
        "recipe and data it was trained with (--recipe/--config and the same --model and --data options)"
    )


def non_plain(obj: Any, where: str = "") -> list[str]:
    """Where ``obj`` holds anything but tensors, plain types, and dicts/lists/tuples of them (what a
    ``weights_only=True`` load refuses), as ``key/path: type`` lines; empty when the checkpoint is clean."""
    if isinstance(obj, dict):
        return [bad for k, v in obj.items() for bad in non_plain(v, f"{where}/{k}")]
    if isinstance(obj, (list, tuple, set)):
        return [bad for i, v in enumerate(obj) for bad in non_plain(v, f"{where}[{i}]")]
    return [] if isinstance(obj, PLAIN) else [f"{where or '/'}: {type(obj).__module__}.{type(obj).__name__}"]


def to_plain(obj: Any) -> Any:
    """``obj`` with every path (``pathlib``) turned into its string, dicts and lists changed in place, so a
    checkpoint loads weights-only."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = to_plain(value)
    elif isinstance(obj, list):
        obj[:] = [to_plain(v) for v in obj]
    elif isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(to_plain(v) for v in obj)
    return str(obj) if isinstance(obj, PurePath) else obj
