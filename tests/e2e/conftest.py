"""Shared end-to-end fixtures: a real Docker engine in Swarm mode, or a skip that says why.

`make test` runs `scripts/engine.sh ensure-if-possible` first, which starts an engine (and a
one-node Swarm) when it can; here the tests only look whether one answers.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = "unix:///var/run/docker.sock"
#: scripts/swarm.sh tags the images with SWARMSCALE_TAG (default dev), so checkouts can share an engine.
TAG = os.environ.get("SWARMSCALE_TAG", "dev")
LB_IMAGE = f"swarmscale/lb:{TAG}"
WEB_IMAGE = f"swarmscale/web:{TAG}"
BASE_IMAGE = "swarmscale/base:bookworm"
#: Label on everything a test creates, so a teardown (or a person) can find it.
TEST_LABEL = "swarmscale.test"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll a condition the engine has no event for, bounded in time; returns its truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def replicas_of(client, name: str) -> int:
    """The replica count the service's spec asks for (what the balancer set), not what runs."""
    return client.services.get(name).attrs["Spec"]["Mode"]["Replicated"]["Replicas"]


def swarm_sh(command: str, env: dict[str, str]) -> None:
    """scripts/swarm.sh, the way a user deploys; its stderr in the failure when it fails."""
    result = subprocess.run(["bash", str(ROOT / "scripts/swarm.sh"), command], env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"scripts/swarm.sh {command} failed:\n{result.stderr[-3000:]}")


@pytest.fixture(scope="session")
def engine():
    """A docker.DockerClient on a Swarm manager; the e2e tests are skipped (with the reason) otherwise."""
    docker = pytest.importorskip("docker")
    try:
        client = docker.DockerClient(base_url=ENGINE, timeout=60)
        info = client.info()
    except Exception as exc:  # noqa: BLE001 - whatever the failure, there is no usable engine
        pytest.skip(f"no Docker engine answers at {ENGINE} ({type(exc).__name__}); "
                    "`make test` starts one when run as root on Debian")
    swarm = info.get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        pytest.skip("the Docker engine is not a Swarm manager (`bash scripts/engine.sh ensure` makes one)")
    yield client
    client.close()


@pytest.fixture(scope="session")
def images(engine) -> dict[str, str]:
    """The project's images, built once per session (the base image only when missing)."""
    result = subprocess.run(["bash", str(ROOT / "scripts/swarm.sh"), "image"], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"scripts/swarm.sh image failed:\n{result.stderr[-3000:]}")
    return {"lb": LB_IMAGE, "web": WEB_IMAGE, "base": BASE_IMAGE}
