"""mcphost-files: read-only access to text files (logs, configs) under configured roots.

Every path is resolved with ``os.path.realpath`` and must stay inside one of the roots
(see :mod:`mcphost_files.paths`); nothing here writes, and nothing outside the roots is read,
listed or searched, whichever symlinks or ``..`` a path contains.
"""

import codecs
import os
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import trio
from pydantic import BaseModel, Field, field_validator

import mcphost
from mcphost_files.paths import Refused, Roots, is_binary, os_failure, pread_upto, shown
from mcphost_files.patterns import MAX_PATTERN_CHARS, LineFinder, glob_matcher, line_finder

__all__ = [
    "Entry",
    "ListResult",
    "ReadResult",
    "RootInfo",
    "RootsResult",
    "SearchMatch",
    "SearchResult",
    "Settings",
    "SkippedFile",
    "TailResult",
    "list_dir",
    "read",
    "roots",
    "search",
    "tail",
]

MAX_TAIL_LINES = 10_000
MAX_LINE_CHARS = 500
MAX_SKIPPED_REPORTED = 100
_TAIL_BLOCK = 65_536
_SCAN_BLOCK = 1 << 20
PROGRESS_EVERY = 200
"""A search reports its progress (and stops if cancelled) every this many files."""
SEARCH_TIMEOUT = 600.0
"""A search over a large tree may take minutes: past ``[tasks] handoff_after`` seconds, a
client that accepts tasks gets a task to poll instead of a request held open."""

# Every tool only reads, and reading the same file twice gives the same answer.
_READ_ONLY = {"readOnlyHint": True, "destructiveHint": False, "idempotentHint": True, "openWorldHint": False}


class Settings(mcphost.PluginSettings):
    """``[plugins.files.settings]``: which directories may be read, and how much at a time."""

    roots: list[Path] = Field(
        default=[], description="Absolute directories whose contents may be read; may not exist yet."
    )
    # The result carries the text twice (structured content and its JSON rendering), and
    # the host's default max_result_bytes, like the reference client's largest SSE event,
    # is 1 MiB: 256 KiB of text fits with room for escaping.
    max_read_bytes: Annotated[int, Field(gt=0)] = 262_144
    max_file_bytes_searched: Annotated[int, Field(gt=0)] = 10_485_760
    max_matches: Annotated[int, Field(gt=0)] = 200
    max_entries: Annotated[int, Field(gt=0)] = 1000

    @field_validator("roots")
    @classmethod
    def _absolute(cls, roots: list[Path]) -> list[Path]:
        # A relative root would depend on the daemon's working directory.
        relative = [str(root) for root in roots if not root.is_absolute()]
        if relative:
            raise ValueError(f"roots must be absolute paths, got {', '.join(relative)}")
        return roots


# --- results --------------------------------------------------------------------------------


class RootInfo(BaseModel):
    """One configured root."""

    path: str
    exists: bool = Field(description="Whether the root is an existing directory on this host.")


class RootsResult(BaseModel):
    """The configured roots; relative paths resolve against the first."""

    roots: list[RootInfo]


class Entry(BaseModel):
    """One directory entry; a symlink is reported as such, not followed."""

    name: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int = Field(description="Size in bytes (of the link itself for a symlink).")
    mtime: str = Field(description="Last modification time, ISO 8601 in UTC.")


class ListResult(BaseModel):
    """A directory's entries matching the pattern, sorted by name."""

    path: str = Field(description="The directory's resolved path.")
    entries: list[Entry]
    total: int = Field(description="How many entries matched the pattern.")
    truncated: bool = Field(description="Whether entries were cut at max_entries.")


class ReadResult(BaseModel):
    """A slice of a text file."""

    path: str = Field(description="The file's resolved path.")
    text: str = Field(description="The bytes read, decoded as UTF-8 (undecodable bytes replaced).")
    offset: int = Field(description="Byte offset the text starts at.")
    bytes_read: int
    size: int = Field(description="The file's total size in bytes.")
    truncated: bool = Field(description="Whether the file continues past the text returned.")
    next_offset: int | None = Field(description="Offset to read the rest from, when truncated.")


class TailResult(BaseModel):
    """The end of a text file."""

    path: str = Field(description="The file's resolved path.")
    text: str = Field(description="The last lines, decoded as UTF-8 (undecodable bytes replaced).")
    lines: int = Field(description="How many lines the text holds.")
    offset: int = Field(description="Byte offset the text starts at.")
    size: int = Field(description="The file's total size in bytes.")
    truncated: bool = Field(description="Whether max_read_bytes stopped the read before the lines asked for.")


class SearchMatch(BaseModel):
    """One matching line."""

    path: str
    line: int = Field(description="Line number, from 1.")
    text: str = Field(description=f"The line, cut at {MAX_LINE_CHARS} characters.")


class SkippedFile(BaseModel):
    """A file the search did not look into, and why."""

    path: str
    reason: str


class SearchResult(BaseModel):
    """Matching lines across the files searched."""

    matches: list[SearchMatch]
    truncated: bool = Field(description="Whether the search stopped at max_matches.")
    files_searched: int
    files_skipped: int
    skipped: list[SkippedFile] = Field(description=f"The first {MAX_SKIPPED_REPORTED} files skipped.")


# --- tools ----------------------------------------------------------------------------------


def _settings(ctx: mcphost.ToolContext) -> Settings:
    return cast(Settings, ctx.settings)


@mcphost.tool(annotations=_READ_ONLY)
def roots(ctx: mcphost.ToolContext) -> RootsResult:
    """List the root directories that may be read (relative paths resolve against the first)."""
    return RootsResult(roots=[RootInfo(path=str(root), exists=os.path.isdir(root)) for root in _settings(ctx).roots])


@mcphost.tool(name="list", annotations=_READ_ONLY)
def list_dir(
    ctx: mcphost.ToolContext,
    path: Annotated[str, Field(description="Directory, absolute or relative to the first root.")],
    pattern: Annotated[
        str, Field(max_length=MAX_PATTERN_CHARS, description="Shell-style pattern the entry names must match.")
    ] = "*",
) -> ListResult:
    """List a directory's entries (name, type, size, modification time)."""
    settings = _settings(ctx)
    matches = glob_matcher(pattern)
    jail = Roots(settings.roots)
    real = jail.resolve(path)
    with jail.open_dir(real, path) as fd:
        try:
            # Names first, stat later: a huge directory costs one pass, not one stat per entry.
            with os.scandir(fd) as scan:
                names = sorted(entry.name for entry in scan if matches(entry.name))
            entries = [_entry(name, fd) for name in names[: settings.max_entries]]
        except OSError as error:
            raise os_failure(error, path) from None
    return ListResult(
        path=str(real),
        entries=[entry for entry in entries if entry is not None],
        total=len(names),
        truncated=len(names) > settings.max_entries,
    )


def _entry(name: str, dir_fd: int) -> Entry | None:
    """Describe one entry without following it; ``None`` if it vanished meanwhile."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    mode = info.st_mode
    kind: Literal["file", "dir", "symlink", "other"] = (
        "symlink" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"
    )
    return Entry(name=name, type=kind, size=info.st_size, mtime=_iso(info.st_mtime))


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")


@mcphost.tool(annotations=_READ_ONLY)
def read(
    ctx: mcphost.ToolContext,
    path: Annotated[str, Field(description="File, absolute or relative to the first root.")],
    offset: Annotated[int, Field(ge=0, description="Byte offset to start reading at.")] = 0,
    max_bytes: Annotated[
        int | None, Field(ge=1, description="Most bytes to read; capped by the max_read_bytes setting.")
    ] = None,
) -> ReadResult:
    """Read a text file, or a byte range of it."""
    settings = _settings(ctx)
    if offset < 0:
        raise mcphost.ToolError("offset must be 0 or more")
    if max_bytes is not None and max_bytes < 1:
        raise mcphost.ToolError("max_bytes must be 1 or more")
    limit = settings.max_read_bytes if max_bytes is None else min(max_bytes, settings.max_read_bytes)
    jail = Roots(settings.roots)
    real = jail.resolve(path)
    with jail.open_file(real, path) as (fd, info):
        try:
            _refuse_binary(fd, path)
            data = pread_upto(fd, limit, offset) if offset < info.st_size else b""
        except OSError as error:
            raise os_failure(error, path) from None
    size = max(info.st_size, offset + len(data))  # the file may have grown while we read it
    truncated = offset + len(data) < size
    if truncated:
        # Stop before a character cut in half, so next_offset resumes on a character boundary.
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        decoder.decode(data, final=False)
        pending = len(decoder.getstate()[0])
        if pending < len(data):
            data = data[: len(data) - pending]
    return ReadResult(
        path=str(real),
        text=data.decode("utf-8", errors="replace"),
        offset=offset,
        bytes_read=len(data),
        size=size,
        truncated=truncated,
        next_offset=offset + len(data) if truncated else None,
    )


def _refuse_binary(fd: int, path: str) -> None:
    if is_binary(fd):
        raise mcphost.ToolError(f"{shown(path)} is a binary file (NUL byte in its first 8 KiB); not read")


@mcphost.tool(annotations=_READ_ONLY)
def tail(
    ctx: mcphost.ToolContext,
    path: Annotated[str, Field(description="File, absolute or relative to the first root.")],
    lines: Annotated[int, Field(ge=1, le=MAX_TAIL_LINES, description="How many lines from the end.")] = 100,
) -> TailResult:
    """Return the last lines of a text file, such as a log."""
    settings = _settings(ctx)
    if not 1 <= lines <= MAX_TAIL_LINES:
        raise mcphost.ToolError(f"lines must be between 1 and {MAX_TAIL_LINES}")
    jail = Roots(settings.roots)
    real = jail.resolve(path)
    with jail.open_file(real, path) as (fd, info):
        try:
            _refuse_binary(fd, path)
            end = info.st_size
            data, start = _read_backwards(fd, end, lines, settings.max_read_bytes)
        except OSError as error:
            raise os_failure(error, path) from None
    text, count, offset, truncated = _last_lines(data, start, lines)
    return TailResult(
        path=str(real),
        text=text.decode("utf-8", errors="replace"),
        lines=count,
        offset=offset,
        size=end,
        truncated=truncated,
    )


def _read_backwards(fd: int, end: int, lines: int, cap: int) -> tuple[bytes, int]:
    """Read blocks backwards from ``end`` until ``lines`` whole lines, the file start or
    ``cap`` bytes are reached; returns the bytes and the offset they start at."""
    blocks: list[bytes] = []
    held = newlines = 0
    position = end
    while position > 0 and held < cap:
        size = min(_TAIL_BLOCK, position, cap - held)
        position -= size
        block = pread_upto(fd, size, position)
        if len(block) < size:
            # The file shrank under us (rotation by truncation): keep what is consistent.
            blocks.clear()
            held = newlines = 0
            if not block:
                continue
        blocks.append(block)
        held += len(block)
        newlines += block.count(b"\n")
        # lines + 1 newlines guarantee `lines` complete lines even when the file ends in one.
        if newlines > lines:
            break
    return b"".join(reversed(blocks)), position


def _last_lines(data: bytes, start: int, lines: int) -> tuple[bytes, int, int, bool]:
    """Keep the last ``lines`` lines of ``data`` (which begins at byte ``start`` of the file);
    returns them, how many, their offset and whether the byte cap left fewer than asked."""
    if not data:
        return b"", 0, start, False
    trailing = data.endswith(b"\n")
    parts = (data[:-1] if trailing else data).split(b"\n")
    truncated = False
    if len(parts) > lines:
        parts = parts[-lines:]
    elif start > 0 and len(parts) > 1:
        # Not at the file start, so the first part is a line cut by the byte cap: drop it.
        parts = parts[1:]
        truncated = True
    elif start > 0:
        truncated = True  # one line longer than the cap: return its end
    text = b"\n".join(parts) + (b"\n" if trailing else b"")
    return text, len(parts), start + len(data) - len(text), truncated


@mcphost.tool(annotations=_READ_ONLY, timeout=SEARCH_TIMEOUT, task="optional")
def search(
    ctx: mcphost.ToolContext,
    pattern: Annotated[
        str, Field(min_length=1, max_length=MAX_PATTERN_CHARS, description="Text (or regex) to look for.")
    ],
    path: Annotated[str, Field(description="Directory (searched recursively) or file.")],
    glob: Annotated[
        str, Field(max_length=MAX_PATTERN_CHARS, description="Shell-style pattern the file names must match.")
    ] = "*",
    regex: Annotated[
        bool, Field(description="Treat the pattern as a regular expression (RE2: Python's, without lookaround).")
    ] = False,
    ignore_case: Annotated[bool, Field(description="Match regardless of letter case.")] = False,
) -> SearchResult:
    """Find lines matching a text or regex in the text files under a directory."""
    settings = _settings(ctx)
    finder = line_finder(pattern, regex=regex, ignore_case=ignore_case)
    name_matches = glob_matcher(glob)
    jail = Roots(settings.roots)
    top = jail.resolve(path)
    result = SearchResult(matches=[], truncated=False, files_searched=0, files_skipped=0, skipped=[])
    if os.path.isdir(top):
        files = _walk(jail, top, name_matches, result)
    elif os.path.exists(top):
        files = iter([(str(top), top)])  # a single file: the glob does not apply
    else:
        raise mcphost.ToolError(f"{shown(path)} does not exist")
    for count, (shown_path, real) in enumerate(files, 1):
        if count % PROGRESS_EVERY == 0:
            _progress(ctx, count)
        _search_file(jail, shown_path, real, finder, settings, result)
        if result.truncated:
            break
    return result


def _progress(ctx: mcphost.ToolContext, files: int) -> None:
    """Say how far the search got (a task shows it as its status) and stop here if the call
    was cancelled, which gives its slot back at once; nothing when called outside mcphost
    (a plain function call, as in this plugin's own tests)."""
    try:
        trio.from_thread.check_cancelled()
        trio.from_thread.run(ctx.report_progress, files, None, f"searched {files} files")
    except RuntimeError:  # not in one of mcphost's worker threads
        pass


def _skip(result: SearchResult, path: str, reason: str) -> None:
    result.files_skipped += 1
    if len(result.skipped) < MAX_SKIPPED_REPORTED:
        result.skipped.append(SkippedFile(path=path, reason=reason))


def _walk(
    jail: Roots, top: Path, name_matches: Callable[[str], bool], result: SearchResult
) -> Iterator[tuple[str, Path]]:
    """Yield ``(path shown, resolved path)`` for the files under ``top``, in name order.

    Every entry is resolved before use, so a symlink (to a file or a directory) is followed
    only when its target is inside the roots, and files are reported by their resolved path
    like everywhere else; a symlink leading out is reported by where it sits, never by its
    target. Each directory and file is visited once, which also ends symlink loops.
    """
    seen_dirs = {top}
    seen_files: set[Path] = set()
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            # Listed through a checked descriptor, so a directory swapped for a symlink after
            # it was resolved is refused rather than listed.
            with jail.open_dir(directory, str(directory)) as fd, os.scandir(fd) as scan:
                entries = sorted((e.name, e.is_symlink(), e.is_dir(follow_symlinks=False)) for e in scan)
        except Refused:
            _skip(result, str(directory), "outside the allowed roots")
            continue
        except (mcphost.ToolError, OSError) as error:
            _skip(result, str(directory), f"not readable: {getattr(error, 'strerror', None) or error}")
            continue
        subdirs = []
        for name, is_link, is_dir in entries:
            real = directory / name  # directory is resolved, so only a symlink needs resolving
            if is_link:
                real = Path(os.path.realpath(real))
                if not jail.contains(real):
                    _skip(result, str(directory / name), "outside the allowed roots")
                    continue
                is_dir = os.path.isdir(real)
            if is_dir:
                if real not in seen_dirs:
                    seen_dirs.add(real)
                    subdirs.append(real)
            elif name_matches(name) and real not in seen_files:
                seen_files.add(real)
                yield str(real), real
        stack.extend(reversed(subdirs))


def _search_file(
    jail: Roots, path: str, real: Path, finder: LineFinder, settings: Settings, result: SearchResult
) -> None:
    """Add the file's matching lines to ``result``, or record why it was skipped."""
    try:
        with jail.open_file(real, path) as (fd, info):
            if info.st_size > settings.max_file_bytes_searched:
                _skip(result, path, f"larger than max_file_bytes_searched ({info.st_size} bytes)")
                return
            if is_binary(fd):
                _skip(result, path, "binary")
                return
            result.files_searched += 1
            _scan_lines(fd, path, finder, settings, result)
    except Refused:
        _skip(result, path, "outside the allowed roots")
    except mcphost.ToolError as error:
        _skip(result, path, str(error))
    except OSError as error:
        _skip(result, path, f"not readable: {error.strerror}")


def _scan_lines(fd: int, path: str, finder: LineFinder, settings: Settings, result: SearchResult) -> None:
    # closefd=False: the descriptor belongs to open_file, which closes it.
    with open(fd, "rb", closefd=False) as stream:
        budget = settings.max_file_bytes_searched  # a growing log is read no further than this
        first = 1  # the number of the block's first line
        rest = b""
        while True:
            chunk = stream.read(min(_SCAN_BLOCK, budget))
            budget -= len(chunk)
            last = not chunk or budget <= 0
            data = rest + chunk
            if not last:
                # Whole lines only; a line cut at the block's end goes with the next block.
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
            text = data.decode("utf-8", errors="replace")
            for index, line in finder(text):
                if len(result.matches) >= settings.max_matches:
                    result.truncated = True
                    return
                result.matches.append(SearchMatch(path=path, line=first + index, text=line[:MAX_LINE_CHARS]))
            if last:
                return
            first += text.count("\n")


# --- hooks ----------------------------------------------------------------------------------


@mcphost.hookimpl
def mcphost_settings_model() -> type[Settings]:
    """This plugin's settings: the roots and the read limits."""
    return Settings


@mcphost.hookimpl
def mcphost_tools(settings: Settings) -> list[Callable[..., Any]]:
    """The five read-only tools."""
    return [roots, list_dir, read, tail, search]


@mcphost.hookimpl
def mcphost_ready(settings: Settings) -> bool:
    """Ready when at least one configured root is an existing directory."""
    return any(os.path.isdir(root) for root in settings.roots)
