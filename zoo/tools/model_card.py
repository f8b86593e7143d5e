"""The model card (``README.md``) of an exported hub folder, filled from the run that trained the checkpoint.

A run leaves its record in its log folder (``<run>/checkpoints/<name>.ckpt`` sits in it): ``metrics.csv`` (what the
CSV logger wrote: ``val/top1`` per epoch, the linear probe's at step 0 before any, then ``test/top1`` of the test
after fit, on the run's best checkpoint), ``config.yaml`` (the resolved config; its ``data`` section rebuilds the splits, whose sizes the card
gives) and ``command.txt`` (the command that started it). The card quotes them; it computes no figure of its own.
Its front matter follows the Hugging Face conventions (``huggingface_hub.ModelCardData``: ``library_name``,
``tags``, a ``model-index`` of the metrics); the license is left for the user to set.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import importlib
import io
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

import yaml

METRICS, CONFIG, COMMAND = "metrics.csv", "config.yaml", "command.txt"
TASK = "image-classification"


def run_folder(ckpt_path: str | Path) -> Path | None:
    """The log folder of the run that wrote ``ckpt_path`` (``<run>/checkpoints/x.ckpt`` → ``<run>``), if it has one."""
    for folder in Path(ckpt_path).resolve().parents[:2]:
        if (folder / METRICS).is_file() or (folder / CONFIG).is_file():
            return folder
    return None


def _checkpoint_header(path: Path) -> tuple | None:
    from zoo.runtime.checkpoint import read_checkpoint

    try:
        ckpt = read_checkpoint(path, mmap=True)
    except (OSError, ValueError):
        return None
    return ckpt.get("epoch"), ckpt.get("global_step")


def tested_checkpoint(run: Path, ckpt: dict) -> Path | None:
    """The checkpoint the run's test after fit used: the best one its checkpoint callback named last (in the run's
    ``last.ckpt``, else in ``ckpt``)."""
    from zoo.runtime.checkpoint import read_checkpoint

    last = run / "checkpoints" / "last.ckpt"
    final = read_checkpoint(last, mmap=True) if last.is_file() else ckpt
    for state in (final.get("callbacks") or {}).values():
        if isinstance(state, dict) and state.get("monitor") and state.get("best_model_path"):
            best = Path(state["best_model_path"])
            return best if best.is_file() else run / "checkpoints" / best.name
    return None


def run_metrics(run: Path, ckpt: dict) -> dict:
    """The run's top-1 figures for the checkpoint ``ckpt``, as ``metrics.csv`` holds them: ``val`` (of the
    checkpoint's epoch), ``test`` (the test after fit, when it tested these weights) and ``tested`` (the file the
    test after fit used)."""
    rows = []
    if (run / METRICS).is_file():
        with (run / METRICS).open() as f:
            rows = list(csv.DictReader(f))
    out: dict = {}
    if (
        ckpt.get("global_step") == 0
    ):  # the linear probe's checkpoint: its row at step 0, logged before any epoch
        val = [
            r["val/top1"] for r in rows if r.get("val/top1") and not r.get("epoch") and r.get("step") == "0"
        ]
    else:
        val = [r["val/top1"] for r in rows if r.get("val/top1") and r.get("epoch") == str(ckpt.get("epoch"))]
    if val:
        out["val"] = float(val[-1])
    test = [r["test/top1"] for r in rows if r.get("test/top1")]
    tested = tested_checkpoint(run, ckpt) if test else None
    if tested is not None:
        out["tested"] = tested
        if _checkpoint_header(tested) == (ckpt.get("epoch"), ckpt.get("global_step")):
            out["test"] = float(test[-1])
        else:
            out["other_test"] = float(test[-1])
    return out


def run_command(run: Path) -> list[str] | None:
    """The command that started the run (``command.txt``, a shell line), or None."""
    path = run / COMMAND
    return shlex.split(path.read_text()) if path.is_file() else None


def split_sizes(run: Path) -> tuple[dict[str, int], str] | None:
    """Images per split of the run's data, and the data's name: its data module rebuilt from the run's
    ``config.yaml`` (same folder, fractions and seed: the same split); None when the data is not at hand."""
    try:
        data = (yaml.safe_load((run / CONFIG).read_text()) or {}).get("data") or {}
        module, _, name = str(data["class_path"]).rpartition(".")
        args = {k: v for k, v in (data.get("init_args") or {}).items() if not k.startswith("_")}
        datamodule = getattr(importlib.import_module(module), name)(**args)
        with contextlib.redirect_stdout(io.StringIO()):  # its table of class counts was printed by the run
            datamodule.setup("fit")
        sizes = {split: len(ds) for split, ds in datamodule.splits.items()}
    except Exception:  # noqa: BLE001 - any reason the data cannot be listed now: the card says so
        return None
    root = args.get("root")
    return sizes, Path(str(root)).name if root else name


def _preprocessing(cfg: dict) -> str:
    if not cfg.get("mean"):
        return (
            f"input {'×'.join(map(str, cfg['input_size']))}; no normalisation was saved with the checkpoint"
        )
    size = cfg["input_size"]
    return (
        f"input {'×'.join(map(str, size))} ({'grey' if size[0] == 1 else 'RGB'}); resize the short side to "
        f"⌊{size[-1]} / crop_pct⌋ with `{cfg.get('interpolation')}` interpolation (crop_pct {cfg.get('crop_pct')}), "
        f"crop the {cfg.get('crop_mode', 'center')}; pixels to [0, 1], then (x − mean) / std with mean "
        f"({', '.join(f'{v:.4f}' for v in cfg['mean'])}) and std ({', '.join(f'{v:.4f}' for v in cfg['std'])})"
    )


def _usage(name: str, plain_timm: bool, channels: int) -> str:
    mode = "L" if channels == 1 else "RGB"
    if plain_timm:
        build = (
            f'model = timm.create_model("local-dir:{name}", pretrained=True).eval()  # or "hf-hub:ORG/{name}"'
        )
        head = "import timm\nimport torch\nfrom PIL import Image\n\n"
    else:
        build = f'model = zoo.create_model("local-dir:{name}").eval()  # or "hf-hub:ORG/{name}"'
        head = "import timm\nimport torch\nimport zoo  # pip install lightning-zoo\nfrom PIL import Image\n\n"
    return (
        f"```python\n{head}{build}\n"
        "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))\n"
        'labels = model.pretrained_cfg["label_names"]\n'
        "with torch.no_grad():\n"
        f'    probs = model(transform(Image.open("photo.jpg").convert("{mode}"))[None]).softmax(-1)[0]\n'
        "print(labels[int(probs.argmax())], float(probs.max()))\n```\n"
    )


def _versions() -> str:
    import lightning
    import timm
    import torch

    import zoo

    return f"lightning-zoo {zoo.__version__}, timm {timm.__version__}, torch {torch.__version__}, Lightning {lightning.__version__}"


def model_card(
    name: str,
    arch: str,
    plain_timm: bool,
    ckpt: dict,
    ckpt_path: str | Path,
    data_config: dict,
    class_names: Sequence[str] | None,
    recipe: str | None = None,
    command: Sequence[str] | None = None,
) -> str:
    """The card's text: front matter, what the model is, how it was trained (recipe and command), the data, the
    run's metrics, the preprocessing, how to load it, the date and the library versions."""
    from huggingface_hub import EvalResult, ModelCardData

    run = run_folder(ckpt_path)
    metrics = run_metrics(run, ckpt) if run else {}
    sizes = split_sizes(run) if run else None
    data_name = sizes[1] if sizes else "image folder"
    hparams = ckpt.get("hyper_parameters") or {}
    results = [
        EvalResult(
            task_type=TASK,
            dataset_type="imagefolder",
            dataset_name=data_name,
            dataset_split=split,
            metric_type="accuracy",
            metric_name=f"{split} top-1",
            metric_value=metrics[split],
        )
        for split in ("val", "test")
        if split in metrics
    ]
    front = ModelCardData(
        library_name="timm" if plain_timm else "lightning-zoo",
        pipeline_tag=TASK,
        tags=[TASK, "timm", "lightning-zoo"],
        model_name=name,
        eval_results=results or None,
    ).to_yaml()
    names = list(class_names or [])
    lines = [
        "---",
        front,
        "# license: set the license of these weights before you share them (e.g. apache-2.0, mit, other)",
        "---",
        "",
        f"# {name}",
        "",
        f"An image classifier: `{arch}` trained with lightning-zoo to tell "
        f"{len(names) or hparams.get('num_classes')} classes apart"
        + (f" ({', '.join(f'`{n}`' for n in names)})." if names else "."),
        "",
    ]
    if not plain_timm:
        lines += [
            f"Plain timm cannot build `{arch}` (a lightning-zoo network; `config.json` names it `zoo/{arch}`): load it "
            f'with `zoo.create_model("local-dir:{name}")` after `pip install lightning-zoo`.',
            "",
        ]
    start = hparams.get("pretrained_path") or (
        "timm's pretrained weights" if hparams.get("pretrained") else None
    )
    lines += ["## Training", ""]
    lines.append(f"- Recipe: `{recipe}`" if recipe else "- Recipe: not named at export (`--recipe`)")
    if command:
        lines.append(f"- Command: `{shlex.join(command)}`")
    else:
        lines.append("- Command: not recorded (the run folder has no command.txt)")
    lines.append(f"- Started from: {f'`{start}`' if start else 'random weights'}")
    lines.append(
        f"- Checkpoint: `{Path(ckpt_path).name}` (epoch {ckpt.get('epoch')}, step {ckpt.get('global_step')})"
    )
    lines += ["", "## Data", ""]
    if names:
        lines.append(f"Classes ({len(names)}, in label order): {', '.join(f'`{n}`' for n in names)}.")
        lines.append("")
    if sizes:
        lines += ["| split | images |", "|---|---:|"]
        lines += [f"| {split} | {count} |" for split, count in sizes[0].items()]
        lines += ["", f"The splits of `{data_name}` as the run's config (`config.yaml`) makes them.", ""]
    else:
        lines += ["Images per split: not known (the run's data could not be read at export).", ""]
    lines += ["## Results", ""]
    rows = [f"| top-1 | {split} | {metrics[split]:.4f} |" for split in ("val", "test") if split in metrics]
    if rows:
        lines += ["| metric | split | value |", "|---|---|---:|", *rows, ""]
        lines.append(
            "From the run's `metrics.csv`: `val` is the validation split at the checkpoint's epoch, `test` the "
            "held-out test split, measured once after training."
        )
    if "other_test" in metrics:
        lines.append(
            f"The run's test after fit measured {metrics['other_test']:.4f} on another checkpoint "
            f"(`{metrics['tested'].name}`), not these weights."
        )
    if not rows and "other_test" not in metrics:
        lines.append("No metrics recorded (the run folder has no metrics.csv: a CSV logger writes one).")
    channels = int((data_config.get("input_size") or [3])[0])
    lines += ["", "## Preprocessing", "", _preprocessing(data_config) + ".", ""]
    lines += ["## How to use", "", _usage(name, plain_timm, channels)]
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    trained = datetime.date.fromtimestamp(os.path.getmtime(ckpt_path)).isoformat()
    lightning = ckpt.get("pytorch-lightning_version")
    lines += [
        "## Versions",
        "",
        f"- Checkpoint written: {trained}" + (f" (Lightning {lightning})" if lightning else ""),
        f"- Exported: {today} ({_versions()})",
        "",
    ]
    return "\n".join(lines)
