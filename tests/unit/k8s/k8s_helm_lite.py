"""Render the kvmesh Helm chart without `helm`: the Go-template subset the chart uses.

Build machines have no `helm` binary, so the tests render the chart with this
small interpreter of Go's text/template: actions with ``{{-``/``-}}``
whitespace trimming, comments, ``define``/``include``, ``if``/``else``,
``range``, ``with``, pipelines, parenthesised arguments, and the Sprig
functions the chart calls (``default``, ``quote``, ``trunc``, ``trimSuffix``,
``contains``, ``nindent``, ``toYaml``, ``printf``). Anything else raises, so a template
change that outgrows the subset fails loudly instead of rendering wrongly.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


@dataclass
class Node:
    """A parsed template node: text, an action, or a block with children."""

    kind: str
    arg: str = ""
    body: list[Node] = field(default_factory=list)
    orelse: list[Node] = field(default_factory=list)


def _lex(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for match in _ACTION.finditer(text):
        chunk = text[pos:match.start()]
        if trim_next:
            chunk = chunk.lstrip()
        if match.group(1):
            chunk = chunk.rstrip()
        out.append(("text", chunk))
        out.append(("action", match.group(2).strip()))
        pos, trim_next = match.end(), bool(match.group(3))
    tail = text[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def _parse(tokens: list[tuple[str, str]], pos: int = 0) -> tuple[list[Node], int, str]:
    nodes: list[Node] = []
    while pos < len(tokens):
        kind, value = tokens[pos]
        pos += 1
        if kind == "text":
            nodes.append(Node("text", value))
            continue
        if value.startswith("/*"):
            continue
        word, _, rest = value.partition(" ")
        if word in ("end", "else"):
            return nodes, pos, word
        if word in ("if", "range", "with", "define"):
            node = Node(word, rest.strip())
            node.body, pos, stop = _parse(tokens, pos)
            if stop == "else":
                node.orelse, pos, stop = _parse(tokens, pos)
            nodes.append(node)
            continue
        nodes.append(Node("action", value))
    return nodes, pos, "eof"


def _split(expr: str, sep: str) -> list[str]:
    parts, depth, quote, start = [], 0, False, 0
    for i, char in enumerate(expr):
        if char == '"' and (i == 0 or expr[i - 1] != "\\"):
            quote = not quote
        elif not quote and char == "(":
            depth += 1
        elif not quote and char == ")":
            depth -= 1
        elif not quote and depth == 0 and expr.startswith(sep, i) and sep != " ":
            parts.append(expr[start:i])
            start = i + len(sep)
    parts.append(expr[start:])
    return [p.strip() for p in parts]


def _words(command: str) -> list[str]:
    words, i = [], 0
    while i < len(command):
        if command[i].isspace():
            i += 1
        elif command[i] == "(":
            depth, j = 0, i
            while True:
                depth += {"(": 1, ")": -1}.get(command[j], 0)
                if depth == 0:
                    break
                j += 1
            words.append(command[i:j + 1])
            i = j + 1
        else:
            lexer = shlex.shlex(command[i:], posix=False)
            lexer.whitespace_split = True
            word = next(iter(lexer))
            words.append(word)
            i += len(word)
    return words


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and value != {} and value != []


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def _nindent(width: int, text: str) -> str:
    return "\n" + "\n".join(" " * width + line for line in str(text).split("\n"))


@dataclass
class Chart:
    """A chart directory with its values, ready to render."""

    path: Path
    release: str = "kvmesh"
    namespace: str = "kvmesh-system"
    defines: dict[str, list[Node]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        meta = yaml.safe_load((self.path / "Chart.yaml").read_text())
        self.chart = {"Name": meta["name"], "Version": meta["version"],
                      "AppVersion": meta["appVersion"]}
        self.funcs: dict[str, Callable[..., Any]] = {
            "include": lambda name, dot: self._render(self.defines[name], dot),
            "default": lambda fallback, value=None: value if _truthy(value) else fallback,
            "quote": lambda value: f'"{value}"',
            "trunc": lambda n, s: str(s)[:n],
            "trimSuffix": lambda suffix, s: s.removesuffix(suffix),
            "contains": lambda needle, haystack: needle in haystack,
            "nindent": _nindent,
            "toYaml": _to_yaml,
            "printf": lambda fmt, *args: fmt.replace("%s", "{}").format(*args),
        }

    def _value(self, word: str, dot: Any) -> Any:
        if word.startswith("("):
            return self._pipeline(word[1:-1], dot)
        if word.startswith('"'):
            return word[1:-1]
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if word == ".":
            return dot
        if word.startswith("."):
            node = dot
            for part in word[1:].split("."):
                node = node.get(part) if isinstance(node, dict) else None
            return node
        raise ValueError(f"helm_lite: unsupported word {word!r}")

    def _command(self, command: str, dot: Any, piped: list[Any]) -> Any:
        words = _words(command)
        head = words[0]
        if head in self.funcs:
            args = [self._value(w, dot) for w in words[1:]] + piped
            return self.funcs[head](*args)
        target = self._value(head, dot)
        if callable(target):
            return target(*[self._value(w, dot) for w in words[1:]], *piped)
        if len(words) > 1 or piped:
            raise ValueError(f"helm_lite: cannot call {head!r}")
        return target

    def _pipeline(self, expr: str, dot: Any) -> Any:
        piped: list[Any] = []
        for command in _split(expr, "|"):
            piped = [self._command(command, dot, piped)]
        return piped[0]

    def _render(self, nodes: list[Node], dot: Any) -> str:
        out = []
        for node in nodes:
            if node.kind == "text":
                out.append(node.arg)
            elif node.kind == "action":
                value = self._pipeline(node.arg, dot)
                out.append("" if value is None else str(value).lower()
                           if isinstance(value, bool) else str(value))
            elif node.kind == "define":
                self.defines[node.arg.strip('"')] = node.body
            elif node.kind == "if":
                branch = node.body if _truthy(self._pipeline(node.arg, dot)) else node.orelse
                out.append(self._render(branch, dot))
            elif node.kind == "with":
                value = self._pipeline(node.arg, dot)
                out.append(self._render(node.body, value) if _truthy(value)
                           else self._render(node.orelse, dot))
            elif node.kind == "range":
                items = self._pipeline(node.arg, dot) or []
                out.append("".join(self._render(node.body, item) for item in items)
                           if items else self._render(node.orelse, dot))
        return "".join(out)

    def render(self, overrides: dict[str, Any] | None = None) -> dict[str, str]:
        """Template file name -> rendered text, with ``overrides`` merged over values.yaml."""
        values = yaml.safe_load((self.path / "values.yaml").read_text())
        values.update(overrides or {})
        files = {"Get": lambda name: (self.path / name).read_text()}
        dot = {"Values": values, "Chart": self.chart, "Files": files,
               "Release": {"Name": self.release, "Namespace": self.namespace,
                           "Service": "Helm"}}
        templates = sorted((self.path / "templates").iterdir())
        parsed = {p.name: _parse(_lex(p.read_text()))[0] for p in templates}
        for name, nodes in parsed.items():
            if name.startswith("_"):
                self._render(nodes, dot)  # registers the defines
        return {name: self._render(nodes, dot) for name, nodes in parsed.items()
                if not name.startswith("_")}

    def manifests(self, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every non-empty YAML document the chart renders."""
        docs = []
        for text in self.render(overrides).values():
            docs += [d for d in yaml.safe_load_all(text) if d]
        return docs
