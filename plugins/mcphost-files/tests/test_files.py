"""Tests of the files plugin: confinement first, then each tool, then through a real daemon."""

import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mcp
import mcphost_files
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from mcphost_files import Settings, list_dir, read, roots, search, tail
from mcphost_files.paths import Refused, Roots
from mcphost_files.patterns import glob_matcher
from pydantic import ValidationError

import mcphost
from mcphost.plugins.definitions import ToolDef, definition_of

SECRET = "TOPSECRET"
OUTSIDE = "outside the allowed roots"


@dataclass
class Tree:
    """A root with files and symlinks, and neighbours it must not reach."""

    base: Path
    root: Path
    outside: Path
    evil: Path


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    base = tmp_path / "x"
    root = base / "root"
    outside = base / "outside"
    evil = base / "root-evil"  # shares the root's name as a prefix
    for directory in (root / "sub" / "deep", outside, evil):
        directory.mkdir(parents=True)
    (outside / "secret.txt").write_text(f"{SECRET} outside\n")
    (evil / "secret.txt").write_text(f"{SECRET} evil\n")

    (root / "notes.txt").write_text("alpha\nBeta\ngamma\ndelta\n")
    (root / "noeol.txt").write_text("one\ntwo\nthree")
    (root / "empty.txt").write_text("")
    (root / "utf8.txt").write_text("héllo wörld\n", encoding="utf-8")
    (root / "blob.bin").write_bytes(b"header\x00\x01\x02 alpha\n")
    (root / "big.log").write_text("alpha in a big file\n" * 400)  # 8000 bytes
    (root / "sub" / "app.log").write_text("start\nERROR disk full\nok\nerror again\n")
    (root / "sub" / "deep" / "x.conf").write_text("listen 80\n# alpha\n")

    (root / "link_in").symlink_to("notes.txt")
    (root / "sub_link").symlink_to("sub", target_is_directory=True)
    (root / "loop").symlink_to(".", target_is_directory=True)
    (root / "out_file").symlink_to(outside / "secret.txt")
    (root / "out_dir").symlink_to(outside, target_is_directory=True)
    (root / "evil_link").symlink_to("../root-evil", target_is_directory=True)
    (root / "dangling_out").symlink_to(outside / "missing.txt")
    return Tree(base, root, outside, evil)


def ctx(tree: Tree, **overrides: Any) -> mcphost.ToolContext:
    """A ToolContext as the host builds it, with small limits so caps are easy to reach."""
    values: dict[str, Any] = {"roots": [tree.root], "max_file_bytes_searched": 4096, **overrides}
    return mcphost.ToolContext(plugin="files", tool="files_test", settings=Settings(**values))


# --- settings and hooks ---------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = Settings()
    assert settings.roots == []
    assert settings.max_read_bytes == 262_144
    assert settings.max_file_bytes_searched == 10_485_760
    assert settings.max_matches == 200
    assert settings.max_entries == 1000


def test_settings_refuse_relative_roots_and_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="absolute"):
        Settings(roots=["var/log"])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        Settings(root=["/var/log"])  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(max_matches=0)


def test_hooks_declare_five_read_only_tools(tree: Tree) -> None:
    assert mcphost_files.mcphost_settings_model() is Settings
    tools = mcphost_files.mcphost_tools(Settings(roots=[tree.root]))
    names = set()
    for fn in tools:
        definition = definition_of(fn, ToolDef)
        names.add(definition.name or definition.fn.__name__)
        assert definition.annotations["readOnlyHint"] is True
        assert definition.fn.__doc__ and "\n" not in definition.fn.__doc__.strip()
    assert names == {"roots", "list", "read", "tail", "search"}


def test_ready_needs_an_existing_root(tree: Tree) -> None:
    assert mcphost_files.mcphost_ready(Settings(roots=[tree.root])) is True
    assert mcphost_files.mcphost_ready(Settings(roots=[tree.base / "missing"])) is False
    assert mcphost_files.mcphost_ready(Settings()) is False


def test_roots_reports_existence(tree: Tree) -> None:
    result = roots(ctx(tree, roots=[tree.root, tree.base / "missing"]))
    assert [(r.path, r.exists) for r in result.roots] == [(str(tree.root), True), (str(tree.base / "missing"), False)]


def test_missing_root_refused_at_call_time(tree: Tree) -> None:
    missing = tree.base / "missing"
    with pytest.raises(mcphost.ToolError, match="does not exist on this host"):
        read(ctx(tree, roots=[missing]), "file.txt")
    with pytest.raises(mcphost.ToolError, match="no roots are configured"):
        read(ctx(tree, roots=[]), "notes.txt")


# --- confinement ----------------------------------------------------------------------------

ESCAPES = [
    "..",
    "../..",
    "../outside/secret.txt",
    "../root-evil/secret.txt",
    "sub/../../outside/secret.txt",
    "sub_link/../../outside/secret.txt",
    "/etc/passwd",
    "/",
    "out_file",
    "out_dir",
    "out_dir/secret.txt",
    "evil_link/secret.txt",
    "dangling_out",
    "notes.txt\x00",
    "\x00/../outside/secret.txt",
]


def _absolute_escapes(tree: Tree) -> list[str]:
    return [
        str(tree.outside / "secret.txt"),
        str(tree.evil / "secret.txt"),  # the prefix sibling
        str(tree.evil),
        str(tree.root) + "/../outside/secret.txt",
        str(tree.root / "out_dir" / "secret.txt"),
    ]


@pytest.mark.parametrize("path", ESCAPES)
@pytest.mark.parametrize("tool", ["read", "tail", "list", "search"])
def test_every_escape_is_refused(tree: Tree, tool: str, path: str) -> None:
    _assert_refused(tree, tool, path)


@pytest.mark.parametrize("tool", ["read", "tail", "list", "search"])
def test_absolute_escapes_are_refused(tree: Tree, tool: str) -> None:
    for path in _absolute_escapes(tree):
        _assert_refused(tree, tool, path)


def _assert_refused(tree: Tree, tool: str, path: str) -> None:
    calls: dict[str, Callable[[], object]] = {
        "read": lambda: read(ctx(tree), path),
        "tail": lambda: tail(ctx(tree), path),
        "list": lambda: list_dir(ctx(tree), path),
        "search": lambda: search(ctx(tree), SECRET, path),
    }
    with pytest.raises(mcphost.ToolError) as caught:
        calls[tool]()
    message = str(caught.value)
    assert OUTSIDE in message
    assert SECRET not in message
    if not os.path.isabs(path):
        # A refusal names what was asked, not where a symlink leads.
        assert str(tree.outside) not in message
        assert str(tree.evil) not in message


def test_prefix_sibling_is_not_inside(tree: Tree) -> None:
    jail = Roots([tree.root])
    assert not jail.contains(tree.evil)
    assert not jail.contains(tree.evil / "secret.txt")
    assert jail.contains(tree.root)
    assert jail.contains(tree.root / "sub")


def test_symlink_inside_root_is_followed(tree: Tree) -> None:
    assert read(ctx(tree), "link_in").text.startswith("alpha\n")
    assert read(ctx(tree), "sub_link/app.log").path == str(tree.root / "sub" / "app.log")


def test_symlinked_root_is_resolved(tree: Tree) -> None:
    alias = tree.base / "alias"
    alias.symlink_to(tree.root, target_is_directory=True)
    assert read(ctx(tree, roots=[alias]), "notes.txt").text.startswith("alpha")
    assert read(ctx(tree, roots=[alias]), str(alias / "notes.txt")).text.startswith("alpha")
    with pytest.raises(Refused):
        read(ctx(tree, roots=[alias]), "../outside/secret.txt")


def test_opened_descriptor_is_checked_again(tree: Tree) -> None:
    # What /proc/self/fd says is checked too: a file swapped in after resolution is refused.
    jail = Roots([tree.root])
    fd = os.open(tree.outside / "secret.txt", os.O_RDONLY)
    try:
        with pytest.raises(Refused):
            jail._verify_open(fd, "notes.txt")
    finally:
        os.close(fd)


def test_list_shows_symlinks_without_following(tree: Tree) -> None:
    result = list_dir(ctx(tree), ".")
    by_name = {entry.name: entry for entry in result.entries}
    assert by_name["out_dir"].type == "symlink"
    assert by_name["out_file"].type == "symlink"
    assert by_name["sub"].type == "dir"
    assert by_name["notes.txt"].type == "file"
    assert "secret.txt" not in by_name
    with pytest.raises(Refused):
        list_dir(ctx(tree), "out_dir")


def test_search_does_not_follow_symlinks_out(tree: Tree) -> None:
    result = search(ctx(tree), SECRET, ".")
    assert result.matches == []
    skipped = {Path(s.path).name: s.reason for s in result.skipped}
    for name in ("out_file", "out_dir", "evil_link", "dangling_out"):
        assert skipped[name] == OUTSIDE


def test_search_survives_loops_and_visits_each_file_once(tree: Tree) -> None:
    result = search(ctx(tree), "disk full", ".")
    assert [(Path(m.path).name, m.line) for m in result.matches] == [("app.log", 2)]


def test_special_files_are_refused_without_blocking(tree: Tree) -> None:
    os.mkfifo(tree.root / "pipe")
    with pytest.raises(mcphost.ToolError, match="not a regular file"):
        read(ctx(tree), "pipe")


# --- read -----------------------------------------------------------------------------------


def test_read_whole_file(tree: Tree) -> None:
    result = read(ctx(tree), "notes.txt")
    assert result.text == "alpha\nBeta\ngamma\ndelta\n"
    assert result.size == 23
    assert result.truncated is False
    assert result.next_offset is None
    assert result.path == str(tree.root / "notes.txt")


def test_read_absolute_path(tree: Tree) -> None:
    assert read(ctx(tree), str(tree.root / "sub" / "app.log")).text.startswith("start\n")


def test_read_with_offset_and_max_bytes(tree: Tree) -> None:
    result = read(ctx(tree), "notes.txt", offset=6, max_bytes=5)
    assert result.text == "Beta\n"
    assert result.truncated is True
    assert result.next_offset == 11
    rest = read(ctx(tree), "notes.txt", offset=result.next_offset)
    assert rest.text == "gamma\ndelta\n"
    assert rest.truncated is False


def test_read_offset_past_end(tree: Tree) -> None:
    result = read(ctx(tree), "notes.txt", offset=1000)
    assert (result.text, result.bytes_read, result.truncated) == ("", 0, False)


def test_read_never_exceeds_max_read_bytes(tree: Tree) -> None:
    result = read(ctx(tree, max_read_bytes=100), "big.log", max_bytes=10_000)
    assert result.bytes_read == 100
    assert result.truncated is True
    assert result.size == 8000


def test_read_stops_on_a_character_boundary(tree: Tree) -> None:
    result = read(ctx(tree), "utf8.txt", max_bytes=2)  # "h" + half of "é"
    assert result.text == "h"
    assert result.next_offset == 1
    assert read(ctx(tree), "utf8.txt", offset=1).text == "éllo wörld\n"


def test_read_refuses_binary_directories_and_missing_files(tree: Tree) -> None:
    with pytest.raises(mcphost.ToolError, match="binary"):
        read(ctx(tree), "blob.bin")
    with pytest.raises(mcphost.ToolError, match="is a directory"):
        read(ctx(tree), "sub")
    with pytest.raises(mcphost.ToolError, match="No such file"):
        read(ctx(tree), "nope.txt")


def test_read_refuses_bad_arguments_when_called_directly(tree: Tree) -> None:
    with pytest.raises(mcphost.ToolError):
        read(ctx(tree), "notes.txt", offset=-1)
    with pytest.raises(mcphost.ToolError):
        read(ctx(tree), "notes.txt", max_bytes=0)


def test_unreadable_file_is_a_clear_error(tree: Tree) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    locked = tree.root / "locked.txt"
    locked.write_text("x")
    locked.chmod(0)
    with pytest.raises(mcphost.ToolError, match="Permission denied"):
        read(ctx(tree), "locked.txt")


# --- tail -----------------------------------------------------------------------------------


def test_tail_last_lines(tree: Tree) -> None:
    result = tail(ctx(tree), "notes.txt", lines=2)
    assert result.text == "gamma\ndelta\n"
    assert result.lines == 2
    assert result.offset == 11
    assert result.truncated is False


def test_tail_more_lines_than_the_file_has(tree: Tree) -> None:
    result = tail(ctx(tree), "notes.txt", lines=50)
    assert result.text == "alpha\nBeta\ngamma\ndelta\n"
    assert (result.lines, result.offset) == (4, 0)


def test_tail_without_final_newline_and_empty(tree: Tree) -> None:
    assert tail(ctx(tree), "noeol.txt", lines=2).text == "two\nthree"
    empty = tail(ctx(tree), "empty.txt")
    assert (empty.text, empty.lines) == ("", 0)


def test_tail_reads_backwards_in_blocks(tree: Tree) -> None:
    big = tree.root / "huge.log"
    big.write_text("".join(f"line {i}\n" for i in range(100_000)))
    result = tail(ctx(tree), "huge.log", lines=3)
    assert result.text == "line 99997\nline 99998\nline 99999\n"
    result = tail(ctx(tree), "huge.log", lines=10_000)
    assert result.lines == 10_000
    assert result.text.startswith("line 90000\n")


def test_tail_byte_cap(tree: Tree) -> None:
    result = tail(ctx(tree, max_read_bytes=50), "big.log", lines=100)
    assert result.truncated is True
    assert result.text == "alpha in a big file\n" * 2  # the cut line before them is dropped
    assert result.offset == 8000 - 40


def test_tail_bounds_and_binary(tree: Tree) -> None:
    for lines in (0, 10_001):
        with pytest.raises(mcphost.ToolError, match="between 1 and 10000"):
            tail(ctx(tree), "notes.txt", lines=lines)
    with pytest.raises(mcphost.ToolError, match="binary"):
        tail(ctx(tree), "blob.bin")


# --- search ---------------------------------------------------------------------------------


def test_search_plain(tree: Tree) -> None:
    result = search(ctx(tree), "alpha", ".")
    found = {(Path(m.path).name, m.line, m.text) for m in result.matches}
    assert found == {("notes.txt", 1, "alpha"), ("x.conf", 2, "# alpha")}
    skipped = {Path(s.path).name: s.reason for s in result.skipped}
    assert skipped["blob.bin"] == "binary"
    assert skipped["big.log"].startswith("larger than max_file_bytes_searched")
    assert result.truncated is False


def test_search_plain_is_literal(tree: Tree) -> None:
    (tree.root / "regexy.txt").write_text("a.c\nabc\n")
    result = search(ctx(tree), "a.c", ".", glob="regexy.txt")
    assert [m.text for m in result.matches] == ["a.c"]


def test_search_regex_and_ignore_case(tree: Tree) -> None:
    assert [m.text for m in search(ctx(tree), "error", "sub").matches] == ["error again"]
    both = search(ctx(tree), "error", "sub", ignore_case=True).matches
    assert [m.text for m in both] == ["ERROR disk full", "error again"]
    regex = search(ctx(tree), r"^(start|ok)$", "sub", regex=True).matches
    assert [(m.line, m.text) for m in regex] == [(1, "start"), (3, "ok")]


def test_search_glob_and_single_file(tree: Tree) -> None:
    assert {Path(m.path).name for m in search(ctx(tree), "alpha", ".", glob="*.conf").matches} == {"x.conf"}
    single = search(ctx(tree), "gamma", "notes.txt")
    assert [(m.path, m.line) for m in single.matches] == [(str(tree.root / "notes.txt"), 3)]


def test_search_caps_matches(tree: Tree) -> None:
    result = search(ctx(tree, max_matches=5, max_file_bytes_searched=100_000), "alpha", ".")
    assert len(result.matches) == 5
    assert result.truncated is True


def test_search_truncates_long_lines(tree: Tree) -> None:
    (tree.root / "long.txt").write_text("needle" + "x" * 2000 + "\n")
    (match,) = search(ctx(tree), "needle", "long.txt").matches
    assert len(match.text) == 500


def test_search_refuses_bad_patterns(tree: Tree) -> None:
    with pytest.raises(mcphost.ToolError, match=r"^invalid regular expression: missing \): \($"):
        search(ctx(tree), "(", ".", regex=True)  # RE2's reason, as text
    with pytest.raises(mcphost.ToolError, match="invalid regular expression"):
        search(ctx(tree), r"(a)\1", ".", regex=True)  # a backreference: not linear, so not RE2
    with pytest.raises(mcphost.ToolError, match="not valid Unicode"):
        search(ctx(tree), "\ud800", ".")
    with pytest.raises(mcphost.ToolError, match="longer than 1000"):
        search(ctx(tree), "a" * 1001, ".")
    with pytest.raises(mcphost.ToolError, match="empty"):
        search(ctx(tree), "", ".")
    with pytest.raises(mcphost.ToolError, match="does not exist"):
        search(ctx(tree), "a", "nope")


def test_search_regex_runs_on_re2(tree: Tree) -> None:
    (tree.root / "app.log").write_text("ok\na\x01b\n")
    result = search(ctx(tree), r"(.+)+\x01", "app.log", regex=True)  # exponential in re: see the daemon test
    assert [m.line for m in result.matches] == [2]
    assert [m.line for m in search(ctx(tree), r"(?i)^OK$", "app.log", regex=True).matches] == [1]


def test_search_literal_ignoring_case_and_glob_with_a_file_name_that_is_not_utf8(tree: Tree) -> None:
    (tree.root / os.fsdecode(b"caf\xe9.log")).write_text("NEEDLE here\n")
    result = search(ctx(tree), "needle", ".", glob="caf?.log", ignore_case=True)
    assert [m.text for m in result.matches] == ["NEEDLE here"]


names = st.text(st.sampled_from("ab-]![^\\.*?/\n\u00e9"), max_size=8)
globs = st.text(st.sampled_from("ab-]![^\\*?.z\u00e9"), max_size=10)


@given(pattern=globs, name=names)
def test_globs_match_what_fnmatch_matches(pattern: str, name: str) -> None:
    assert glob_matcher(pattern)(name) == fnmatch.fnmatchcase(name, pattern)


# --- list -----------------------------------------------------------------------------------


def test_list_entries(tree: Tree) -> None:
    result = list_dir(ctx(tree), "sub")
    assert result.path == str(tree.root / "sub")
    assert [(e.name, e.type) for e in result.entries] == [("app.log", "file"), ("deep", "dir")]
    app = result.entries[0]
    assert app.size == 37
    assert app.mtime.endswith("+00:00")
    assert (result.total, result.truncated) == (2, False)


def test_list_pattern_and_cap(tree: Tree) -> None:
    assert [e.name for e in list_dir(ctx(tree), ".", pattern="*.txt").entries] == [
        "empty.txt",
        "noeol.txt",
        "notes.txt",
        "utf8.txt",
    ]
    capped = list_dir(ctx(tree, max_entries=2), ".", pattern="*.txt")
    assert [e.name for e in capped.entries] == ["empty.txt", "noeol.txt"]
    assert (capped.total, capped.truncated) == (4, True)


def test_list_refuses_a_file(tree: Tree) -> None:
    with pytest.raises(mcphost.ToolError, match="Not a directory"):
        list_dir(ctx(tree), "notes.txt")


# --- through the daemon ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_daemon_serves_and_confines(mcphost_daemon: Any, tree: Tree, mode: str) -> None:
    daemon = mcphost_daemon({"plugins": {"enable": ["files"], "files": {"settings": {"roots": [str(tree.root)]}}}})
    async with mcp.Client(daemon.url, mode=mode) as client:
        listed = await client.list_tools()
        tools = {tool.name: tool for tool in listed.tools}
        assert {"files_roots", "files_list", "files_read", "files_tail", "files_search"} <= set(tools)
        assert tools["files_read"].output_schema is not None
        assert "ctx" not in tools["files_read"].input_schema["properties"]
        assert tools["files_read"].annotations is not None
        assert tools["files_read"].annotations.read_only_hint is True

        good = await client.call_tool("files_read", {"path": "notes.txt"})
        assert not good.is_error
        assert good.structured_content["text"] == "alpha\nBeta\ngamma\ndelta\n"

        bad = await client.call_tool("files_read", {"path": "../outside/secret.txt"})
        assert bad.is_error is True
        text = " ".join(block.text for block in bad.content if block.type == "text")
        assert OUTSIDE in text
        assert SECRET not in text
        assert "Traceback" not in text

        # A default-sized read (and the longest tail) fits the host's default result limit.
        (tree.root / "large.log").write_text("".join(f"2026-01-01 host app[1]: event {i}\n" for i in range(60_000)))
        large = await client.call_tool("files_read", {"path": "large.log"})
        assert not large.is_error, large.content
        assert large.structured_content["truncated"] is True
        longest = await client.call_tool("files_tail", {"path": "large.log", "lines": 10_000})
        assert not longest.is_error, longest.content
        assert longest.structured_content["text"].endswith("event 59999\n")

        out = await client.call_tool("files_search", {"pattern": SECRET, "path": "."})
        assert not out.is_error
        assert out.structured_content["matches"] == []


async def test_catastrophic_regex_answers_and_the_daemon_keeps_answering(mcphost_daemon: Any, tree: Tree) -> None:
    # A log line of 48 characters: Python's re would need some 2**48 steps for this pattern,
    # holding the interpreter (the event loop, /health, every other caller) all the while.
    (tree.root / "app.log").write_text("2026-01-01T00:00:00Z host app[1]: service ready\n" * 20)
    config = {"plugins": {"enable": ["files"], "files": {"settings": {"roots": [str(tree.root)]}}}}
    daemon = mcphost_daemon(config)
    searched = trio.Event()
    async with httpx.AsyncClient(timeout=2.0) as http, mcp.Client(daemon.url, mode="2026-07-28") as client:

        async def catastrophic() -> None:
            arguments = {"pattern": r"(.+)+\x00", "path": "app.log", "regex": True}
            result = await client.call_tool("files_search", arguments)
            assert not result.is_error, result.content
            assert result.structured_content["matches"] == []
            searched.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(catastrophic)
            answered = 0
            while not searched.is_set() or answered < 3:
                # The witness: /health answers within 2 s all along (httpx raises past it).
                assert (await http.get(daemon.base_url + "/health")).status_code == 200
                answered += 1
                await trio.sleep(0.1)
