"""Saving a run's figures and files: to a run folder (run.py) or Optuna's artifact store (studies)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from geostudy.learners.base import RunResult

# Checkpoints and big arrays stay in the run folder; the artifact store keeps what people look at.
MAX_ARTIFACT_BYTES = 50 * 2**20


def artifact_dir(out_dir: Path, study_name: str) -> Path:
    return out_dir / study_name / "artifacts"


def save_figures(result: RunResult, folder: Path) -> dict[str, Path]:
    """Write each figure of ``result`` into ``folder`` (PNG for matplotlib figures); return name -> file."""
    import matplotlib.pyplot as plt

    saved: dict[str, Path] = {}
    if not result.figures:
        return saved
    folder.mkdir(parents=True, exist_ok=True)
    for name, figure in result.figures.items():
        if isinstance(figure, (str, Path)):
            src = Path(figure)
            dst = folder / src.name
            if src.resolve() != dst.resolve():
                shutil.copyfile(src, dst)
            saved[name] = dst
        else:
            dst = folder / f"{name}.png"
            figure.savefig(dst, dpi=110, bbox_inches="tight")
            plt.close(figure)
            saved[name] = dst
    return saved


def upload_run_outputs(trial: optuna.Trial, store: FileSystemArtifactStore, paths: dict[str, Path]) -> dict[str, str]:
    """Upload files as artifacts of ``trial``; return name -> artifact id (skips oversized files)."""
    ids: dict[str, str] = {}
    for name, path in paths.items():
        if not path.is_file() or path.stat().st_size > MAX_ARTIFACT_BYTES:
            continue
        mimetype = _mimetype(path)
        ids[name] = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype=mimetype)
    return ids


# What the dashboard can show inline; anything else (checkpoints, arrays) is a plain download.
# Python's own guess is wrong for some of ours (.pt is an "SNES page table").
_VIEWABLE = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
             ".pdf": "application/pdf", ".html": "text/html", ".csv": "text/csv", ".json": "application/json",
             ".txt": "text/plain", ".yaml": "text/plain"}


def _mimetype(path: Path) -> str:
    return _VIEWABLE.get(path.suffix.lower(), "application/octet-stream")


def make_store(folder: Path) -> FileSystemArtifactStore:
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(base_path=str(folder))


def close_figures(result: RunResult) -> None:
    import matplotlib.pyplot as plt

    for figure in result.figures.values():
        if not isinstance(figure, (str, Path)):
            plt.close(figure)


def json_safe(value: Any) -> Any:
    """Numbers, strings, lists and dicts only (NumPy scalars and arrays converted)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value
