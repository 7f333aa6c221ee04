"""Serving optuna-dashboard on a study's storage with its artifact store.

The server is optuna-dashboard's WSGI app on a threaded ``wsgiref`` server (the dashboard page
fires many requests at once; ``optuna_dashboard.run_server`` answers them one at a time). The
socket is bound before the URL is printed, so the printed URL is live, and a port in use is a
one-line error instead of a traceback.
"""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from geostudy.errors import ConfigError
from geostudy.study.artifacts import make_store
from geostudy.study.export import display_path
from geostudy.study.storage import open_storage, redact

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # Ctrl-C does not wait for a browser's open connections


class _ThreadedServer6(_ThreadedServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No line per request (the dashboard polls every few seconds); errors still go to stderr."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code).startswith("5"):
            super().log_request(code, size)


def dashboard_url(host: str, port: int) -> str:
    """The URL to open: a wildcard bind is reached through 127.0.0.1; IPv6 hosts are bracketed."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def make_dashboard_server(storage_url: str, artifact_dir: Path, *, host: str, port: int) -> WSGIServer:
    """Open the storage and bind the dashboard's server (not yet serving).

    Raises:
        ConfigError: the storage cannot be opened or the port cannot be bound.
    """
    import optuna_dashboard

    storage = open_storage(storage_url)
    # The dashboard reads what workers write, and writes notes itself: it gets Optuna's own RDBStorage
    # (as optuna-dashboard's CLI would), not the workers' write-behind cache in front of it.
    storage = getattr(storage, "backend", storage)
    app = optuna_dashboard.wsgi(storage, artifact_store=make_store(Path(artifact_dir)))
    server_class = _ThreadedServer6 if ":" in host else _ThreadedServer
    try:
        return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use; choose another with --port",
                              file="--port") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror or err}", file="--host") from None


def serve_dashboard(storage_url: str, artifact_dir: Path, *, host: str, port: int) -> int:
    """Serve optuna-dashboard on the study's storage and artifacts until Ctrl-C.

    Args:
        storage_url: The study's storage (printed with any password hidden).
        artifact_dir: The study's artifact folder (``<out>/<study>/artifacts``).
        host: Address to bind; 127.0.0.1 keeps the dashboard private to this machine.
        port: Port to bind.

    Returns:
        0 once interrupted.
    """
    server = make_dashboard_server(storage_url, artifact_dir, host=host, port=port)
    if host not in LOCAL_HOSTS:
        print(f"warning: listening on {host}: whoever reaches this port can view, edit and delete the study "
              "(optuna-dashboard has no login)", file=sys.stderr)
    print(f"Dashboard for {redact(storage_url)} with artifacts in {display_path(artifact_dir)}", flush=True)
    print(f"Open {dashboard_url(host, port)} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
