"""The dashboard server without a browser: its API and artifact URLs answer, the URL is printed, bad ports fail cleanly."""

from __future__ import annotations

import json
import re
import socket
import threading
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

from geostudy.cli import study_main
from geostudy.errors import ConfigError
from geostudy.study import dashboard
from geostudy.study.dashboard import dashboard_url, make_dashboard_server, serve_dashboard
from tests.conftest import toy_study


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[str, Path]:
    """A 3-trial toy study with figures: (storage URL, artifact folder)."""
    folder = tmp_path_factory.mktemp("dash")
    (folder / "s.yaml").write_text(yaml.safe_dump(toy_study(n_trials=3, set={"steps": 2, "figure": True})))
    out = folder / "out"
    assert study_main(["--study", str(folder / "s.yaml"), "--out", str(out), "--no-progress"]) == 0
    return f"sqlite:///{out / 's' / 's.db'}", out / "s" / "artifacts"


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


def test_server_answers_api_and_artifacts(finished):
    storage_url, artifacts = finished
    server = make_dashboard_server(storage_url, artifacts, host="127.0.0.1", port=0)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, _, body = _get(f"http://127.0.0.1:{port}/api/studies")
        summaries = json.loads(body)["study_summaries"]
        assert status == 200 and [s["study_name"] for s in summaries] == ["s"]
        study = optuna.load_study(study_name="s", storage=storage_url)
        trial = study.trials[0]
        artifact = next(json.loads(v) for k, v in trial.system_attrs.items() if k.startswith("artifacts:"))
        url = f"http://127.0.0.1:{port}/artifacts/{study._study_id}/{trial._trial_id}/{artifact['artifact_id']}"
        status, kind, body = _get(url)
        assert status == 200 and kind == "image/png" and body.startswith(b"\x89PNG")
        # The link in the trial's note is that same URL.
        status, _, body = _get(f"http://127.0.0.1:{port}/api/studies/{study._study_id}")
        note = next(t["note"]["body"] for t in json.loads(body)["trials"] if t["number"] == 0)
        assert url.removeprefix(f"http://127.0.0.1:{port}") in note
    finally:
        server.shutdown()
        server.server_close()


def test_serve_prints_url_and_returns_0_on_ctrl_c(finished, capsys, monkeypatch):
    storage_url, artifacts = finished

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dashboard._ThreadedServer, "serve_forever", interrupted)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert serve_dashboard(storage_url, artifacts, host="127.0.0.1", port=port) == 0
    printed = capsys.readouterr().out
    assert re.search(rf"^Open http://127\.0\.0\.1:{port}/ ", printed, re.MULTILINE)


def test_port_in_use_is_a_clean_error(finished):
    storage_url, artifacts = finished
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already in use"):
            make_dashboard_server(storage_url, artifacts, host="127.0.0.1", port=port)


def test_cli_dashboard_without_a_study_is_one_line_exit_2(tmp_path, capsys):
    assert study_main(["--study", "toy_quick", "--out", str(tmp_path), "--dashboard"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no database" in err
    assert not (tmp_path / "toy_quick" / "toy_quick.db").exists()


@pytest.mark.parametrize("host, url", [("127.0.0.1", "http://127.0.0.1:8080/"), ("0.0.0.0", "http://127.0.0.1:8080/"),
                                       ("::", "http://[::1]:8080/"), ("fe80::1", "http://[fe80::1]:8080/"),
                                       ("myhost", "http://myhost:8080/")])
def test_dashboard_url(host, url):
    assert dashboard_url(host, 8080) == url
