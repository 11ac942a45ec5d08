"""locust.runners' names a locustfile checks against (`isinstance(environment.runner, WorkerRunner)`,
`runner.state in [STATE_STOPPING, ...]`). There is only the local runner here."""

from __future__ import annotations

from loadtest.runner import Runner

STATE_INIT, STATE_SPAWNING, STATE_RUNNING = "ready", "spawning", "running"
STATE_CLEANUP, STATE_STOPPING, STATE_STOPPED, STATE_MISSING = "cleanup", "stopping", "stopped", "missing"

LocalRunner = Runner


class MasterRunner(Runner):
    """Never instantiated: distributed runs are not supported."""


class WorkerRunner(Runner):
    """Never instantiated: distributed runs are not supported."""


__all__ = ["STATE_CLEANUP", "STATE_INIT", "STATE_MISSING", "STATE_RUNNING", "STATE_SPAWNING", "STATE_STOPPED",
           "STATE_STOPPING", "LocalRunner", "MasterRunner", "Runner", "WorkerRunner"]
