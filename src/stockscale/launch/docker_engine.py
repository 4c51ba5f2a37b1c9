"""The container engine session of the docker backend: connecting, labelling what a launcher owns, and sweeping
what a launcher that is gone left behind.

Every container and network the docker backend makes carries LABEL_OWNER, the making launcher's
"<host>:<pid>:<start time>"; a later launcher finds leftovers by that label and removes those whose owner is no
longer running (other hosts' are left alone), with the staging folders a killed launcher left in the temporary
directory. Docker or podman: the Docker SDK talks to either engine's API socket.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stockscale.errors import InputError
from stockscale.files import sweep_stale

LABEL_OWNER = "stockscale/owner"  # "<host>:<pid>:<start time>" of the launcher that made it
LABEL_BACKEND = "stockscale/backend"
STAGING_PREFIX = "stockscale-docker-"

# Engines tried in order when DOCKER_HOST is not set: Docker's socket, then podman's (rootful, rootless).
ENGINE_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock",
                  f"{os.environ.get('XDG_RUNTIME_DIR', f'/run/user/{os.getuid()}')}/podman/podman.sock")
START_ENGINE_HINT = ("start one: `sudo dockerd &` (or `sudo systemctl start docker`), or for podman "
                     "`systemctl --user start podman.socket` and DOCKER_HOST=unix://$XDG_RUNTIME_DIR/podman/podman.sock")


def build_command() -> str:
    return "deploy/build-image.sh --offline  (or deploy/build-image.sh where python:3.11-slim can be pulled)"


def connect_engine() -> Any:
    """A Docker SDK client for the first engine that answers; InputError saying how to start one if none."""
    try:
        import docker
    except ImportError:
        raise InputError("--backend docker needs the Docker SDK: pip install 'stockscale[docker]'") from None
    candidates = [os.environ["DOCKER_HOST"]] if os.environ.get("DOCKER_HOST") else \
        [f"unix://{path}" for path in ENGINE_SOCKETS if os.path.exists(path)]
    problems = []
    for url in candidates:
        try:
            client = docker.DockerClient(base_url=url, timeout=120)
            client.ping()
            return client
        except Exception as error:  # the SDK raises several kinds for an engine that does not answer
            problems.append(f"{url}: {str(error).splitlines()[0][:120]}")
    where = "; ".join(problems) if problems else "no Docker or podman socket found"
    raise InputError(f"no container engine reachable ({where}): {START_ENGINE_HINT}")


def check_image(engine: Any, image: str) -> None:
    """InputError naming the build command when `image` is not in the engine."""
    import docker.errors

    try:
        engine.images.get(image)
    except docker.errors.ImageNotFound:
        raise InputError(f"image {image} is not built: run {build_command()}") from None


def owner_token(pid: int | None = None) -> str:
    import psutil

    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{psutil.Process(pid).create_time():.2f}"


def owner_alive(token: str) -> bool:
    """Is the launcher that labelled a container still running? (Other hosts' containers are left alone.)"""
    import psutil

    host, _, rest = token.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    try:
        return f"{psutil.Process(int(pid_text)).create_time():.2f}" == started
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def sweep(engine: Any) -> list[str]:
    """Remove containers, networks and staging folders whose launcher is dead; returns what went."""
    removed = []
    for container in engine.containers.list(all=True, filters={"label": LABEL_OWNER}):
        if not owner_alive(container.labels.get(LABEL_OWNER, "")):
            with contextlib.suppress(Exception):
                container.remove(force=True)
                removed.append(f"container {container.name}")
    for network in engine.networks.list(filters={"label": LABEL_OWNER}):
        if not owner_alive(network.attrs.get("Labels", {}).get(LABEL_OWNER, "")):
            with contextlib.suppress(Exception):
                network.remove()
                removed.append(f"network {network.name}")
    removed += [f"folder {folder}" for folder in sweep_stale(Path(tempfile.gettempdir()), STAGING_PREFIX)]
    return removed


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP while the engine makes something, and deliver them right after.

    An interrupt that lands while the engine is still creating a container would leave one that this launcher
    never held: the engine finishes the request after the client has gone. Only the main thread receives
    signals; elsewhere (run_many's threads, which end on the abort event) there is nothing to hold.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
