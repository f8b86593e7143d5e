"""A few steps into a run, one line says how long the whole run will take: the steps and validations left."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from conftest import FAST_TRAINER

from callbacks.run_length import RunLength, _span


def test_a_run_says_its_length_once_after_its_first_steps(zoo_cli, caplog):
    with caplog.at_level("INFO"):
        assert zoo_cli("fit", "--recipe", "digits", "--trainer.max_epochs", "2", *FAST_TRAINER) == 0
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Run length: ")]
    assert len(said) == 1, said
    # said at the end of step 6 (5 steps timed after the first), with both epochs' validations still ahead
    match = re.fullmatch(
        r"Run length: about (.+) more \((\d+) steps at ([0-9.]+) s, 2 validations of ~(.+)\), until ~\d\d:\d\d\.",
        said[0],
    )
    assert match, said[0]
    (last,) = Path("runs/digits").glob("version_*/checkpoints/last.ckpt")
    assert int(match.group(2)) == torch.load(last, weights_only=True)["global_step"] - 6
    assert float(match.group(3)) > 0 and match.group(4) != "0.0 s"


def test_spans_read_as_a_person_says_them():
    assert [_span(s) for s in (0.42, 12.4, 59.6, 200, 7300)] == [
        "0.4 s",
        "12 s",
        "1 min 00 s",
        "3 min 20 s",
        "2 h 01 min",
    ]
    assert RunLength(after=0).after == 0  # no line at all
