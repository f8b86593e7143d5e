"""Subnormal floats are flushed to zero while the zoo's trainer runs (``callbacks.denormals``), in every intra-op
thread of a ``zoo`` command, and ``--denormals.flush false`` keeps IEEE arithmetic."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from callbacks.denormals import FlushDenormals, denormal_mode, flush_denormals, flushing
from zoo.data import SyntheticDataModule
from zoo.training.module import ImageClassifier

ROOT = Path(__file__).resolve().parents[1]
SUBNORMAL = 1e-40
# torch answers whether this CPU has the mode (x86 with SSE3); turning it off is the default state
pytestmark = pytest.mark.skipif(
    not torch.set_flush_denormal(False), reason="this CPU cannot flush subnormals"
)


class ModeSeen(Callback):
    """The mode in the training thread at each training step, and a subnormal product computed there."""

    def __init__(self):
        self.modes, self.products = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.modes.append(flushing())
        self.products.append((torch.tensor(1e-30) * (SUBNORMAL / 1e-30)).item())


def fit(*callbacks) -> ModeSeen:
    seen = ModeSeen()
    data = SyntheticDataModule(image_size=8, train_size=16, val_size=8, test_size=0, batch_size=8)
    model = ImageClassifier(arch="convnet", num_classes=10, model_kwargs={"widths": [4], "depth": 1})
    trainer = Trainer(max_epochs=1, callbacks=[*callbacks, seen], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(model, datamodule=data)
    return seen


def test_flushing_reads_the_mode_and_flush_denormals_returns_the_previous_one():
    assert flush_denormals(False) in (True, False)
    assert not flushing()
    assert (torch.tensor(1e-30) * (SUBNORMAL / 1e-30)).item() != 0.0  # IEEE: a subnormal result
    assert flush_denormals(True) is False
    assert flushing()
    assert (torch.tensor(1e-30) * (SUBNORMAL / 1e-30)).item() == 0.0
    assert flush_denormals(False) is True
    assert not flushing()


def test_denormal_mode_sets_or_keeps_the_mode_inside_and_gives_the_previous_one_back():
    flush_denormals(False)
    with denormal_mode(True):
        assert flushing()
    assert not flushing()
    with denormal_mode():  # None: left as it is, and restored whatever the block sets
        assert not flushing()
        flush_denormals(True)
    assert not flushing()


def test_the_callback_flushes_during_the_fit_and_gives_the_mode_back():
    flush_denormals(False)
    seen = fit(FlushDenormals())
    assert seen.modes == [True, True] and seen.products == [0.0, 0.0]
    assert not flushing()  # as before the fit


def test_flush_false_and_no_callback_keep_subnormals():
    flush_denormals(False)
    for callbacks in ([FlushDenormals(flush=False)], []):
        seen = fit(*callbacks)
        assert seen.modes == [False, False]
        assert all(p != 0.0 for p in seen.products)


def test_the_recipes_have_the_callback_on_and_the_option_turns_it_off():
    from recipes.lightning_cli import build_recipe, expand_recipe

    flush_denormals(False)
    cli = build_recipe(expand_recipe(["--recipe", "synthetic"]))
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, FlushDenormals)]
    assert callback.flush and flushing()  # on already: set before the model was built
    flush_denormals(False)
    cli = build_recipe(expand_recipe(["--recipe", "synthetic", "--denormals.flush", "false"]))
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, FlushDenormals)]
    assert not callback.flush and not flushing()


CHECK_THREADS = """
import sys, torch
torch.set_num_threads(2)
from recipes.lightning_cli import build_recipe, expand_recipe
build_recipe(expand_recipe(["--recipe", "synthetic", "--model.arch", "resnet18", "--model.model_kwargs", "{}", *sys.argv[1:]]))
x = torch.full((1 << 20,), 1e-30) * 1e-10  # split between the 2 intra-op threads
print(int((x != 0).sum()))
"""


def run_threads(*args: str) -> int:
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    code = textwrap.dedent(CHECK_THREADS)
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


def test_every_intra_op_thread_of_a_recipe_flushes():
    # set before the model is built, the mode reaches the thread pool that building it starts; set only in the
    # callback's setup (later), half of this product would stay subnormal
    assert run_threads() == 0
    assert run_threads("--denormals.flush", "false") == 1 << 20
