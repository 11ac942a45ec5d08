"""locust.exception's names, for `from loadtest.exception import RescheduleTask` and friends."""

from __future__ import annotations


class LocustError(Exception):
    pass


class StopUser(Exception):
    """Raise inside a task to stop this user, as in locust."""


class StopTest(Exception):
    """Raise to end the whole run (locust's StopTest)."""


class InterruptTaskSet(Exception):
    """Raised by TaskSet.interrupt(): hands control back to the parent."""

    def __init__(self, reschedule: bool = True) -> None:
        super().__init__()
        self.reschedule = reschedule


class RescheduleTask(Exception):
    """Ends the current task; the user waits, then picks the next one."""


class RescheduleTaskImmediately(Exception):
    """Ends the current task; the user picks the next one without waiting."""


class MissingWaitTimeError(LocustError):
    pass


CONTROL_FLOW = (StopUser, StopTest, InterruptTaskSet, RescheduleTask, RescheduleTaskImmediately)
