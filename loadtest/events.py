"""locust's event hooks: `events.request`, `test_start`, `test_stop`, `quitting`, ... with the same arguments.

    from loadtest import events

    @events.quitting.add_listener
    def _(environment, **kw):
        if environment.stats.total.fail_ratio > 0.01:
            environment.process_exit_code = 1

A listener that raises is reported with its traceback and counted as an exception (the run then exits 1);
it never stops the other listeners.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from loadtest.exception import CONTROL_FLOW

log = logging.getLogger("loadtest")


class EventHook:
    """add_listener(fn) (usable as a decorator), remove_listener(fn), fire(**kwargs)."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._handlers: list[Callable[..., Any]] = []
        # Set by the runner: where a listener's exception is counted (stats.log_exception).
        self.on_error: Callable[[BaseException, str], None] | None = None

    def add_listener(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        self._handlers.append(handler)
        return handler

    def remove_listener(self, handler: Callable[..., Any]) -> None:
        self._handlers.remove(handler)

    def __bool__(self) -> bool:
        return bool(self._handlers)

    def fire(self, *, reverse: bool = False, **kwargs: Any) -> None:
        self._fire(reversed(self._handlers) if reverse else self._handlers, kwargs)

    def fire_others(self, skip: Callable[..., Any], **kwargs: Any) -> None:
        """fire() to every listener but `skip` (the client's own requests are already in the stats)."""
        self._fire([h for h in self._handlers if h != skip], kwargs)

    def _fire(self, handlers: Any, kwargs: dict[str, Any]) -> None:
        for handler in list(handlers):
            try:
                handler(**kwargs)
            except CONTROL_FLOW:
                raise  # StopUser, RescheduleTask, ... raised from a request listener steer the task, as in locust
            except Exception as exc:
                tb = "".join(traceback.format_tb(exc.__traceback__))
                log.error("Uncaught exception in event handler %s for %s:\n%s%s: %s",
                          getattr(handler, "__name__", handler), self.name, tb, type(exc).__name__, exc)
                if self.on_error is not None:
                    self.on_error(exc, tb)


class Events:
    """The hooks locust users attach to. All are fired by the runner except the few listed as never fired in
    loadtest/README.md (distributed-mode hooks)."""

    NAMES = ("request", "user_error", "report_to_master", "worker_report", "worker_connect", "spawning_complete",
             "quitting", "quit", "init", "init_command_line_parser", "test_start", "test_stopping", "test_stop",
             "reset_stats", "cpu_warning", "heartbeat_sent", "heartbeat_received", "usage_monitor")

    def __init__(self) -> None:
        for name in self.NAMES:
            setattr(self, name, EventHook(name))

    def hooks(self) -> list[EventHook]:
        return [getattr(self, n) for n in self.NAMES]

    def __getattr__(self, name: str) -> EventHook:  # pragma: no cover - only for names not in NAMES
        raise AttributeError(f"loadtest has no event {name!r} (it has: {', '.join(self.NAMES)})")

    # typed names for the common hooks (mypy sees these; setattr above creates them)
    request: EventHook
    user_error: EventHook
    spawning_complete: EventHook
    quitting: EventHook
    quit: EventHook
    init: EventHook
    init_command_line_parser: EventHook
    test_start: EventHook
    test_stopping: EventHook
    test_stop: EventHook


events = Events()
