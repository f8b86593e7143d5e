"""What a search found: the ranked table of its trials, the trials drawn (lr against the validation score), and the
winner written as a complete recipe."""

from __future__ import annotations

from pathlib import Path

import yaml

from zoo.tools.search_space import Param


def _pruned(trial) -> bool:
    """Optuna stores a pruned trial's last reported score as its value too: its state tells."""
    return trial.state.name == "PRUNED"


def _value(trial) -> float | None:
    """A complete trial's score; a pruned one's last reported score."""
    if trial.value is not None:
        return trial.value
    steps = trial.intermediate_values
    return steps[max(steps)] if steps else None


def ranked(trials: list[tuple[str, object]], mode: str) -> list[tuple[str, object]]:
    """Fine trials first, then coarse; within a stage complete ones by score, then pruned ones by their last."""
    sign = 1 if mode == "min" else -1

    def key(item):
        stage, trial = item
        value = _value(trial)
        return (stage != "fine", _pruned(trial), sign * value if value is not None else float("inf"))

    return sorted(trials, key=key)


def table_rows(trials, space: list[Param], metric: str, mode: str) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the ranked table."""
    columns = ["rank", "trial", "epochs", metric, "val/top1", *(p.name for p in space), "state"]
    rows = []
    for rank, (stage, trial) in enumerate(ranked(trials, mode), 1):
        value = _value(trial)
        val = trial.user_attrs.get("val") or {}
        pruned = trial.user_attrs.get("pruned_at")
        state = f"pruned after epoch {pruned}" if _pruned(trial) else "complete"
        rows.append(
            [
                str(rank),
                f"{stage} #{trial.number}",
                str(trial.user_attrs.get("epochs_run", "")),
                f"{value:.4f}" if value is not None else "",
                f"{val['val/top1']:.4f}" if "val/top1" in val else "",
                *(f"{trial.params[p.key]:.3g}" if p.key in trial.params else "" for p in space),
                state,
            ]
        )
    return columns, rows


def plot(
    path: Path, trials, x: Param, metric: str, mode: str, title: str, winner=None, fine_range=None
) -> None:
    """Each trial at (its value of ``x``, its score): coarse and fine stages apart, pruned trials as crosses at their
    last score, the winner starred, the fine stage's range of ``x`` shaded."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.subplots()
    styles = {"coarse": ("C0", "o"), "fine": ("C1", "s")}
    for stage, (colour, marker) in styles.items():
        for pruned in (False, True):
            points = [
                (t.params[x.key], _value(t))
                for s, t in trials
                if s == stage and _pruned(t) == pruned and x.key in t.params and _value(t) is not None
            ]
            if points:
                xs, ys = zip(*points)
                label = f"{stage}{' (pruned: last score)' if pruned else ''}"
                ax.scatter(xs, ys, c=colour, marker="x" if pruned else marker, s=40, label=label, alpha=0.85)
    if winner is not None and x.key in winner.params:
        ax.scatter([winner.params[x.key]], [winner.value], marker="*", s=260, c="C3", zorder=5, label="best")
    if fine_range is not None:
        ax.axvspan(fine_range.low, fine_range.high, color="C1", alpha=0.08, label="fine stage's range")
    if x.log:
        ax.set_xscale("log")
    scores = [v for _, t in trials if (v := _value(t)) is not None]
    if mode == "min" and scores and min(scores) > 0 and max(scores) > 10 * min(scores):
        ax.set_yscale("log")  # losses a decade or more apart: the good trials stay apart at the bottom
    better = "lower" if mode == "min" else "higher"
    ax.set(xlabel=x.key, ylabel=f"{metric} ({better} is better)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def write_recipe(path: Path, config: dict, header: list[str]) -> None:
    """``config`` as a YAML recipe, ``header`` as its leading comment lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(config, sort_keys=False)
    path.write_text(text)
