"""The table the proxy looks each request up in, rebuilt whenever a route comes, goes or changes.

Lookup is a dict hit on the exact host (routes whose rule names their hosts, merged with the
routes that may match any host), then the rules of that short list in priority order: the first
that matches wins. With one catch-all route (the single-service mode) there is nothing to look up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from lb.routing.rules import normalize_host

if TYPE_CHECKING:
    from lb.routing.route import Route


def _order(route: Route) -> tuple[int, str]:
    return (-route.priority, route.name)


def split_target(target: bytes) -> tuple[str | None, str]:
    """A request target -> (host named in an absolute-form target or None, path without the query)."""
    if target[:1] == b"/":
        path = target.split(b"?", 1)[0]
        return None, path.decode("latin-1")
    if b"://" in target:
        rest = target.split(b"://", 1)[1]
        authority, slash, path = rest.partition(b"/")
        return normalize_host(authority.decode("latin-1")), "/" + path.split(b"?", 1)[0].decode("latin-1")
    return None, target.split(b"?", 1)[0].decode("latin-1")


class RouteTable:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        #: The one route when it matches everything: the hot path skips the lookup.
        self.single: Route | None = None
        self._by_host: dict[str, tuple[Route, ...]] = {}
        self._any: tuple[Route, ...] = ()

    def __iter__(self) -> Iterator[Route]:
        return iter(list(self.routes.values()))

    def __len__(self) -> int:
        return len(self.routes)

    def first(self) -> Route | None:
        return next(iter(self.routes.values()), None)

    def put(self, route: Route) -> None:
        self.routes[route.name] = route
        self.rebuild()

    def remove(self, name: str) -> Route | None:
        route = self.routes.pop(name, None)
        self.rebuild()
        return route

    def rebuild(self) -> None:
        """Recompute the index (after a change to any route's rule or priority)."""
        by_host: dict[str, list[Route]] = {}
        anyhost: list[Route] = []
        for route in self.routes.values():
            if route.rule.hosts is None:
                anyhost.append(route)
            else:
                for host in route.rule.hosts:
                    by_host.setdefault(host, []).append(route)
        self._any = tuple(sorted(anyhost, key=_order))
        self._by_host = {h: tuple(sorted(rs + anyhost, key=_order)) for h, rs in by_host.items()}
        only = list(self.routes.values())
        self.single = only[0] if len(only) == 1 and only[0].rule.catch_all else None

    def match(self, host: str, path: str) -> Route | None:
        """`host` already normalized (lower case, no port)."""
        for route in self._by_host.get(host, self._any):
            if route.rule.match(host, path):
                return route
        return None

    def match_request(self, target: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[Route | None, str, str]:
        """(route or None, host, path) for a request as parsed: its target and header fields."""
        host, path = split_target(target)
        if host is None:
            host = ""
            for name, value in headers:
                if len(name) == 4 and name.lower() == b"host":
                    host = normalize_host(value.decode("latin-1"))
                    break
        return self.match(host, path), host, path
