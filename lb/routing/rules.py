"""Traefik-style routing rules: ``Host(`a.example`) && (PathPrefix(`/api`) || Path(`/x`))``.

Matchers: `Host` (case and port ignored), `Path` (exact), `PathPrefix`; each takes one or more
quoted arguments (backticks or double quotes). Combined with `&&`, `||`, `!` and parentheses;
`!` binds tightest, then `&&`, then `||`. A rule compiles to one closure of (host, path), and it
knows which hosts it can match at all (`hosts`), so the table can index it by exact host.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

Matcher = Callable[[str, str], bool]

MATCHERS = ("Host", "Path", "PathPrefix")
_TOKEN = re.compile(r"\s*(?:(?P<op>&&|\|\||!|\(|\)|,)|(?P<name>[A-Za-z]+)|`(?P<bq>[^`]*)`|\"(?P<dq>[^\"]*)\")")


class RuleError(ValueError):
    """A rule that does not parse; str(e) says where and why."""


@dataclass(frozen=True)
class Rule:
    text: str
    match: Matcher = field(compare=False, repr=False)
    #: The only hosts this rule can match (lower case, no port), or None when it may match any host.
    hosts: frozenset[str] | None = None
    catch_all: bool = False

    @property
    def default_priority(self) -> int:
        """Traefik's: the longer rule is the more specific one."""
        return len(self.text)


def _always(host: str, path: str) -> bool:
    return True


#: The single-service mode's rule: every request.
MATCH_ALL = Rule("", _always, None, catch_all=True)


def normalize_host(value: str) -> str:
    """`Host` header value -> lower case without the port (`[::1]:80` -> `[::1]`)."""
    value = value.strip().lower()
    if value.endswith("]"):
        return value
    head, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in head:
        return head
    if sep and port.isdigit() and head.startswith("["):
        return head
    return value


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise RuleError(f"unexpected {text[pos:pos + 10]!r} at character {pos + 1}")
        pos = m.end()
        if m.group("op"):
            out.append(("op", m.group("op")))
        elif m.group("name"):
            out.append(("name", m.group("name")))
        else:
            out.append(("str", m.group("bq") if m.group("bq") is not None else m.group("dq")))
    return out


# A node is (matcher, hosts): hosts is the set of hosts it can match, None for any.
_Node = tuple[Matcher, "frozenset[str] | None"]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, kind: str, value: str | None = None) -> str:
        token = self.peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            want = value or {"str": "a quoted argument (`...`)", "name": "a matcher"}.get(kind, kind)
            got = "the end" if token is None else repr(token[1])
            raise RuleError(f"expected {want}, found {got}")
        self.i += 1
        return token[1]

    def parse(self) -> _Node:
        if not self.tokens:
            raise RuleError("empty rule")
        node = self.or_()
        if self.peek() is not None:
            raise RuleError(f"unexpected {self.peek()[1]!r} after a complete rule")  # type: ignore[index]
        return node

    def or_(self) -> _Node:
        nodes = [self.and_()]
        while self.peek() == ("op", "||"):
            self.i += 1
            nodes.append(self.and_())
        if len(nodes) == 1:
            return nodes[0]
        matchers = tuple(m for m, _ in nodes)
        hosts: frozenset[str] | None = frozenset()
        for _, h in nodes:
            hosts = None if hosts is None or h is None else hosts | h
        return (lambda host, path: any(m(host, path) for m in matchers)), hosts

    def and_(self) -> _Node:
        nodes = [self.unary()]
        while self.peek() == ("op", "&&"):
            self.i += 1
            nodes.append(self.unary())
        if len(nodes) == 1:
            return nodes[0]
        matchers = tuple(m for m, _ in nodes)
        hosts: frozenset[str] | None = None
        for _, h in nodes:
            if h is not None:
                hosts = h if hosts is None else hosts & h
        return (lambda host, path: all(m(host, path) for m in matchers)), hosts

    def unary(self) -> _Node:
        token = self.peek()
        if token == ("op", "!"):
            self.i += 1
            inner, _ = self.unary()
            return (lambda host, path: not inner(host, path)), None
        if token == ("op", "("):
            self.i += 1
            node = self.or_()
            self.take("op", ")")
            return node
        return self.call()

    def call(self) -> _Node:
        name = self.take("name")
        if name not in MATCHERS:
            raise RuleError(f"unknown matcher {name!r} (expects one of {', '.join(MATCHERS)})")
        self.take("op", "(")
        args = [self.take("str")]
        while self.peek() == ("op", ","):
            self.i += 1
            args.append(self.take("str"))
        self.take("op", ")")
        if name == "Host":
            hosts = frozenset(normalize_host(a) for a in args)
            if "" in hosts:
                raise RuleError("Host() expects a host name")
            return (lambda host, path: host in hosts), hosts
        for a in args:
            if not a.startswith("/"):
                raise RuleError(f"{name}({a!r}) expects a path starting with /")
        if name == "Path":
            paths = frozenset(args)
            return (lambda host, path: path in paths), None
        prefixes = tuple(args)
        return (lambda host, path: path.startswith(prefixes)), None


def parse_rule(text: str) -> Rule:
    """Parse and compile a rule; RuleError says what is wrong with it."""
    matcher, hosts = _Parser(text).parse()
    return Rule(text.strip(), matcher, hosts)
