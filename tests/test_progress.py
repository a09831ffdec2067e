"""Progress lines: on a terminal only, erased when done, never in pipes or with --quiet."""

from __future__ import annotations

import io

import pytest

from shadowlab.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_draws_steps_on_a_terminal_and_erases_the_line() -> None:
    out = _Tty()
    with Progress(4, label="gate", stream=out) as progress:
        progress("enough_data")
        progress("trigger_parity")
        drawn = out.getvalue()
    assert "gate [" in drawn and "1/4 enough_data" in drawn and "2/4 trigger_parity" in drawn
    # Step 2 starts with one of four steps done: 5 of 20 cells filled.
    assert "[#####...............] 2/4" in drawn
    assert out.getvalue().endswith("\r")  # the last line was blanked out


def test_silent_when_not_a_terminal_or_disabled() -> None:
    pipe = io.StringIO()
    with Progress(3, stream=pipe) as progress:
        progress("a")
    assert pipe.getvalue() == ""
    tty = _Tty()
    with Progress(3, stream=tty, enabled=False) as progress:
        progress("a")
    assert tty.getvalue() == ""


def test_more_steps_than_announced_stay_within_total() -> None:
    out = _Tty()
    progress = Progress(1, stream=out)
    progress("a")
    progress("b")
    assert progress.done == 1 and "1/1 b" in out.getvalue()


def test_total_must_be_positive() -> None:
    with pytest.raises(ValueError, match="'total' parameter of Progress must be an int >= 1"):
        Progress(0)


def test_run_gate_reports_each_step() -> None:
    import numpy as np
    from conftest import make_pairs

    from shadowlab.gate import CHECKS, run_gate

    rng = np.random.default_rng(1)
    p = rng.beta(1, 20, 2000)
    steps: list[str] = []
    run_gate(make_pairs(p, p), primary_threshold=0.1, progress=steps.append)
    assert steps == ["counting", "threshold", *CHECKS]
