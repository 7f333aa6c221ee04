"""Shared fixtures: the repo root, study-file writing, and CLI runners (in-process and subprocess)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("DGLBACKEND", "pytorch")
os.environ.setdefault("MPLBACKEND", "Agg")
# One BLAS/OpenMP thread per test process (before torch is imported; worker processes inherit it). The
# suite's matrices are small, and on the 2-core CI machine the tests that start several workers would
# otherwise run two threads each on one core. Under any other load two spinning OpenMP threads are far
# slower still: the SVGP test took 284 s with two threads and 50 s with one on this machine, busy.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def check_config_or_skip(learner, config: dict) -> None:
    """``learner.check_config(config)``; a config that reads ``../shared/data`` skips the test cleanly where
    that folder is absent (a newcomer's clone), any other data error fails it."""
    from geostudy.errors import DataError

    try:
        learner.check_config(config)
    except DataError as err:
        if err.file and Path(err.file).resolve().is_relative_to(SHARED_DATA.resolve()) and not SHARED_DATA.is_dir():
            pytest.skip(f"{err.file} is absent")
        raise


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def write_study(tmp_path: Path) -> Callable[..., Path]:
    """Write a study YAML (a dict or raw text) into tmp_path and return its path."""

    def write(content: dict | str, name: str = "s") -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


def toy_study(**overrides) -> dict:
    """A small valid toy study; keyword arguments replace top-level keys."""
    study = {
        "learner": "toy",
        "config": str(ROOT / "configs" / "toy.yaml"),
        "set": {"steps": 3},
        "metrics": ["value"],
        "directions": ["minimize"],
        "n_trials": 4,
        "sampler": {"name": "random", "args": {"seed": 0}},
        "pruner": {"name": "nop"},
        "space": {"x": {"type": "float", "low": -5, "high": 10}, "y": {"type": "float", "low": 0, "high": 15}},
    }
    study.update(overrides)
    return study


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python <script> args...`` from the repo root in a subprocess (the real entry point)."""

    def run(script: str, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})

    return run


def file_digest(path: Path) -> str | None:
    """SHA-256 of a file (None when absent): proves a database was left byte-for-byte unchanged."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory) -> str:
    """A real PostgreSQL 16 server (the ``pgserver`` package) for this test session; no mocks."""
    import warnings

    import pgserver

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns that XDG_RUNTIME_DIR is unset
        # Not under pytest's tmp folder: that is private to root, and the server runs as its own user.
        server = pgserver.get_server(tempfile.mkdtemp(prefix="geostudy-pg-"), cleanup_mode="stop")
    uri = server.get_uri()  # postgresql://postgres:@/postgres?host=/tmp/...
    yield uri.replace("postgresql://", "postgresql+psycopg://", 1)
    server.cleanup()


@pytest.fixture
def fresh_pg_db(postgres_url) -> str:
    """A new empty database on the session's server, so tests never see each other's studies."""
    import uuid

    import sqlalchemy

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return postgres_url.replace("/postgres?", f"/{name}?", 1)


@pytest.fixture(autouse=True)
def _close_figures():
    """Tests that call ``learner.run`` directly own the figures it returns: close them after each test."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
