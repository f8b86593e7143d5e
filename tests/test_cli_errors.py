"""Every mistake a user can make on the command line ends in one ``error:`` line naming the value and what to
do, and exit code 2, before anything trains; a bug ends in a traceback, exit 1; ``--debug`` shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_TRAINER
from lightning.pytorch import Callback
from PIL import Image
from sklearn.datasets import load_digits

from zoo.runtime.checkpoint import non_plain

TINY = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2")
TINY = (*TINY, "--trainer.limit_test_batches", "2", *FAST_TRAINER)
ZOO = str(Path(sys.executable).with_name("zoo"))


def image_folder(root: Path, per_class: dict[str, int]) -> Path:
    """Real 8×8 handwritten digits, upscaled to 16×16 RGB PNGs, ``per_class[name]`` of them in ``root/name``."""
    digits = load_digits()
    for c, (name, count) in enumerate(per_class.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(digits.target == c)[:count]:
            pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).resize((16, 16)).convert("RGB").save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory) -> Path:
    """The last.ckpt of a two-batch digits run."""
    from recipes.cli import main

    where = tmp_path_factory.mktemp("digits")
    cwd = os.getcwd()
    os.chdir(where)
    try:
        assert main(["fit", "--recipe", "digits", *TINY]) == 0
    finally:
        os.chdir(cwd)
    return where / "runs/digits/version_0/checkpoints/last.ckpt"


def error_of(zoo_cli, capsys, *args, code: int = 2) -> str:
    """The command's one ``error:`` line, at the end of stderr; no traceback; exit ``code``."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        zoo_cli(*args)
    err = capsys.readouterr().err
    assert done.value.code == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-2:]  # the error, and for an option's mistake where to read the options
    line = next(x for x in last if x.startswith("error: "))
    assert last[-1] in (line, f"`zoo {args[0]} --help` lists every option")
    return line


def test_negative_lr(zoo_cli, capsys):
    line = error_of(zoo_cli, capsys, "fit", "--recipe", "digits", "--model.optimizer.lr", "-1", *TINY)
    assert line == "error: optimizer.lr=-1.0 must be a positive finite number"
    assert not Path("runs").exists()  # stopped before the trainer made a folder


def test_bad_type_and_choice_name_the_option(zoo_cli, capsys):
    line = error_of(zoo_cli, capsys, "fit", "--recipe", "digits", "--data.init_args.batch_size", "abc")
    assert line == "error: --data.batch_size: Expected a <class 'int'>. Got value: abc"
    line = error_of(zoo_cli, capsys, "fit", "--recipe", "digits", "--model.optimizer.name", "adamm")
    assert line.startswith("error: --model.optimizer.name: expected one of 'sgd'")
    assert line.endswith("Got value: adamm (did you mean 'adam' or 'adamw'?)")


def test_a_trainer_value_lightning_refuses(zoo_cli, capsys):
    line = error_of(zoo_cli, capsys, "fit", "--recipe", "digits", "--trainer.devices", "abc")
    assert line == "error: --trainer: `devices` selected with `CPUAccelerator` should be an int > 0."


def test_unknown_option_is_one_line_not_a_page_of_usage(zoo_cli, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        zoo_cli("fit", "--recipe", "digits", "--model.no_such_option", "3")
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2
    assert err == [
        "error: unrecognized arguments: --model.no_such_option 3",
        "`zoo fit --help` lists every option",
    ]


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        (("--model.optimzer.lr", "0.05"), "'--model.optimizer.lr'"),  # a misspelt group keeps the rest
        (("--trainer.max_epochz", "3"), "'--trainer.max_epochs' or '--trainer.min_epochs'"),
        (("--chkpt_path", "last"), "'--ckpt_path'"),
    ],
)
def test_a_mistyped_option_gets_a_did_you_mean(zoo_cli, capsys, given, meant):
    line = error_of(zoo_cli, capsys, "fit", "--recipe", "digits", *given)
    assert line == f"error: unrecognized arguments: {' '.join(given)} (did you mean {meant}?)"


def test_a_mistyped_init_argument_gets_a_did_you_mean(zoo_cli, capsys):
    line = error_of(zoo_cli, capsys, "fit", "--recipe", "digits", "--data.init_args.batchsize", "32")
    assert line == "error: --data: Option 'batchsize' is not accepted (did you mean 'batch_size'?)"


def test_missing_data_root(zoo_cli, capsys):
    line = error_of(zoo_cli, capsys, "fit", "--recipe", "folder", *TINY)
    assert "give --data.root (a folder with one sub-folder per class)" in line


def test_empty_class_folder(zoo_cli, capsys, tmp_path):
    root = image_folder(tmp_path / "photos", {"zero": 6, "one": 6})
    (root / "two").mkdir()
    line = error_of(zoo_cli, capsys, "fit", "--recipe", "folder", "--data.root", root, *TINY)
    assert f"class folder '{root / 'two'}' holds no readable images" in line


def test_one_image_class_folder_is_a_clear_error_or_trains(zoo_cli, capsys, tmp_path):
    root = image_folder(tmp_path / "photos", {"zero": 6, "one": 6, "two": 1})
    capsys.readouterr()
    try:
        code = zoo_cli(
            "fit", "--recipe", "folder", "--data.root", root, "--data.init_args.num_workers", "0", *TINY
        )
    except SystemExit as done:
        code = done.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code != 0:  # not enough images to split: the message names the class and what to do
        assert code == 2
        line = err.strip().splitlines()[-1]
        assert line.startswith("error: ") and "'two'" in line and "--data.val_fraction" in line


def test_batch_size_zero_on_a_folder(zoo_cli, capsys, tmp_path):
    root = image_folder(tmp_path / "photos", {"zero": 6, "one": 6})
    args = ("fit", "--recipe", "folder", "--data.root", root, "--data.init_args.batch_size", "0", *TINY)
    line = error_of(zoo_cli, capsys, *args)
    assert "batch_size" in line and "0" in line and "≥ 1" in line


@pytest.mark.parametrize(("command", "split"), [("validate", "val"), ("test", "test")])
def test_a_digits_split_set_to_nothing_names_its_option(zoo_cli, capsys, digits_ckpt, command, split):
    args = (command, "--recipe", "digits", f"--data.{split}_fraction", "0", "--ckpt_path", digits_ckpt, *TINY)
    line = error_of(zoo_cli, capsys, *args)
    assert (
        line
        == f"error: --data.{split}_fraction is 0: the digits have no {split} split; give it a share above 0"
    )


def test_a_digits_fit_without_a_test_or_validation_split_trains(zoo_cli, capsys, caplog):
    assert zoo_cli("fit", "--recipe", "digits", "--data.test_fraction", "0", *TINY) == 0
    out = capsys.readouterr().out
    assert "best checkpoint" in out and "no test split" in out  # no test split: no test after fit, said so
    assert zoo_cli("fit", "--recipe", "digits", "--data.val_fraction", "0", *TINY) == 0
    assert (
        "No validation split" in caplog.text and "epoch000.ckpt" in capsys.readouterr().out
    )  # the last epoch


def test_missing_text_and_truncated_checkpoints_in_zoo_test(zoo_cli, capsys, digits_ckpt, tmp_path):
    line = error_of(zoo_cli, capsys, "test", "--recipe", "digits", "--ckpt_path", "nowhere.ckpt", *TINY)
    assert line == "error: checkpoint 'nowhere.ckpt' does not exist; check the path"
    Path("notes.ckpt").write_text(
        "hello\n"
    )  # torch alone says `KeyError: 101` or `IndexError: pop from empty list`
    line = error_of(zoo_cli, capsys, "test", "--recipe", "digits", "--ckpt_path", "notes.ckpt", *TINY)
    assert line == "error: cannot load checkpoint 'notes.ckpt': not a torch checkpoint, or truncated"
    data = digits_ckpt.read_bytes()
    Path("half.ckpt").write_bytes(data[: len(data) // 2])
    line = error_of(zoo_cli, capsys, "test", "--recipe", "digits", "--ckpt_path", "half.ckpt", *TINY)
    assert line.startswith("error: cannot load checkpoint 'half.ckpt': truncated or damaged")


def test_checkpoint_of_another_model_in_zoo_test(zoo_cli, capsys, tmp_path):
    root = image_folder(tmp_path / "photos", {"zero": 12, "one": 12, "two": 12})
    args = ("--recipe", "folder", "--data.root", root, "--data.init_args.num_workers", "0")
    assert zoo_cli("fit", *args, "--test_after_fit", "false", *TINY) == 0
    ckpt = "runs/folder/version_0/checkpoints/last.ckpt"
    line = error_of(zoo_cli, capsys, "test", "--recipe", "digits", "--ckpt_path", ckpt, *TINY)
    assert line.startswith(f"error: {ckpt}: the checkpoint does not fit the model")
    assert "model.fc.weight (checkpoint (3, 128), model (10, 128))" in line
    assert "Use it with the recipe and data it was trained with" in line


def test_default_root_dir_that_is_a_file(zoo_cli, capsys):
    Path("afile").write_text("not a folder")
    line = error_of(
        zoo_cli, capsys, "fit", "--recipe", "digits", "--trainer.default_root_dir", "afile", *TINY
    )
    assert (
        line
        == "error: --trainer.default_root_dir 'afile' is a file, not a folder; give a folder (it is created if missing)"
    )


def test_a_run_that_would_train_nothing(zoo_cli, capsys):
    args = ("fit", "--recipe", "digits", *FAST_TRAINER, "--trainer.max_epochs", "0")
    line = error_of(zoo_cli, capsys, *args)
    assert line.startswith("error: --trainer.max_epochs 0: this run would train nothing")
    assert not Path("runs").exists()


def test_yaml_error_names_the_file_and_line(zoo_cli, capsys, tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("model:\n  arch: [convnet\ndata: {}\n")
    line = error_of(zoo_cli, capsys, "fit", "--recipe", "digits", "--config", bad)
    assert line.startswith(f"error: {bad}: not valid YAML at line 3")
    line = error_of(zoo_cli, capsys, "fit", "--config", tmp_path / "absent.yaml")
    assert (
        line
        == f"error: --config '{tmp_path / 'absent.yaml'}': no such file; give the path of a YAML recipe (or --recipe NAME)"
    )


def test_unknown_command_and_recipe(zoo_cli, capsys):
    assert "unknown command 'fitt'" in error_of(zoo_cli, capsys, "fitt")
    assert "unknown recipe 'digitz' (did you mean 'digits'?)" in error_of(
        zoo_cli, capsys, "fit", "--recipe", "digitz"
    )


class Payload:
    """A pickle that runs a shell command when unpickled without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("command", ["fit", "test", "predict"])
def test_pickled_checkpoint_is_refused_and_runs_no_code(zoo_cli, capsys, digits_ckpt, tmp_path, command):
    ckpt = torch.load(digits_ckpt, weights_only=True)
    marker = tmp_path / "code-ran"
    ckpt["payload"] = Payload(marker)
    torch.save(ckpt, "evil.ckpt")
    line = error_of(zoo_cli, capsys, command, "--recipe", "digits", "--ckpt_path", "evil.ckpt", *TINY)
    assert line == (
        "error: cannot load checkpoint 'evil.ckpt' with weights_only=True: it holds pickled Python objects "
        "(posix.system), which could run code when loaded; nothing was run. Pass --weights_only false only if "
        "you trust the file"
    )
    assert not marker.exists()


def test_zoo_checkpoints_hold_plain_types_and_load_with_weights_only_false_too(zoo_cli, digits_ckpt):
    ckpt = torch.load(digits_ckpt, map_location="cpu", weights_only=False)
    assert non_plain(ckpt) == []  # so weights_only=True loads every zoo checkpoint
    for weights_only in ("true", "false"):
        args = ("test", "--recipe", "digits", "--ckpt_path", digits_ckpt, "--weights_only", weights_only)
        assert zoo_cli(*args, *TINY) == 0


class KeepsAPath(Callback):
    def __init__(self, folder: Path):
        self.folder = folder

    def state_dict(self):
        return {"folder": self.folder, "files": [self.folder / "a"]}


def test_paths_in_a_checkpoint_are_saved_as_strings(tmp_path):
    """A callback or data module that keeps a ``pathlib`` path in its state still writes a weights-only file."""
    from recipes.lightning_cli import build_recipe, expand_recipe

    cli = build_recipe(expand_recipe(["--recipe", "digits", *TINY]))  # the same trainer set-up as `zoo fit`
    cli.trainer.callbacks.append(KeepsAPath(tmp_path))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.trainer.save_checkpoint(tmp_path / "with_path.ckpt")
    saved = torch.load(tmp_path / "with_path.ckpt", weights_only=True)
    assert saved["callbacks"][KeepsAPath.__qualname__] == {
        "folder": str(tmp_path),
        "files": [str(tmp_path / "a")],
    }


def run_zoo(*args: str, cwd: Path, env: dict | None = None, prefix=()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, ZOO, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_read_only_working_folder(read_only_folder, unprivileged):
    work = read_only_folder
    prefix = unprivileged
    done = run_zoo("fit", "--recipe", "digits", *TINY, cwd=work, prefix=prefix)
    assert done.returncode == 5, done.stderr  # the machine refused the write
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot write to '{work}' (--trainer.default_root_dir 'runs/digits'): permission denied; run from "
        "a folder you can write to, or point --trainer.default_root_dir and the logger's save_dir "
        "(--trainer.logger.init_args.save_dir) there"
    )


class Buggy(Callback):
    """A callback with a bug, as a user's own callback or a library might have."""

    def on_train_batch_end(self, *args):
        raise RuntimeError("a bug in a callback")


def test_a_bug_keeps_its_traceback_and_exit_1(zoo_cli, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        zoo_cli("fit", "--recipe", "digits", *TINY, f"--trainer.callbacks+={__name__}.Buggy")
    err = capsys.readouterr().err
    assert done.value.code == 1
    assert "Traceback" in err and "RuntimeError: a bug in a callback" in err
    assert err.strip().splitlines()[-1].startswith("error: RuntimeError above is a bug in lightning-zoo")


@pytest.mark.parametrize("how", ["--debug", "ZOO_DEBUG=1"])
def test_debug_shows_the_traceback_of_a_mistake_too(zoo_cli, capsys, monkeypatch, how):
    extra = [how] if how == "--debug" else []
    monkeypatch.setenv("ZOO_DEBUG", "0" if extra else "1")  # restored after the test (--debug sets it to 1)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        zoo_cli("fit", "--recipe", "digits", "--model.optimizer.lr", "-1", *extra)
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert "Traceback" in err and 'zoo/training/optim.py", line' in err
    assert err.strip().splitlines()[-1] == "error: optimizer.lr=-1.0 must be a positive finite number"


@pytest.mark.parametrize("command", ["lr-find", "tune"])
def test_lr_find_and_tune_check_their_output_can_be_written_before_any_work(
    read_only_folder, unprivileged, command
):
    prefix = unprivileged
    extra = ("--trials", "1") if command == "tune" else ()
    done = run_zoo(command, "--recipe", "digits", *extra, cwd=read_only_folder, prefix=prefix)
    assert done.returncode == 5, done.stderr  # was: exit 2 after the whole sweep, "No such file or directory"
    output = "runs/digits/lr_find/version_0" if command == "lr-find" else "runs/tune/digits"
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot write to '{read_only_folder}' (--output '{output}'): permission denied; use a folder you "
        "may write to, or change its permissions"
    )
    assert "lr range test" not in done.stdout + done.stderr and "trial" not in done.stdout  # nothing ran


def test_a_message_that_names_a_path_keeps_both_its_quotes():
    from recipes.cli import user_message

    err = OSError(2, "No such file or directory", "runs/digits/lr_find/version_0")
    assert user_message(err) == "'runs/digits/lr_find/version_0': No such file or directory"


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (28, "no space left on the device (ENOSPC); free some space, or write elsewhere"),
        (122, "disk quota exceeded (EDQUOT); free some of your quota, or write elsewhere"),
        (30, "read-only file system (EROFS); write to a writable file system"),
    ],
)
def test_a_machine_fault_is_one_line_naming_the_file_and_exit_5(capsys, code, cause):
    from recipes.cli import report

    try:
        try:
            raise OSError(code, os.strerror(code), "runs/digits/version_0/metrics.csv")
        except OSError as err:
            raise RuntimeError("a library's own words for it") from err
    except RuntimeError as err:
        assert report(err, ["fit"], debug=False) == 5
    assert capsys.readouterr().err == f"error: 'runs/digits/version_0/metrics.csv': {cause}\n"


def test_a_raw_pickle_checkpoint_is_one_line_without_torch_warnings(tmp_path, digits_ckpt):
    import pickle

    raw = tmp_path / "raw.ckpt"
    raw.write_bytes(pickle.dumps(torch.load(digits_ckpt, weights_only=True)))
    done = run_zoo("test", "--recipe", "digits", "--ckpt_path", raw, cwd=tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1]
        == f"error: cannot load checkpoint '{raw}': not a torch checkpoint, or damaged"
    )
    assert "Warning" not in done.stderr  # torch's note on the pickle protocol was printed before
