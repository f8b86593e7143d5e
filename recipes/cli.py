"""The ``zoo`` command: Lightning's fit/validate/test/predict on a recipe, plus the zoo's own commands.

``zoo fit --recipe NAME`` → ``recipes/configs/NAME.yaml`` → LightningCLI (:mod:`recipes.lightning_cli`) builds
the data module, ``ImageClassifier``, callbacks and logger → ``Trainer.fit``. This module only dispatches and
turns errors into exit codes (:mod:`zoo.errors`): it imports neither torch nor Lightning, so ``zoo``,
``zoo --help``, ``zoo recipes`` and ``zoo models`` answer at once.
"""

from __future__ import annotations

import gc
import io
import os
import re
import shlex
import signal
import sys
import traceback
from importlib import import_module

from recipes.catalog import recipe_names
from zoo.errors import (
    EXIT_BUG,
    EXIT_MACHINE_FAULT,
    EXIT_SIGINT,
    EXIT_SIGPIPE,
    EXIT_SIGTERM,
    EXIT_USER,
    ZooError,
    did_you_mean,
    error_chain,
    fault_error,
    machine_fault,
)

# zoo's own commands: name -> module with main(argv) -> exit code
COMMANDS = {
    "recipes": "recipes.commands.recipes",
    "models": "recipes.commands.models",
    "summary": "recipes.commands.summary",
    "schedule": "recipes.commands.schedule",
    "ensemble": "recipes.commands.ensemble",
    "export": "recipes.commands.export",
    "data": "recipes.commands.data",
    "check-data": "recipes.commands.check_data",
    "lr-find": "recipes.commands.lr_find",
    "tune": "recipes.commands.tune",
}


def usage() -> str:
    return f"""usage: zoo COMMAND [options] [--debug]

Train and evaluate (Lightning; `zoo COMMAND --help` lists every option):
  fit        train a recipe:  zoo fit --recipe digits [--section.key value ...]
  validate   evaluate a checkpoint on the validation split:  zoo validate --recipe digits --ckpt_path PATH
  test       evaluate a checkpoint on the test split
  predict    predict with a checkpoint and write a CSV

The zoo's own commands:
  recipes    list the shipped recipes
  models     list the zoo's models (and timm models matching a pattern)
  summary    per-layer output shapes, parameters and MACs of a model
  schedule   draw a recipe's learning-rate schedule without training
  ensemble   evaluate the averaged predictions of several checkpoints
  export     write a checkpoint as ONNX or a torch.export program, with its preprocessing and classes
  check-data what training on a folder of images would read (counts, skips, duplicates), without training
  data       write an image folder as streaming shards (zoo data optimize) for object stores
  lr-find    lr range test: the loss against the lr, and the lr to start from
  tune       search lr, weight decay, dropout and warmup on the validation split (Optuna)

Shipped recipes: {", ".join(recipe_names())}. `--config PATH` takes a YAML of your own.
Track a run in Weights & Biases: --logger wandb [--wandb.project P --wandb.name N --wandb.group G --wandb.tags [a,b]]
(offline by itself without an API key or network; `wandb sync DIR` uploads it later).
A mistake ends in one `error:` line and exit code 2; --debug (or ZOO_DEBUG=1) shows the traceback.
Exit codes: 0 done, 1 bug, 2 user mistake, 3 diverged, 4 nothing trained, 5 the machine refused a write (disk
full, file-size limit, quota, permission, read-only), 130 Ctrl+C, 143 SIGTERM (docs/cli.md)."""


def __getattr__(name: str):
    """``recipes.cli.build_recipe`` and the other LightningCLI helpers, kept importable from here for scripts;
    they live in :mod:`recipes.lightning_cli` (imported on first use: it loads torch and Lightning)."""
    if name in (
        "ZooCLI",
        "build_recipe",
        "expand_logger",
        "expand_recipe",
        "LIGHTNING_COMMANDS",
        "make_cli",
        "run_lightning",
        "LOGGERS",
    ):
        return getattr(import_module("recipes.lightning_cli"), name)
    raise AttributeError(f"module 'recipes.cli' has no attribute {name!r}")


# --- errors -----------------------------------------------------------------------------------------------------

# exceptions of the zoo's own classes are a user's mistake in the set-up too (e.g. a data module's KeyError)
OWN_PACKAGES = ("zoo.", "callbacks.", "recipes.")
MAX_MESSAGE = 400  # characters of a library's message that are shown (--debug shows all)
TRANSLATIONS = (  # library messages for a user's value → what to do (the value is the message's last word)
    (
        "batch_size should be a positive integer value",
        "--data.batch_size {value}: this data module needs at least 1 image per device and step",
    ),
)


def _user_error_types() -> tuple[type, ...]:
    """Exception types that, raised while a run is set up, are the user's mistake (values, paths, config)."""
    import argparse
    import pickle

    types = [ZooError, ValueError, OSError, pickle.UnpicklingError, argparse.ArgumentError]
    if "yaml" in sys.modules:
        types.append(sys.modules["yaml"].YAMLError)
    if "lightning.fabric.utilities.exceptions" in sys.modules:
        types.append(sys.modules["lightning.fabric.utilities.exceptions"].MisconfigurationException)
    return tuple(types)


def user_message(err: BaseException) -> str | None:
    """The message of a user's mistake in ``err``, or None when ``err`` is a bug: the outermost ZooError, else
    the innermost exception of a user-error type (jsonargparse wraps the error of the value it could not use),
    unless it was raised after the first batch had started (then it is a bug)."""
    chain = error_chain(err)
    zoo = next((e for e in chain if isinstance(e, ZooError)), None)
    if zoo is not None:
        return str(zoo)
    if getattr(err, "zoo_during_run", False):
        return None
    types = _user_error_types()
    found = [e for e in chain if isinstance(e, types) or type(e).__module__.startswith(OWN_PACKAGES)]
    if not found:
        return None
    ours = [e for e in found if _raised_by_zoo(e)]  # the zoo's wording over a library's it wraps
    inner = (ours or found)[-1]
    message = (
        inner.strerror if isinstance(inner, OSError) and inner.filename and inner.strerror else str(inner)
    )
    if isinstance(inner, OSError) and inner.filename:
        message = f"{inner.filename!r}: {message}"
    for pattern, better in TRANSLATIONS:
        if pattern in message:
            return better.format(value=message.rstrip(". ").split("=")[-1].split()[-1])
    if not ours:  # a library's words: led by the option they are about, on one line
        message = " ".join(_parser_message(chain, message).split())
        message = message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"
    message = message.strip()
    if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":  # a KeyError's repr: 'key'
        message = message[1:-1]
    return message or type(inner).__name__


def _parser_message(chain: list[BaseException], message: str) -> str:
    """jsonargparse's error for a value, led by the option it belongs to (its nested "Parser key" parts joined),
    with a Literal's choices listed plainly and the closest one suggested."""
    keys: list[str] = []
    for err in chain:
        found = re.match(r'Parser key "([^"]+)"', str(err))
        if found and (not keys or keys[-1] != found.group(1)):
            keys.append(found.group(1))
    given = re.search(r"Expected a typing\.Literal\[.*?\]\. Got value: (\S+)", message)
    if given:  # every choice of every Literal of the option's type (a Union may hold several)
        tokens = [
            t for e in chain for group in re.findall(r"Literal\[(.*?)\]", str(e)) for t in group.split(", ")
        ]
        tokens = list(dict.fromkeys(tokens))
        hint = did_you_mean(given.group(1), [t.strip("'") for t in tokens])
        message = f"expected one of {', '.join(tokens)}. Got value: {given.group(1)}{hint}"
    return f"--{'.'.join(keys)}: {message}" if keys else message


def _raised_by_zoo(err: BaseException) -> bool:
    """Whether ``err`` was raised by the zoo's own code (``zoo``, ``callbacks``, ``recipes``), not a library's."""
    import importlib.util

    roots = []
    for package in ("zoo", "callbacks", "recipes"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            roots.append(os.path.dirname(spec.origin) + os.sep)
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.startswith(tuple(roots))


def _one(message: str) -> str:
    message = message.strip()
    return message if message.startswith("error:") else f"error: {message}"


def resume_command(argv: list[str]) -> str:
    """``zoo fit ... --ckpt_path last``: the command that continues the run ``argv`` was."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            out.append(arg)
    return shlex.join(["zoo", *out, "--ckpt_path", "last"])


def _stopped(err: BaseException, chain: list[BaseException], argv: list[str]) -> int | None:
    """A run stopped by SIGTERM or Ctrl+C: one line saying where and what was saved, the resume command; the
    exit code (None when ``err`` is no stop). Lightning ends a run interrupted at once (a second Ctrl+C) with
    ``SystemExit(1)`` raised while handling the ``KeyboardInterrupt``: that is Ctrl+C too, not a failure."""
    tagged = next((e for e in chain if getattr(e, "zoo_signal", None) is not None), None)
    sigterm = next((e for e in chain if type(e).__name__ == "SIGTERMException"), None)
    if tagged is None and sigterm is None and not any(isinstance(e, KeyboardInterrupt) for e in chain):
        return None
    stop = tagged or sigterm or err
    signum = getattr(stop, "zoo_signal", None) or (signal.SIGTERM if sigterm is not None else signal.SIGINT)
    if getattr(stop, "zoo_rank", 0) == 0:  # one message for a DDP run, not one per process
        name = signal.Signals(signum).name + (
            " (Ctrl+C)" if signum == signal.SIGINT and tagged is None else ""
        )
        where = f" at epoch {stop.zoo_epoch}, step {stop.zoo_step}" if hasattr(stop, "zoo_step") else ""
        saved, kept = getattr(stop, "zoo_checkpoint", None), getattr(stop, "zoo_kept", None)
        said = ""
        if saved:
            said = f"; saved {saved}"
        elif kept:
            said = f"; nothing saved at the signal: {kept} is as it was"
        print(f"stopped by {name}{where}{said}", file=sys.stderr)
        if (saved or kept) and argv and argv[0] == "fit":
            print(f"resume with: {resume_command(argv)}", file=sys.stderr)
    return EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM


def _fault_path(fault: OSError) -> str | None:
    """The file a machine fault was about: the error's own, else an open file of the frame that raised it."""
    if fault.filename:
        return str(fault.filename)
    tb = fault.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            name = getattr(value, "name", None) or getattr(value, "path", None)
            if isinstance(value, io.IOBase) and isinstance(name, str):
                return name
    return None


def report(err: BaseException, argv: list[str], debug: bool) -> int:
    """Print what went wrong in one or two lines (a traceback too for bugs, or with ``debug``); the exit code."""
    chain = error_chain(err)
    stopped = _stopped(err, chain, argv)
    if stopped is not None:
        return stopped
    if isinstance(err, SystemExit):
        if isinstance(err.code, str):  # an error raised as SystemExit("error: ...")
            print(_one(err.code), file=sys.stderr)
            return EXIT_USER
        return err.code or 0
    if debug:
        traceback.print_exception(err)
    fault = machine_fault(err)
    if fault is not None and not any(isinstance(e, ZooError) for e in chain):  # never a bug, even mid-run
        print(_one(str(fault_error(_fault_path(fault), fault))), file=sys.stderr)
        return EXIT_MACHINE_FAULT
    message = user_message(err)
    if message is not None:
        print(_one(message + getattr(err, "zoo_hint", "")), file=sys.stderr)
        import argparse

        if any(isinstance(e, argparse.ArgumentError) for e in chain) and argv:
            print(f"`zoo {argv[0]} --help` lists every option", file=sys.stderr)
        return getattr(err, "exit_code", EXIT_USER) if isinstance(err, ZooError) else EXIT_USER
    if not debug:
        traceback.print_exception(err)
    print(
        f"error: {type(err).__name__} above is a bug in lightning-zoo or a library it uses, not a mistake of yours: "
        "please report it with the command you ran and this traceback",
        file=sys.stderr,
    )
    return EXIT_BUG


# --- dispatch ---------------------------------------------------------------------------------------------------


_FREEZE_IMPORTS = False  # set by entry(): this process is the zoo command's own


def load(name: str):
    """``import_module(name)``; in the ``zoo`` process (:func:`entry`), with the cycle collector off during the
    import and what it allocated frozen after it (``gc.freeze``). Importing torch, timm and Lightning makes ~1M
    objects that live to the end; every full collection during the import scans all made so far (7 of them,
    0.6 s on a 2-core machine), and every one after it scans them again (0.2 s at the first validation)."""
    if not _FREEZE_IMPORTS:
        return import_module(name)  # a Python caller's process: its objects are its own business
    gc.disable()
    try:
        return import_module(name)
    finally:
        gc.freeze()
        gc.enable()


def run(argv: list[str]) -> int:
    """Run one command; errors propagate (see :func:`main`)."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in COMMANDS:
        return load(COMMANDS[argv[0]]).main(argv[1:]) or 0
    lightning = load("recipes.lightning_cli")  # Lightning's commands, and the list of them
    if argv[0] in lightning.LIGHTNING_COMMANDS:
        lightning.run_lightning(argv)
        return 0
    commands = [*lightning.LIGHTNING_COMMANDS, *COMMANDS]
    raise ZooError(
        f"unknown command {argv[0]!r}{did_you_mean(argv[0], commands)}; the commands: {', '.join(commands)} "
        "(zoo --help)"
    )


def main(argv: list[str] | None = None) -> int:
    """The ``zoo`` entry point: the command's exit code when it returns one (0: done); when it fails, what went
    wrong is printed (:func:`report`) and ``SystemExit`` carries the exit code (see :mod:`zoo.errors`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("ZOO_DEBUG", "").lower() in ("1", "true", "yes")
    argv = [a for a in argv if a != "--debug"]
    if debug:
        os.environ["ZOO_DEBUG"] = "1"  # DDP's processes re-run the command without --debug
    try:
        return run(argv)
    except BrokenPipeError:  # the reader stopped (`zoo models resnet | head`): quiet, as shell tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the final flush must not fail again
        code = EXIT_SIGPIPE
    except BaseException as err:  # noqa: BLE001 - the one place where every error becomes an exit code
        code = report(err, argv, debug)
    raise SystemExit(code)


def entry() -> int:
    """The ``zoo`` console script: :func:`main` with the command's imports frozen (:func:`load`), then a fast
    exit. After the command, the interpreter's shutdown would run the cycle collector over every object torch,
    timm and Lightning created (about 1 s on a 2-core machine, each command); ``gc.freeze`` takes them out of its
    reach. Files, threads and atexit handlers close as usual; only cyclic garbage is left to the operating
    system, which frees the process."""
    global _FREEZE_IMPORTS
    _FREEZE_IMPORTS = True
    try:
        return main()
    finally:
        # the command has ended: a late Ctrl+C (the second of two quick presses) must not turn its exit code into
        # a death by SIGINT while the interpreter shuts down, which puts the default handler back
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        gc.freeze()


if __name__ == "__main__":
    sys.exit(entry())
