"""Ctrl-C / SIGTERM while Optuna stores a finished trial: the trial is kept, the command exits 130."""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

import optuna
import pytest

from geostudy.cli import EXIT_INTERRUPTED, study_main
from geostudy.study import interrupts
from geostudy.study.fast_storage import FastStorage
from tests.conftest import toy_study


@pytest.fixture
def own_signal_handlers():
    """The CLI installs process-wide handlers; give the test process its own back afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    saved_hook = sys.unraisablehook
    # A suite started with Ctrl-C ignored (a shell's background job) must still see Python's own handling.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    sys.unraisablehook = saved_hook


def test_a_held_signal_is_raised_once_on_release_or_leaving_or_dropped_for_the_error_under_way(own_signal_handlers):
    interrupts.install()
    finished = False
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        with interrupts.held():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            finished = True
    assert finished  # neither signal cut the held block short; the first one is raised
    with interrupts.held():
        with pytest.raises(KeyboardInterrupt, match="^$"):
            os.kill(os.getpid(), signal.SIGINT)
            interrupts.release()  # as the objective starts
        interrupts.hold()  # as it ends: the block's end has nothing left to raise
    with pytest.raises(ValueError):  # an error (or interrupt) already under way wins
        with interrupts.held():
            os.kill(os.getpid(), signal.SIGTERM)
            raise ValueError("the objective failed")
    with pytest.raises(KeyboardInterrupt, match="^$"):  # no hold now: Ctrl-C raises at once, as Python's own
        os.kill(os.getpid(), signal.SIGINT)


class _SignalsWhenCollected:
    """Sends a signal from its finaliser, as one can arrive while the garbage collector runs one."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        os.kill(os.getpid(), self.signum)


class _FailsWhenCollected:
    def __del__(self) -> None:
        raise ValueError("a finaliser's own error")


def test_an_interrupt_swallowed_by_a_finaliser_is_raised_at_the_next_block_end(own_signal_handlers):
    reported: list[BaseException] = []
    sys.unraisablehook = lambda unraisable: reported.append(unraisable.exc_value)  # Python's report, recorded
    interrupts.install()
    obj = _SignalsWhenCollected(signal.SIGTERM)
    del obj  # the handler raises inside __del__, where Python would report it and go on
    finished = True
    assert finished and reported == []  # ours: kept, not reported
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        with interrupts.held():  # as the runner's next step: the interrupt is not lost
            pass
    with interrupts.held():  # raised once, then gone
        pass
    _FailsWhenCollected()  # anything else a finaliser raises still goes to the report
    assert [str(e) for e in reported] == ["a finaliser's own error"]


@pytest.mark.parametrize("signum, fail", [(signal.SIGTERM, "none"), (signal.SIGINT, "none"), (signal.SIGTERM, "error")])
def test_signal_while_a_finished_trial_is_stored_keeps_it_and_exits_130(signum, fail, tmp_path, write_study, monkeypatch,
                                                                         capsys, own_signal_handlers):
    study_file = write_study(toy_study(set={"steps": 3, "fail": fail}, n_trials=3))
    out = tmp_path / "out"
    cmd = ["--study", str(study_file), "--out", str(out)]
    signalled: list[int] = []
    store = FastStorage.set_trial_state_values

    def signal_then_store(self, trial_id, state, values=None):
        # The signal arrives inside Optuna's tell, after the objective ended: the worst moment.
        if state.is_finished() and not signalled:
            signalled.append(trial_id)
            os.kill(os.getpid(), signum)
        return store(self, trial_id, state, values)

    monkeypatch.setattr(FastStorage, "set_trial_state_values", signal_then_store)
    assert study_main(cmd) == EXIT_INTERRUPTED
    stderr = capsys.readouterr().err
    assert "interrupted" in stderr and "Traceback" not in stderr
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 's' / 's.db'}")
    assert [t._trial_id for t in study.trials] == signalled  # no trial was started after the signal
    kept = study.trials[0]
    if fail == "error":  # stored as it ended, with its own reason, not as interrupted
        assert kept.state.name == "FAIL" and "RuntimeError" in kept.user_attrs["fail_reason"]
        assert "trial #0 fail (RuntimeError" in stderr  # the after-trial callbacks ran before the interrupt
        return
    assert kept.state.name == "COMPLETE" and kept.values and kept.values[0] == kept.user_attrs["metrics"]["value"]
    assert "fail_reason" not in kept.user_attrs
    assert "trial #0 complete value=" in stderr
    assert study_main([*cmd, "--no-progress"]) == 0  # resuming finishes the study
    assert Counter(t.state.name for t in study.trials) == {"COMPLETE": 3}


def test_signal_while_optuna_creates_the_trial_fails_it_as_interrupted(tmp_path, write_study, monkeypatch, capsys,
                                                                       own_signal_handlers):
    study_file = write_study(toy_study(n_trials=2))
    out = tmp_path / "out"
    cmd = ["--study", str(study_file), "--out", str(out), "--no-progress"]
    created: list[int] = []
    create = FastStorage.create_new_trial

    def create_then_signal(self, study_id, template_trial=None):
        trial_id = create(self, study_id, template_trial)
        if not created:  # inside study.ask: the trial is RUNNING, the objective not started yet
            created.append(trial_id)
            os.kill(os.getpid(), signal.SIGTERM)
        return trial_id

    monkeypatch.setattr(FastStorage, "create_new_trial", create_then_signal)
    assert study_main(cmd) == EXIT_INTERRUPTED
    assert "Traceback" not in capsys.readouterr().err
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 's' / 's.db'}")
    [trial] = study.trials
    assert trial._trial_id == created[0] and trial.state.name == "FAIL"
    # The signal held while Optuna created the trial is raised as the objective starts: the reason still
    # names it, as for a signal during the run (tests/test_parallel.py's SIGTERM test once saw it without).
    assert trial.user_attrs["fail_reason"] == "interrupted (signal 15); the study can be resumed"
    assert study_main(cmd) == 0  # resuming finishes the study (a RUNNING one would be waited for forever)
    assert Counter(t.state.name for t in study.trials) == {"FAIL": 1, "COMPLETE": 2}


def test_a_second_ctrl_c_while_the_summary_is_written_exits_130_without_a_traceback(tmp_path, write_study, monkeypatch,
                                                                                     capsys, own_signal_handlers):
    from geostudy.study import export

    study_file = write_study(toy_study(n_trials=2))
    out = tmp_path / "out"
    cmd = ["--study", str(study_file), "--out", str(out), "--no-progress"]
    summary = export.summary_text

    def ctrl_c_then_summary(study, spec):
        os.kill(os.getpid(), signal.SIGINT)
        return summary(study, spec)

    monkeypatch.setattr(export, "summary_text", ctrl_c_then_summary)
    assert study_main(cmd) == EXIT_INTERRUPTED
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    assert f"--study {study_file} --out {out} --report" in stderr  # how to get what was cut short
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 's' / 's.db'}")
    assert Counter(t.state.name for t in study.trials) == {"COMPLETE": 2}
    monkeypatch.setattr(export, "summary_text", summary)
    assert study_main([*cmd[:4], "--report"]) == 0  # the command the line gives writes what the summary lacked
    assert (out / "s" / "trials.csv").read_text().count("\n") == 3
