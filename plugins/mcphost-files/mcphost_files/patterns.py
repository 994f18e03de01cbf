"""Caller-supplied patterns (search text, regular expressions, shell globs), matched in linear time.

Python's ``re`` backtracks: a pattern such as ``(.+)+\\x00`` takes time exponential in the
line's length, holding the interpreter (and with it the whole daemon) all the while, and a
thread running it cannot be cancelled. So every pattern a caller sends is compiled with
RE2, whose matching time is linear in the text, whatever the pattern: regular expressions,
plain text, and shell globs, which are translated to RE2 here (``fnmatch`` would translate
them to ``re`` patterns, and keeps up to 32768 of them compiled for the life of the process).

Compiled patterns are not kept: ``re2`` caches what it compiles, up to 8 MiB each, and one
caller sending new patterns would otherwise fill that cache for everyone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import re2

import mcphost

MAX_PATTERN_CHARS = 1000

_PROGRAM_BYTES = 8 << 20
"""Memory one compiled pattern may use (RE2's default): a bigger program is refused at
compile time, and a search whose lazily built DFA would outgrow it falls back to RE2's
slower, still linear, NFA."""


def _options(*, literal: bool = False, ignore_case: bool = False) -> re2.Options:
    options = re2.Options()
    options.max_mem = _PROGRAM_BYTES
    options.log_errors = False  # RE2 would write to stderr past the daemon's logger
    options.literal = literal
    options.case_sensitive = not ignore_case
    options.dot_nl = True  # like fnmatch: '*' and '?' match a newline in a name too
    return options


def _check_length(pattern: str, what: str) -> None:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise mcphost.ToolError(f"the {what} is longer than {MAX_PATTERN_CHARS} characters")


def _reason(error: re2.error) -> str:
    """RE2's message, which the binding gives as bytes."""
    reason = error.args[0] if error.args else ""
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)


def _compile(pattern: str, options: re2.Options) -> Any:
    try:
        return re2.compile(pattern, options)
    finally:
        re2.purge()  # the caller keeps what it needs; nothing stays cached


LineFinder = Callable[[str], Iterator[tuple[int, str]]]
"""Given a block of whole lines (``"\n"``-separated, the last one maybe without its ``"\n"``),
yields ``(index, line)`` of each line that matches, in order; the line without its end of line."""


def line_finder(pattern: str, *, regex: bool, ignore_case: bool) -> LineFinder:
    """What finds the lines that contain ``pattern`` (text, or with ``regex`` an RE2 regular
    expression), each line matched on its own, ignoring its line ending."""
    if not pattern:
        raise mcphost.ToolError("the pattern is empty")
    _check_length(pattern, "pattern")
    try:
        compiled = _compile(pattern, _options(literal=not regex, ignore_case=ignore_case))
    except re2.error as error:
        raise mcphost.ToolError(f"invalid regular expression: {_reason(error)}") from None
    except UnicodeEncodeError:
        raise mcphost.ToolError("the pattern is not valid Unicode (a lone surrogate)") from None
    if regex or "\r" in pattern:
        return functools.partial(_each_line, compiled.search)
    if "\n" in pattern:
        return lambda block: iter(())  # no line holds a line break
    return functools.partial(_text_in_block, compiled.search)


def _lines(block: str) -> list[str]:
    lines = block.split("\n")
    if block.endswith("\n"):
        lines.pop()
    return lines


def _each_line(search: Callable[[str], object], block: str) -> Iterator[tuple[int, str]]:
    for index, line in enumerate(_lines(block)):
        line = line.rstrip("\r")
        if search(line) is not None:
            yield index, line


def _text_in_block(search: Callable[[bytes, int], Any], block: str) -> Iterator[tuple[int, str]]:
    # Text without a line break matches a line exactly where it occurs in the block, so the
    # block is searched in one go (a call per matching line, not per line: some fifty times
    # faster through the binding). Bytes, so that each search starts at a byte offset.
    data = block.encode()
    index = position = 0
    while position < len(data) and (found := search(data, position)) is not None:
        start = data.rfind(b"\n", 0, found.start()) + 1
        end = data.find(b"\n", found.start())
        end = len(data) if end < 0 else end
        index += data.count(b"\n", position, start)
        yield index, data[start:end].decode().rstrip("\r")
        index += 1
        position = end + 1


def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """Whether a whole name matches the shell-style ``pattern`` (``*``, ``?``, ``[seq]``,
    ``[!seq]``), as ``fnmatch.fnmatchcase`` decides it."""
    _check_length(pattern, "glob")
    if pattern == "*":
        return lambda name: True
    try:
        whole = _compile(glob_to_re2(pattern), _options()).fullmatch
    except re2.error as error:  # the translation is always valid RE2; this guards its limits
        raise mcphost.ToolError(f"the glob cannot be used: {_reason(error)}") from None
    except UnicodeEncodeError:
        raise mcphost.ToolError("the glob is not valid Unicode (a lone surrogate)") from None

    def matches(name: str) -> bool:
        try:
            return whole(name) is not None
        except UnicodeEncodeError:
            # A name with bytes that are not UTF-8 (decoded to lone surrogates): each such
            # byte becomes one '?' character, which the glob's wildcards match as fnmatch would.
            return whole(name.encode("utf-8", "replace").decode()) is not None

    return matches


def glob_to_re2(pattern: str) -> str:
    """RE2 syntax for a shell glob, with ``fnmatch``'s rules for brackets: ``[!...]``
    negates, a ``]`` first in the set is literal, ``a-z`` is a range (an inverted one
    matches nothing), and a ``[`` without its ``]`` is literal."""
    out: list[str] = []
    literal: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char not in "*?[":
            literal.append(char)
            continue
        if char == "[":
            end = i + (i < n and pattern[i] == "!")
            end += end < n and pattern[end] == "]"
            end = pattern.find("]", end)
            if end < 0:
                literal.append(char)  # no closing bracket: a plain "["
                continue
        if literal:
            out.append(re2.escape("".join(literal)))
            literal.clear()
        if char == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(_bracket(pattern[i:end]))
            i = end + 1
    if literal:
        out.append(re2.escape("".join(literal)))
    return "".join(out)


def _bracket(body: str) -> str:
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    items: list[str] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            if low <= high:  # fnmatch drops an inverted range
                items.append(f"{_class_char(low)}-{_class_char(high)}")
            i += 3
        else:
            items.append(_class_char(body[i]))
            i += 1
    if not items:
        # "[!]" and "[]]"-like leftovers: fnmatch matches any character for a negated
        # empty set, nothing for an empty one.
        return "." if negate else "[^\\x00-\\x{10FFFF}]"
    return f"[{'^' if negate else ''}{''.join(items)}]"


def _class_char(char: str) -> str:
    # Inside a class only these are special to RE2; everything else stands for itself.
    return "\\" + char if char in "\\]^-[" else char
