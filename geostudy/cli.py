"""Command lines of ``run.py`` and ``optuna_hyper.py``.

Every :class:`~geostudy.errors.GeostudyError` becomes one line on stderr and exit code 2; a
traceback means a bug in geostudy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from geostudy.config import apply_overrides, dump_yaml, load_yaml, parse_set
from geostudy.errors import ConfigError, GeostudyError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
STORAGE_ENV = "GEOSTUDY_STORAGE"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with a pointer to --help) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message}; see {self.prog} --help", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, but got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, but got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, but got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, but got {text!r}")
    return value


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted path, e.g. --set optim.lr=0.01 model.hidden=64")


def _guarded(main: Callable[[], int]) -> int:
    try:
        return main()
    except GeostudyError as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        return EXIT_USAGE


# --------------------------------------------------------------------------------------------------
# run.py


def run_main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="run.py", description="One training/evaluation run of a learner.")
    parser.add_argument("--config", required=True, help="config YAML (configs/<learner>.yaml or a best_config.yaml)")
    _add_set(parser)
    parser.add_argument("--out", help="output folder (default: out/runs/<config>-<time>)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    return _guarded(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    import time

    from geostudy.learners import RunContext, get_learner
    from geostudy.study import interrupts
    from geostudy.study.artifacts import json_safe, save_figures
    from geostudy.study.objective import library_versions

    config_file = Path(args.config)
    config = load_yaml(config_file)
    learner = get_learner(config.get("learner"), file=config_file)
    config = learner.with_defaults(config)  # --set reaches every documented key, not only the file's
    config = apply_overrides(config, parse_set(args.overrides), source="--set")
    learner.check_config(config, file=config_file)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out) if args.out else Path("out") / "runs" / f"{config_file.stem}-{stamp}"
    check_out_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_yaml(config, out_dir / "config.yaml")

    def log_step(step: int, metrics: Any) -> None:
        pass  # the learner's own progress lines (ctx.log) already show each epoch

    interrupts.install()  # SIGTERM (a scheduler ending the job) is handled like Ctrl-C
    start = time.perf_counter()
    result = learner.run(config, RunContext(workdir=out_dir, report=log_step, final=True, verbose=not args.quiet))
    result.metrics["run_seconds"] = time.perf_counter() - start
    figures = save_figures(result, out_dir / "figures")
    record = {
        "learner": learner.name,
        "metrics": {k: float(v) for k, v in result.metrics.items()},
        "tables": json_safe(result.tables),
        "figures": {k: str(v) for k, v in figures.items()},
        "files": {k: str(v) for k, v in result.files.items()},
        "versions": library_versions(),
    }
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(format_metrics(result.metrics))
    print(f"\nwrote {out_dir}/config.yaml, metrics.json, {len(figures)} figure(s) in figures/"
          + (f", {len(result.files)} file(s)" if result.files else ""))
    return 0


def check_out_dir(path: Path, option: str = "--out") -> None:
    """Raise :class:`ConfigError` (one line naming ``path``) unless ``path`` is, or can become, a folder.

    Checked before anything is written: an existing file, a file where a parent folder should be,
    or a parent we may not write into would otherwise end in a traceback half-way through.
    """
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is a file" if probe == path else f"cannot be created: {probe} is a file"
        raise ConfigError(f"output folder {path} {what}; give a folder path", file=option)
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder {path} is not writable: no write permission in {probe}", file=option)


def format_metrics(metrics: dict[str, float]) -> str:
    width = max((len(k) for k in metrics), default=6)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 12}"]
    lines += [f"{name:<{width}}  {value:.6g}" for name, value in metrics.items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# optuna_hyper.py


def study_main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="optuna_hyper.py", description="Run (or resume) an Optuna study declared in studies/*.yaml.")
    parser.add_argument("--study", required=True, help="study name (studies/NAME.yaml) or path to a study file")
    parser.add_argument("--n-trials", type=_positive_int, help="total finished trials the study should hold")
    parser.add_argument("--timeout", type=_positive_float, help="stop starting new trials after this many seconds")
    parser.add_argument("--storage", help="database URL (default: sqlite:///<out>/<study>/<study>.db)")
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    _add_set(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or per-trial lines")
    parser.add_argument("--no-catch", action="store_true", help="stop at the first failing trial (debugging)")
    parser.add_argument("--jobs", type=_positive_int, default=1,
                        help="worker processes on this machine sharing the study's storage (default 1)")
    parser.add_argument("--no-wait", action="store_true",
                        help="with nothing left to start, end at once instead of waiting for other workers' running trials")
    # A --jobs child, numbered 1..jobs-1: no summary, and its seeded sampler is offset by its number.
    parser.add_argument("--worker", type=_positive_int, help=argparse.SUPPRESS)
    review = parser.add_argument_group("review a stored study (no new trials are run)")
    review.add_argument("--copy-to", metavar="URL",
                        help="copy the study from --storage to another storage, e.g. sqlite:///out/S/S.db")
    review.add_argument("--report", action="store_true", help="write <out>/<study>/report.html and trials.csv")
    review.add_argument("--dashboard", action="store_true", help="serve optuna-dashboard on the study and its artifacts")
    review.add_argument("--host", default="127.0.0.1", help="dashboard host (default 127.0.0.1)")
    review.add_argument("--port", type=_positive_int, default=8080, help="dashboard port (default 8080)")
    args = parser.parse_args(argv)
    return _guarded(lambda: _study(args))


def _study(args: argparse.Namespace) -> int:
    from geostudy.study import interrupts
    from geostudy.study.export import display_path
    from geostudy.study.runner import FailureGuard, StudyPlan, finished_count, load_or_create, optimize
    from geostudy.study.spec import parse_study, resolve_study_path
    from geostudy.study.storage import check_url, default_storage_url, redact

    spec = parse_study(resolve_study_path(args.study), parse_set(args.overrides))
    n_trials = args.n_trials if args.n_trials is not None else spec.n_trials
    timeout = args.timeout if args.timeout is not None else spec.timeout
    if n_trials is None and timeout is None:
        raise ConfigError("the study needs an end: set n_trials or timeout in the file, or pass --n-trials/--timeout",
                          file=spec.file, key="n_trials")
    out_dir = Path(args.out)
    check_out_dir(out_dir)
    # A --jobs child gets the URL through the environment: a password never shows in `ps`.
    storage_url = args.storage or os.environ.get(STORAGE_ENV) or default_storage_url(out_dir, spec.name)
    if args.storage:
        check_url(storage_url)  # before anything is created; the default folder is made below
    plan = StudyPlan(spec=spec, storage_url=storage_url, out_dir=out_dir, n_trials=n_trials, timeout=timeout)
    if args.report or args.dashboard or args.copy_to:
        return _review(args, plan)
    plan.study_dir.mkdir(parents=True, exist_ok=True)
    _log_to_file(plan.study_dir / f"{spec.name}.log")
    study = load_or_create(plan, worker=args.worker or 0)
    done = finished_count(study)
    target = f"{n_trials} finished trials" if n_trials else f"{timeout:.0f} s"
    print(f"study {spec.name}: learner {spec.learner.name}, sampler {spec.sampler.name}, pruner {spec.pruner.name}; "
          f"storage {redact(storage_url)}; target {target}; {done} already finished", file=sys.stderr, flush=True)
    interrupts.install()  # SIGTERM (a scheduler ending the job) is handled like Ctrl-C
    if args.worker:
        try:
            return 1 if optimize(plan, study, progress=False, catch=not args.no_catch, wait=not args.no_wait).tripped else 0
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        finally:
            _close(study)
    children = _start_workers(args, plan) if args.jobs > 1 else []
    interrupted = False
    guard: FailureGuard | None = None
    try:
        guard = optimize(plan, study, progress=not args.no_progress, catch=not args.no_catch, wait=not args.no_wait)
        for child in children:
            child.wait()
    except KeyboardInterrupt:
        interrupted = True
        _stop_workers(children)
    try:
        _print_outcome(study, spec, plan, storage_url)
    except KeyboardInterrupt:  # a second Ctrl-C while the summary is written: the trials are stored already
        interrupted = True
        print(f"summary cut short: python optuna_hyper.py --study {spec.file} --out {args.out} --report writes it "
              "(report.html, trials.csv)", file=sys.stderr)
    finally:
        with interrupts.dropped():  # closing flushes the storage: a further Ctrl-C must not cut that short
            _close(study)
    if interrupted:
        print("interrupted: finished trials are stored, a trial cut short is marked FAIL; run the same command again "
              "to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    if guard is not None and guard.tripped:
        print(f"error: {spec.file}: stopped after {guard.limit} failed trials in a row; see the fail_reason of the "
              f"last trials above or in {display_path(plan.study_dir / 'trials.csv')}", file=sys.stderr)
        return 1
    return 0


def _print_outcome(study: Any, spec: Any, plan: Any, storage_url: str) -> None:
    """The end of a study command: its summary, ``best_config.yaml``, ``trials.csv`` and the dashboard command."""
    from geostudy.study.export import (
        dashboard_command,
        display_path,
        summary_text,
        write_best_config,
        write_trials_csv,
    )

    print(summary_text(study, spec))
    best = write_best_config(study, spec, plan.study_dir / "best_config.yaml")
    write_trials_csv(study, spec, plan.study_dir / "trials.csv")
    if best is not None:
        print(f"Best config: {display_path(plan.study_dir / 'best_config.yaml')} "
              f"(python run.py --config {display_path(plan.study_dir / 'best_config.yaml')})")
    print(f"Trials: {display_path(plan.study_dir / 'trials.csv')}")
    print(f"Dashboard: {dashboard_command(storage_url, plan.artifacts)}")


def _close(study: Any) -> None:
    """Flush and close the study's storage: the database file is final when the command ends."""
    close = getattr(study._storage, "close", None)
    if callable(close):
        close()


def _start_workers(args: argparse.Namespace, plan: Any) -> list[subprocess.Popen]:
    """Start ``--jobs - 1`` more worker processes on the same study (this process is one too)."""
    argv = ["--study", str(plan.spec.file), "--out", str(plan.out_dir)]
    if plan.n_trials is not None:
        argv += ["--n-trials", str(plan.n_trials)]
    if plan.timeout is not None:
        argv += ["--timeout", str(plan.timeout)]
    if args.overrides:
        argv += ["--set", *args.overrides]
    if args.no_catch:
        argv.append("--no-catch")
    if args.no_wait:
        argv.append("--no-wait")
    env = {**os.environ, STORAGE_ENV: plan.storage_url}
    code = "import sys; from geostudy.cli import study_main; sys.exit(study_main(sys.argv[1:]))"
    return [subprocess.Popen([sys.executable, "-c", code, *argv, "--worker", str(i)], env=env)
            for i in range(1, args.jobs)]


def _stop_workers(children: list[subprocess.Popen]) -> None:
    """Ctrl-C reaches the children from the terminal; a SIGTERM to us must be passed on."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()


def _review(args: argparse.Namespace, plan: Any) -> int:
    """``--copy-to`` / ``--report`` / ``--dashboard``: work on a stored study without running trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from geostudy.study.export import display_path, write_trials_csv
    from geostudy.study.runner import load_existing

    study = load_existing(plan)
    if args.copy_to:
        from geostudy.study.export import dashboard_command
        from geostudy.study.storage import open_storage, redact

        target = open_storage(args.copy_to)  # checks the URL first
        if plan.spec.name in [s.study_name for s in optuna.get_all_study_summaries(target, include_best_trial=False)]:
            raise ConfigError(f"study {plan.spec.name!r} already exists in {redact(args.copy_to)}; choose another target",
                              file="--copy-to")
        optuna.copy_study(from_study_name=plan.spec.name, from_storage=study._storage, to_storage=target)
        print(f"Copied {len(study.trials)} trials of {plan.spec.name!r} to {redact(args.copy_to)}")
        print(f"Dashboard: {dashboard_command(args.copy_to, plan.artifacts)}")
    if args.report:
        from geostudy.study.report import write_report

        path = write_report(study, plan.spec, plan.study_dir / "report.html", artifact_dir=plan.artifacts)
        write_trials_csv(study, plan.spec, plan.study_dir / "trials.csv")
        print(f"Report: {display_path(path)}")
        print(f"Trials: {display_path(plan.study_dir / 'trials.csv')}")
    _close(study)
    if args.dashboard:
        from geostudy.study.dashboard import serve_dashboard

        return serve_dashboard(plan.storage_url, plan.artifacts, host=args.host, port=args.port)
    return 0


def _log_to_file(path: Path) -> None:
    """Optuna's own log (with tracebacks of failed trials) goes to the study's log file, not the terminal."""
    import warnings

    import optuna

    # Metric names and artifacts are "experimental" in Optuna; the warning says nothing to our users.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.disable_default_handler()
    logger = logging.getLogger("optuna")
    for old in [h for h in logger.handlers if getattr(h, "geostudy", False)]:
        logger.removeHandler(old)  # one study log at a time, also when called in-process repeatedly
        old.close()
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.geostudy = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    # WARNING, not INFO: at INFO Optuna queries the best trial after every trial just to log it.
    # Failed trials are logged at WARNING with their traceback, which is what this file is for.
    logger.setLevel(logging.WARNING)
