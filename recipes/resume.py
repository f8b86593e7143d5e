"""``--ckpt_path last``: continue the newest run of a recipe from its ``last.ckpt``.

Lightning resolves ``ckpt_path="last"`` inside the current run's own folder, which is new for every start
(``version_N``, a new W&B run id), so on its own it never finds the run that was stopped. Here "last" becomes
the most recently written ``last*.ckpt`` anywhere under the recipe's run folders (or Lightning's SLURM
``hpc_ckpt_N.ckpt``, saved when a job is pre-empted) before Lightning sees it. Nothing there yet: ``fit`` starts
from scratch with a warning (so a SLURM script can always pass ``--ckpt_path last``); ``validate``/``test``/
``predict`` stop with an error naming the folders searched.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


def _get(node, key: str, default=None):
    try:
        value = node.get(key, default) if node is not None else default
    except (AttributeError, KeyError, TypeError):
        return default
    return default if value is None else value


def run_folders(config) -> list[Path]:
    """Folders that hold a recipe's checkpoints: ``checkpoint.dirpath`` when set, else the logger's folder
    (``save_dir/name``; W&B: ``save_dir/project``) and ``trainer.default_root_dir``."""
    dirpath = _get(_get(config, "checkpoint"), "dirpath")
    if dirpath:
        return [Path(dirpath)]
    trainer = _get(config, "trainer")
    folders = []
    loggers = _get(trainer, "logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        args = _get(logger, "init_args")
        save_dir = _get(args, "save_dir")
        if save_dir:  # CSV/TensorBoard: save_dir/name/version_N; W&B: save_dir/project/<run id>
            folders += [
                Path(save_dir) / str(_get(args, key)) for key in ("name", "project") if _get(args, key)
            ]
    folders.append(Path(_get(trainer, "default_root_dir", ".")))
    return list(dict.fromkeys(folders))


def find_last_checkpoint(folders: list[Path]) -> Path | None:
    """The newest ``last*.ckpt`` below ``folders``, or ``hpc_ckpt_N.ckpt`` in them; None if there is none."""
    found = set()
    for folder in folders:
        if folder.is_dir():
            found.update(folder.rglob("last*.ckpt"))
            found.update(folder.glob("hpc_ckpt_*.ckpt"))
    if not found:
        return None
    return max(found, key=lambda p: (p.stat().st_mtime, str(p)))


def resolve_last(config, subcommand: str) -> Path | None:
    """Replace ``ckpt_path: last`` in ``config`` by the file it names (see the module docstring)."""
    if config.get("ckpt_path") != "last":
        return None
    folders = run_folders(config)
    found = find_last_checkpoint(folders)
    where = ", ".join(str(f) for f in folders)
    if found is None:
        if subcommand != "fit":
            raise SystemExit(
                f"error: --ckpt_path last: no last.ckpt under {where}; give the checkpoint's path instead"
            )
        rank_zero_warn(f"--ckpt_path last: no last.ckpt under {where} yet, so training starts from scratch")
        config["ckpt_path"] = None
        return None
    rank_zero_info(f"--ckpt_path last: resuming from {found}")
    config["ckpt_path"] = str(found)
    return found
