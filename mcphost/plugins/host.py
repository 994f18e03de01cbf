"""Plugin discovery and loading: entry points in group ``mcphost`` and configured paths,
each plugin imported, validated and started inside its own fence.

One broken plugin (an import error, a raising hook, a bad return shape, invalid settings,
a name clash) is recorded as failed with the reason, and every other plugin still loads.
The result of loading is a list of :class:`PluginRecord` (what ``mcphost plugins`` and
``/ready`` show) and the :class:`~mcphost.plugins.registry.Registry` of what they serve.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import shlex
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any, Literal, cast

import mcp_types as types
import pluggy
import structlog
import trio
from pydantic import BaseModel, ValidationError

from mcphost.core.plugin_tables import HostedTables
from mcphost.core.problems import Loaded, Problem, problems_from
from mcphost.core.rate import Rate
from mcphost.plugins import damage, fence, hookspecs
from mcphost.plugins.definitions import PromptDef, ResourceDef, ToolDef, definition_of
from mcphost.plugins.limits import ToolLimits, plugin_pool, waiting
from mcphost.plugins.registry import (
    RegisteredPrompt,
    RegisteredResource,
    RegisteredTool,
    Registry,
    build_prompt,
    build_resource,
    build_tool,
    combine,
    public_name,
    remote_only,
)
from mcphost.plugins.settings import PluginSettings
from mcphost.plugins.worker.launch import discard_early
from mcphost.plugins.worker.supervisor import (
    PluginWorker,
    Process,
    WorkerSpec,
    WorkerStartError,
    catalogue_of,
    handling_bound,
    message_bound,
    spawn,
    stop_now,
)
from mcphost.plugins.worker.zygote_client import Zygotes

log = structlog.get_logger("mcphost.plugins")

Status = Literal["loaded", "failed", "disabled"]

READY_TIMEOUT = 5.0
"""Seconds a plugin's readiness check may take before it counts as not ready."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A plugin found by discovery, not yet imported."""

    name: str
    origin: str
    version: str | None
    load: Callable[[], Any]
    module: str
    """The name of the module the plugin is (or is in), as ``sys.modules`` will know it."""
    path: Path | None = None
    """The file or package directory of a plugin from ``[plugins] paths``."""
    server: tuple[str, ...] = ()
    """The command line of an existing MCP server hosted as this plugin (``[plugins.<name>] command``)."""
    distribution: str | None = None
    """The name of the installed package whose entry point this plugin is."""


@dataclass(frozen=True)
class PluginRecord:
    """One plugin's state: what ``mcphost plugins`` prints and ``/ready`` reports."""

    name: str
    origin: str
    version: str | None
    status: Status
    required: bool = False
    error: str | None = None
    problems: tuple[Problem, ...] = ()
    hooks: tuple[str, ...] = ()
    settings: PluginSettings | None = None
    registry: Registry = field(default_factory=Registry)
    module: ModuleType | None = field(default=None, repr=False, compare=False)
    modules: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    """Names of the modules importing the plugin added to ``sys.modules`` (its own package's)."""
    impls: Mapping[str, pluggy.HookImpl] = field(default_factory=dict, repr=False, compare=False)
    """This version's hook implementations by hook name: the plugin manager holds only the
    newest version, and a reload shuts the previous one down with its own hooks."""
    path: Path | None = None
    """The file or package directory of a plugin from ``[plugins] paths``."""
    fingerprint: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    reload_error: str | None = None
    """Why the last reload of this plugin failed; the version described here keeps serving."""
    isolation: str = "inline"
    """``process`` (served by ``worker``) or ``inline``."""
    worker: PluginWorker | None = field(default=None, repr=False, compare=False)
    """The worker process serving the plugin, with ``isolation = "process"``."""
    files: tuple[str, ...] = field(default=(), repr=False, compare=False)
    """The source files of a worker's plugin, as the worker imported them."""

    @property
    def worker_failed(self) -> str | None:
        """Why the plugin's worker was given up on (it kept ending), if it was; the record
        still says ``loaded``, as the plugin loaded, but nothing serves its calls."""
        return self.worker.failed if self.worker is not None else None

    @property
    def restarts(self) -> int | None:
        """Times the plugin's worker was started again after it ended; None with no worker."""
        return self.worker.restarts if self.worker is not None else None

    @property
    def memory_kills(self) -> int | None:
        """Times the kernel killed the plugin's worker for being over its memory limit; None with no worker."""
        return self.worker.memory_kills if self.worker is not None else None

    @property
    def output_dropped(self) -> int | None:
        """Lines its workers wrote that were not logged, over its ``output_rate``; None with no worker."""
        return self.worker.output_dropped if self.worker is not None else None

    @property
    def tools(self) -> list[str]:
        """Public names of the plugin's tools."""
        return list(self.registry.tools)

    def occupancy(self) -> tuple[int, int, int]:
        """Calls running, the sum of the concurrency caps, and calls waiting for a slot, over
        the pools the plugin's calls run in: its own, and those of entries with a limit of their own."""
        registry = self.registry
        entries: Iterable[Any] = (
            *registry.tools.values(),
            *registry.resources.values(),
            *registry.templates,
            *registry.prompts.values(),
        )
        pools = {id(entry.limits.pool): entry.limits.pool for entry in entries}.values()
        return (
            sum(int(pool.borrowed_tokens) for pool in pools),
            sum(int(pool.total_tokens) for pool in pools),
            sum(waiting(pool) for pool in pools),
        )

    def failed(self, error: str, problems: Sequence[Problem] = ()) -> PluginRecord:
        """This record marked failed with ``error``, serving nothing."""
        return replace(self, status="failed", error=error, problems=tuple(problems), registry=Registry())


def discover(paths: Sequence[Path]) -> list[Candidate]:
    """Installed plugins (entry-point group ``mcphost``) and plugin files or packages at ``paths``."""
    # The import system caches directory listings; a package installed since start-up is
    # invisible to a re-scan without this.
    importlib.invalidate_caches()
    found = [_entry_point(ep) for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT_NAME)]
    return sorted(found + [_path(path) for path in paths], key=lambda c: c.name)


def find(name: str, paths: Sequence[Path], distribution: str | None) -> list[Candidate]:
    """What :func:`discover` finds of the plugin ``name`` where it was found before: in the
    installed package ``distribution`` as it is now, else at ``paths``. A worker loads its one
    plugin so, without reading every installed package's metadata."""
    importlib.invalidate_caches()
    if distribution is None:
        return [candidate for candidate in map(_path, paths) if candidate.name == name]
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return []  # uninstalled since
    return [_entry_point(ep) for ep in dist.entry_points.select(group=hookspecs.PROJECT_NAME, name=name)]


def _entry_point(ep: importlib.metadata.EntryPoint) -> Candidate:
    if ep.dist is None:
        return Candidate(ep.name, f"entry point {ep.value}", None, ep.load, ep.module)
    # Read once: each of a distribution's .name, .version and .metadata parses its METADATA file.
    metadata = ep.dist.metadata
    name, version = metadata["Name"], metadata["Version"]
    return Candidate(ep.name, f"package {name} {version}", version, ep.load, ep.module, distribution=name)


def _path(path: Path) -> Candidate:
    name = path.stem if path.suffix == ".py" else path.name
    module = f"mcphost_local_plugin_{name}"
    return Candidate(name, f"path {path}", None, functools.partial(_import_path, path, module), module, path)


def _import_path(path: Path, module_name: str) -> ModuleType:
    """Import a plugin from a ``.py`` file or a package directory under a private module name."""
    location = path / "__init__.py" if path.is_dir() else path
    spec = importlib.util.spec_from_file_location(module_name, location, loader=_Fresh(module_name, str(location)))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import a plugin from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # what failed is taken out again by PluginHost._load
    spec.loader.exec_module(module)
    return module


class _Fresh(importlib.machinery.SourceFileLoader):
    """Compiles a path plugin's file from its source at every load. Python's bytecode cache
    takes a compiled copy as current while the source's size and whole-second modification
    time match, so a file edited in place within the second, to the same size, was loaded
    as it was before the edit; the reload itself had seen the change (nanosecond times)."""

    def get_code(self, fullname: str) -> CodeType:
        """The file's code, compiled from what it holds now."""
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


class PluginHost:
    """The plugin manager: loads plugins per the config, reloads what changed, and runs
    their lifecycle hooks."""

    def __init__(self, loaded: Loaded[HostedTables]):
        self.loaded = loaded
        self.config = loaded.config
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.records: list[PluginRecord] = []
        self.threads = trio.CapacityLimiter(self.config.limits.max_threads)
        """The thread budget every plugin's sync calls and hooks share."""
        self._shares: dict[str, trio.CapacityLimiter] = {}
        """Each plugin's share of the budget: threads its calls and hooks may hold."""
        self._lanes: dict[str, trio.CapacityLimiter] = {}
        self._spawned: dict[str, Process | WorkerStartError] = {}
        """Workers started ahead of :meth:`_plan` (all at once), by plugin name, or why not."""
        self.zygotes: Zygotes | None = None
        """The fork server workers are forked from, once :meth:`start_fork_server` has run."""
        self.on_change: Callable[[], Awaitable[None]] | None = None
        """Called when what a plugin serves changed between reloads (what a hosted server lists)."""
        self.on_stall: Callable[[str, str | None], None] | None = None
        """Told of each stall a worker's own watchdog noticed (plugin, and what happened once it
        stopped the call), to count it and mark the plugin degraded as for inline code."""

    def start_fork_server(self, candidates: Sequence[Candidate]) -> None:
        """Start the fork server now (or take over the one the command started), if some
        enabled plugin of ``candidates`` runs isolated, so that it has imported the runtime by
        the time the first worker is wanted; else end the one started (the daemon's main thread only)."""
        if self._wants_fork_server(candidates):
            self.zygotes = Zygotes()
            self.zygotes.ensure()
        else:
            discard_early()

    def _wants_fork_server(self, candidates: Sequence[Candidate]) -> bool:
        plugins = self.config.plugins
        return plugins.fork_server and any(
            not c.server
            and _enabled(c.name, plugins.enable, plugins.disable)
            and plugins.for_plugin(c.name).isolation == "process"
            for c in candidates
        )

    @property
    def registry(self) -> Registry:
        """Everything the loaded plugins serve."""
        return combine(r.registry for r in self.records if r.status == "loaded")

    async def load_all(self, candidates: Sequence[Candidate] | None = None) -> list[PluginRecord]:
        """Load every enabled plugin of ``candidates`` (by default, every plugin :func:`discover`
        finds and every server the config declares), each inside its own fence."""
        candidates = self.candidates() if candidates is None else candidates
        self._spawned = await self._spawn_workers(candidates, {})
        self.records = await self._plan(candidates, {})
        self._discard_spawned()
        return self.records

    def _threads(self, name: str) -> tuple[trio.CapacityLimiter, trio.CapacityLimiter]:
        """``name``'s share of threads and the process's budget."""
        share = self._shares.setdefault(name, trio.CapacityLimiter(self.config.limits.max_threads_per_plugin))
        return share, self.threads

    def _lane(self, name: str) -> fence.Tokens:
        """The tokens a thread running ``name``'s import or hooks holds: one lane per plugin,
        so a plugin whose import or hook hangs has at most one thread left behind."""
        return fence.Tokens(self._lanes.setdefault(name, trio.CapacityLimiter(1)), self._threads(name))

    async def reload(self, loaded: Loaded[HostedTables]) -> Reload:
        """Apply ``loaded`` and the installed plugins as they are now, reloading only what changed.

        A changed plugin's new version is imported and validated off to the side; if it fails,
        the old version keeps serving (its record carries ``reload_error``). The caller
        publishes the new registry, then calls :meth:`retire` on what was replaced.
        """
        self.loaded, self.config = loaded, loaded.config
        self.threads.total_tokens = self.config.limits.max_threads
        for share in self._shares.values():
            share.total_tokens = self.config.limits.max_threads_per_plugin
        previous = {r.name: r for r in self.records}
        # Off the loop: discovery reads every installed package's metadata, a file or two
        # each, and a thread a hung import left spinning makes each read wait for the GIL.
        candidates = await trio.to_thread.run_sync(self.candidates)
        if self.zygotes is not None:
            # A fork server that imported what was upgraded since is replaced, else kept.
            stale = await trio.to_thread.run_sync(self.zygotes.stale)
            self.zygotes.renew(self._wants_fork_server(candidates), stale)
        else:
            self.start_fork_server(candidates)
        self._spawned = await self._spawn_workers(candidates, previous)
        records = await self._plan(candidates, previous)
        self._discard_spawned()
        for index, record in enumerate(records):
            old = previous.get(record.name)
            # Only what serves anew starts: a version that kept serving (a failed reload
            # gives it a new record) has run its start-up hook, and its worker is running.
            if record.status == "loaded" and (old is None or _serving(record) != _serving(old)):
                records[index] = await self._start(record, old)
        serving = {_serving(r) for r in records if r.status == "loaded"}
        retired = [r for r in previous.values() if r.status == "loaded" and _serving(r) not in serving]
        for record in retired:
            if not any(r.name == record.name and r.status == "loaded" for r in records):
                # Uninstalled or disabled: forget it entirely, so that when it comes back
                # (perhaps a newer version) it is registered and imported afresh.
                self._drop(record)
        self.records = records
        changed = sorted({r.name for r in records if _fresh(r, previous.get(r.name))} | {r.name for r in retired})
        # Failed plugins are tried again on every reload, so one still failing failed this reload too.
        failed = [r.name for r in records if r.reload_error or r.status == "failed"]
        return Reload(changed=changed, failed=failed, retired=retired)

    async def retire(self, records: Sequence[PluginRecord]) -> None:
        """Shut down plugin versions that a reload replaced or removed."""
        for record in records:
            await self._stop(record)

    def candidates(self) -> list[Candidate]:
        """Every plugin there is to load: discovered, and the MCP servers the config declares."""
        return sorted(discover(self.config.plugins.paths) + self._servers(), key=lambda c: c.name)

    async def _plan(self, candidates: Sequence[Candidate], previous: dict[str, PluginRecord]) -> list[PluginRecord]:
        plugins = self.config.plugins
        records: list[PluginRecord] = []
        served = Registry()
        seen: set[str] = set()
        for candidate in candidates:
            old = previous.get(candidate.name)
            base = PluginRecord(
                candidate.name,
                candidate.origin,
                candidate.version,
                "loaded",
                plugins.for_plugin(candidate.name).required,
                path=candidate.path,
                isolation="process" if candidate.server else plugins.for_plugin(candidate.name).isolation,
            )
            if candidate.name in seen:
                record = base.failed(f"another plugin named {candidate.name!r} is already loaded")
            elif not _enabled(candidate.name, plugins.enable, plugins.disable):
                record = replace(base, status="disabled")
            elif self._unchanged(candidate, old):
                assert old is not None
                record = replace(old, required=base.required, reload_error=None) if old.reload_error else old
            else:
                record = await self._replace(candidate, base, old, served)
            seen.add(candidate.name)
            if record.status == "loaded":
                served = served.merged(record.registry)
                if _fresh(record, old):
                    log.info("plugin loaded", plugin=record.name, origin=record.origin, tools=len(record.tools))
            elif record.status == "failed" and _fresh(record, old):
                log.error("plugin failed to load", plugin=record.name, origin=record.origin, error=record.error)
            records.append(record)
        return records

    async def _replace(
        self, candidate: Candidate, base: PluginRecord, old: PluginRecord | None, served: Registry
    ) -> PluginRecord:
        """Load ``candidate``; if it replaces a working ``old`` and fails, keep ``old`` serving."""
        aside = self._drop(old) if old is not None and old.status == "loaded" else None
        if base.isolation == "process":
            record = self._load_isolated(candidate, base)
        else:
            record = await self._load(candidate, base)
        if record.status == "loaded" and (clashes := served.clashes(record.registry)):
            self._drop(record)
            if record.worker is not None:
                record.worker.close_now()
            record = record.failed(f"already served: {', '.join(clashes)}")
        if record.status == "failed" and aside is not None and old is not None:
            self._restore(old, aside)
            log.error("plugin reload failed; the previous version keeps serving", plugin=old.name, error=record.error)
            return replace(old, reload_error=record.error)
        return (
            replace(record, fingerprint=self._fingerprint(candidate, record)) if record.status == "loaded" else record
        )

    def _drop(self, record: PluginRecord) -> dict[str, ModuleType]:
        """Unregister ``record``'s module and take its modules out of ``sys.modules``, so the
        next import is fresh; calls running on the old objects are unaffected. Returns what
        was taken out, for :meth:`_restore`."""
        self._unregister(record.name)
        return _forget(_module_names(record))

    def _restore(self, record: PluginRecord, aside: dict[str, ModuleType]) -> None:
        sys.modules.update(aside)
        self._unregister(record.name)
        if record.module is not None:
            self.pm.register(record.module, name=record.name)

    def _unchanged(self, candidate: Candidate, old: PluginRecord | None) -> bool:
        """Whether ``old`` is serving ``candidate`` as it is now (nothing to reload)."""
        return old is not None and old.status == "loaded" and old.fingerprint == self._fingerprint(candidate, old)

    def _fingerprint(self, candidate: Candidate, record: PluginRecord) -> tuple[Any, ...]:
        """What a reload compares: origin, version, the config that shapes the plugin, and
        the modification times of its source files."""
        plugin_config = self.config.plugins.for_plugin(candidate.name).model_dump_json()
        host = (self.config.limits.model_dump_json(), self.config.tools.model_dump_json())
        return (candidate.origin, candidate.version, plugin_config, host, _source_times(record))

    def problems(self) -> list[Problem]:
        """Config problems found while loading: plugin settings and tool tables that do not
        fit the plugin's model and tools."""
        return [p for r in self.records for p in r.problems]

    def warnings(self) -> list[Problem]:
        """What is amiss with the plugins rather than with the config: plugins that failed to
        load (for a reason other than their settings), and :meth:`unmatched`."""
        failed = [
            self.loaded.problem(("plugins", r.name), f"plugin failed to load: {r.error}", warning=True)
            for r in self.records
            if r.status == "failed" and not r.problems
        ]
        return failed + self.unmatched()

    def unmatched(self) -> list[Problem]:
        """``[plugins.<name>]`` tables and ``enable``/``disable`` patterns that name no plugin
        found: a misspelt name, or a plugin not installed (yet, or any more)."""
        plugins, found = self.config.plugins, []
        names = sorted(r.name for r in self.records)
        there = f"the plugins found are {', '.join(names)}" if names else "no plugin is installed"
        for name in sorted(plugins.configured() - set(names)):
            found.append(self.loaded.problem(("plugins", name), f"no plugin is named {name!r}; {there}", warning=True))
        for key in ("enable", "disable"):
            for pattern in getattr(plugins, key):
                # "*" matches nothing only where nothing is installed, which the count says.
                if pattern != "*" and not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                    message = f"{pattern!r} matches no plugin; {there}"
                    found.append(self.loaded.problem(("plugins", key), message, warning=True))
        return found

    async def _off_loop(self, name: str, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, a plugin's load-time code, in a thread of the plugin's lane, within
        ``[limits] load_timeout``; raises :class:`_LoadError` when it overruns."""
        timeout = self.config.limits.load_timeout
        try:
            with trio.fail_after(timeout):
                return await fence.in_thread(fn, self._lane(name))
        except trio.TooSlowError:
            raise _LoadError(f"{what} did not finish within {timeout:g}s (its thread may linger)") from None

    async def _load(self, candidate: Candidate, record: PluginRecord) -> PluginRecord:
        name = candidate.name
        before = set(sys.modules)
        package = candidate.module.partition(".")[0]
        try:
            module = await self._off_loop(name, "import", candidate.load)
        except BaseException as error:
            if fence.own_cancellation(error):
                raise
            log.error("plugin import failed", plugin=name, exc_info=error)
            _forget(_own_modules(before, package))  # a half-done import must not be found next time
            overran = isinstance(error, _LoadError)
            return record.failed(str(error) if overran else f"import failed: {type(error).__name__}: {error}")
        added = _own_modules(before, package)
        if damaged := damage.check_std_streams(name, "import"):
            _forget(added)
            return record.failed(f"import closed or replaced the daemon's {' and '.join(damaged)}")
        try:
            self.pm.register(module, name=name)
        except BaseException as error:
            _forget(added)
            return record.failed(f"not a valid plugin: {error}")
        record = replace(record, module=module, modules=added | {candidate.module})
        callers = self.pm.get_hookcallers(module) or []
        unknown = [h.name for h in callers if h.spec is None]
        if unknown:
            self._drop(record)
            return record.failed(f"implements unknown hook(s) {', '.join(unknown)}; see mcphost.plugins.hookspecs")
        impls = {h.name: i for h in callers for i in h.get_hookimpls() if i.plugin is module}
        record = replace(record, hooks=tuple(sorted(impls)), impls=impls)
        try:
            settings, registry = await self._off_loop(name, "loading", functools.partial(self._build, name))
        except _LoadError as error:
            self._drop(record)
            return record.failed(str(error), error.problems)
        except BaseException as error:
            if fence.own_cancellation(error):
                raise
            self._drop(record)
            return record.failed(f"loading raised {type(error).__name__}: {error}")
        return replace(record, settings=settings, registry=registry)

    async def _spawn_workers(
        self, candidates: Sequence[Candidate], previous: Mapping[str, PluginRecord]
    ) -> dict[str, Process | WorkerStartError]:
        """Start, side by side, the workers :meth:`_plan` will load: of the enabled isolated
        plugins that are new or changed (off the event loop, until each has loaded its plugin)."""
        plugins = self.config.plugins
        names = Counter(c.name for c in candidates)
        wanted = {}
        for candidate in candidates:
            if names[candidate.name] > 1:
                continue  # refused by _plan as a duplicate, or loaded there on its own
            old = previous.get(candidate.name)
            isolated = candidate.server or plugins.for_plugin(candidate.name).isolation == "process"
            if (
                isolated
                and not self._unchanged(candidate, old)
                and _enabled(candidate.name, plugins.enable, plugins.disable)
            ):
                wanted[candidate.name] = self._spec(candidate)
        if not wanted:
            return {}

        def spawn_all() -> dict[str, Process | WorkerStartError]:
            # A worker takes a while to load its plugin.
            with ThreadPoolExecutor(len(wanted)) as pool:
                return dict(zip(wanted, pool.map(self._spawn_or_error, wanted.values()), strict=True))

        return await trio.to_thread.run_sync(spawn_all)

    def _discard_spawned(self) -> None:
        """Stop the workers started ahead that :meth:`_plan` did not take."""
        for left in self._spawned.values():
            if isinstance(left, Process):
                stop_now(left)
        self._spawned = {}

    def _spawn_or_error(self, spec: WorkerSpec) -> Process | WorkerStartError:
        try:
            return spawn(spec, self.zygotes)
        except WorkerStartError as error:
            return error

    def _servers(self) -> list[Candidate]:
        """The existing MCP servers the config declares as plugins (``[plugins.<name>] command``)."""
        plugins = self.config.plugins
        found = []
        for name in sorted(plugins.configured()):
            table = plugins.for_plugin(name)
            if table.command:
                command = (*table.command, *table.args)
                origin = f"command {shlex.join(command)}"
                found.append(Candidate(name, origin, None, lambda: None, "", server=command))
        return found

    def _load_isolated(self, candidate: Candidate, record: PluginRecord) -> PluginRecord:
        """Start a worker process (or the server) for ``candidate`` and take its tools from it."""
        spec = self._spec(candidate)
        started = self._spawned.pop(candidate.name, None) or self._spawn_or_error(spec)
        try:
            if isinstance(started, WorkerStartError):
                raise started
            worker = PluginWorker(spec, started, self.zygotes)
            worker.on_stall = self._stalled
            registry = (
                self._server_catalogue(candidate.name, worker)
                if candidate.server
                else catalogue_of(worker, candidate.name, self._threads(candidate.name))
            )
        except WorkerStartError as error:
            problems = [self.loaded.problem(tuple(p["key"].split(".")), p["message"]) for p in error.problems]
            return record.failed(str(error), problems)
        except (ValueError, ValidationError) as error:
            worker.close_now()
            return record.failed(f"its server lists something mcphost cannot serve: {error}")
        if candidate.server:
            worker.on_listed_changed = functools.partial(self._relisted, candidate.name, worker)
        hello = worker.hello
        return replace(
            record,
            version=hello.get("version") or record.version,
            hooks=tuple(hello.get("hooks", ())),
            registry=registry,
            worker=worker,
            files=tuple(hello.get("files", ())),
        )

    def _stalled(self, plugin: str, degraded: str | None) -> None:
        if self.on_stall is not None:
            self.on_stall(plugin, degraded)

    async def _relisted(self, name: str, worker: PluginWorker) -> None:
        """What a hosted server lists changed: its catalogue entries follow, unless what it
        lists now cannot be served or clashes with another plugin (then the old entries stay)."""
        index = next((i for i, r in enumerate(self.records) if r.worker is worker and r.status == "loaded"), None)
        if index is None:  # replaced or stopped since
            return
        try:
            registry = self._server_catalogue(name, worker)
        except (ValueError, ValidationError) as error:
            log.error("what the server lists now cannot be served; its old entries stay", plugin=name, error=str(error))
            return
        others = combine(r.registry for i, r in enumerate(self.records) if i != index and r.status == "loaded")
        if clashes := others.clashes(registry):
            log.error("what the server lists now clashes; its old entries stay", plugin=name, clashes=clashes)
            return
        self.records[index] = replace(self.records[index], registry=registry)
        if self.on_change is not None:
            await self.on_change()

    def _server_catalogue(self, name: str, worker: PluginWorker) -> Registry:
        """Catalogue entries for what an existing server listed, named and limited as a
        plugin's are: its tools and prompts under the plugin's prefix (its tools' own names are
        what ``[plugins.<name>.tools]`` keys), its resources and templates by their URIs."""
        defaults, own = self.config.limits, self.config.plugins.for_plugin(name)
        prefix = name if own.prefix is None else own.prefix
        pool, threads, max_length = plugin_pool(defaults, own), self._threads(name), self.config.tools.max_name_length
        plain = ToolLimits.resolve(defaults, own, ToolDef(fn=lambda: None), None, pool, threads)
        hello = worker.hello
        tools, names = {}, {}
        for listed in hello.get("tools", ()):
            short = listed["name"]
            limits = ToolLimits.resolve(defaults, own, ToolDef(fn=lambda: None), own.tools.get(short), pool, threads)
            public = public_name(prefix, short, max_length)
            wire = types.Tool.model_validate({**listed, "name": public}, by_name=False)
            names[public] = short
            # "ctx": a server may send progress and questions during any call.
            tools[public] = RegisteredTool(public, name, None, wire, limits, None, "ctx", remote=worker)
        prompts, prompt_names = {}, {}
        for listed in hello.get("prompts", ()):
            public = public_name(prefix, listed["name"], max_length)
            prompt = types.Prompt.model_validate({**listed, "name": public}, by_name=False)
            prompt_names[public] = listed["name"]
            render = PromptDef(remote_only, public)
            prompts[public] = RegisteredPrompt(public, name, None, prompt, plain, None, render, "ctx", worker)
        resources = {}
        for listed in hello.get("resources", ()):
            static = types.Resource.model_validate(listed, by_name=False)
            uri = str(static.uri)
            resources[uri] = RegisteredResource(name, ResourceDef(remote_only, uri), None, static, plain, worker)
        templates = []
        for listed in hello.get("templates", ()):
            template = types.ResourceTemplate.model_validate(listed, by_name=False)
            definition = ResourceDef(remote_only, template.uri_template)
            from mcp.shared.uri_template import UriTemplate  # only for a plugin with resource templates

            parsed = UriTemplate.parse(template.uri_template)
            templates.append(RegisteredResource(name, definition, parsed, template, plain, worker))
        worker.names, worker.prompt_names = names, prompt_names
        return Registry(tools, resources, tuple(templates), prompts)

    def _spec(self, candidate: Candidate) -> WorkerSpec:
        """What a worker of ``candidate`` runs: only this plugin's part of the config, never the
        rest (keys, tokens), and the plugin loaded inline there."""
        config = self.config
        own = config.plugins.for_plugin(candidate.name)
        table = own.model_dump(mode="json") | {"isolation": "inline", "env": {}, "memory_max": None}
        paths = [str(candidate.path)] if candidate.path is not None else []
        data = {
            "plugins": {"enable": [candidate.name], "paths": paths, candidate.name: table},
            "limits": config.limits.model_dump(mode="json"),
            "tools": config.tools.model_dump(mode="json"),
        }
        return WorkerSpec(
            candidate.name,
            data,
            self.loaded.source,
            own.env,
            config.log.level,
            own.max_restarts,
            own.restart_window,
            own.memory_max,
            own.max_open_files,
            own.max_tasks,
            own.cpu_weight,
            candidate.server,
            str(own.cwd) if own.cwd is not None else None,
            tuple(own.roots),
            candidate.distribution,
            message_bound(config.limits, own),
            handling_bound(config.limits, own),
            output_rate=Rate.parse(own.output_rate),
        )

    def close(self) -> None:
        """End the worker processes of plugins loaded but never started (``check-config``, ``plugins``)."""
        for record in self.records:
            if record.worker is not None:
                record.worker.close_now()

    def _build(self, name: str) -> tuple[PluginSettings, Registry]:
        plugin_config = self.config.plugins.for_plugin(name)
        model = self._call_sync(name, "mcphost_settings_model", {}) or PluginSettings
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise _LoadError(f"mcphost_settings_model returned {model!r}, not a PluginSettings subclass")
        try:
            settings = cast(PluginSettings, model.model_validate(plugin_config.settings))
        except ValidationError as error:
            problems = problems_from(error, self.loaded.text, ("plugins", name, "settings"), model)
            summary = "; ".join(f"{p.key}: {p.message}" for p in problems)
            raise _LoadError(f"invalid settings: {summary}", problems) from None
        defaults, prefix = self.config.limits, name if plugin_config.prefix is None else plugin_config.prefix
        pool = plugin_pool(defaults, plugin_config)
        max_length = self.config.tools.max_name_length
        plain = ToolLimits.resolve(defaults, plugin_config, ToolDef(fn=lambda: None), None, pool, self._threads(name))
        tools, resources, templates, prompts = {}, {}, [], {}
        shorts: set[str] = set()
        for item in self._definitions(name, "mcphost_tools", settings, ToolDef):
            short = item.name or item.fn.__name__
            shorts.add(short)
            limits = ToolLimits.resolve(
                defaults, plugin_config, item, plugin_config.tools.get(short), pool, self._threads(name)
            )
            entry = self._guard(
                name,
                "tool",
                short,
                functools.partial(build_tool, name, prefix, item, limits, settings, max_length),
            )
            if entry.name in tools:
                raise _LoadError(f"two tools are named {entry.name!r}")
            tools[entry.name] = entry
        for item in self._definitions(name, "mcphost_resources", settings, ResourceDef):
            res = self._guard(name, "resource", item.uri, functools.partial(build_resource, name, item, plain))
            if res.template is None:
                resources[item.uri] = res
            else:
                templates.append(res)
        for item in self._definitions(name, "mcphost_prompts", settings, PromptDef):
            short = item.name or item.fn.__name__
            prompt = self._guard(
                name, "prompt", short, functools.partial(build_prompt, name, prefix, item, plain, max_length, settings)
            )
            prompts[prompt.name] = prompt
        if unknown_tools := set(plugin_config.tools) - shorts:
            raise _LoadError(
                f"[plugins.{name}.tools] names no tool of this plugin: {', '.join(sorted(unknown_tools))}",
                [
                    self.loaded.problem(("plugins", name, "tools", t), "no such tool in this plugin")
                    for t in unknown_tools
                ],
            )
        return settings, Registry(tools, resources, tuple(templates), prompts)

    @staticmethod
    def _guard(plugin: str, kind: str, label: str, build: Callable[[], Any]) -> Any:
        try:
            return build()
        except BaseException as error:
            raise _LoadError(f"{kind} {label!r}: {error}") from None

    def _definitions(self, name: str, hook: str, settings: PluginSettings, kind: type[Any]) -> list[Any]:
        value = self._call_sync(name, hook, {"settings": settings})
        if value is None:
            return []
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise _LoadError(f"{hook} must return a list, not {type(value).__name__}")
        try:
            return [definition_of(item, kind) for item in value]
        except TypeError as error:
            raise _LoadError(f"{hook}: {error}") from None

    def _impl(self, name: str, hook: str) -> pluggy.HookImpl | None:
        caller = getattr(self.pm.hook, hook)
        return next((i for i in caller.get_hookimpls() if i.plugin_name == name), None)

    def _call_sync(self, name: str, hook: str, kwargs: dict[str, Any]) -> Any:
        impl = self._impl(name, hook)
        if impl is None:
            return None
        outcome = fence.call_hook_sync(name, hook, impl.function, {a: kwargs[a] for a in impl.argnames})
        if outcome.error:
            raise _LoadError(outcome.error)
        return outcome.value

    async def _call_async(self, record: PluginRecord, hook: str, timeout: float) -> fence.HookOutcome:
        impl = record.impls.get(hook)
        if impl is None:
            return fence.HookOutcome(True)
        kwargs = {a: {"settings": record.settings}[a] for a in impl.argnames}
        outcome = await fence.call_hook(record.name, hook, impl.function, kwargs, timeout, self._lane(record.name))
        if damaged := damage.check_std_streams(record.name, hook):
            return fence.HookOutcome(error=f"{hook} closed or replaced the daemon's {' and '.join(damaged)}")
        return outcome

    async def start_all(self) -> None:
        """Run every loaded plugin's start-up hook; a failure marks that plugin failed."""
        self.records = [await self._start(r, None) if r.status == "loaded" else r for r in self.records]

    async def stop_all(self) -> None:
        """Run every loaded plugin's shut-down hook, in reverse order; failures are logged.
        The fork server ends last."""
        for record in reversed(self.records):
            if record.status == "loaded":
                await self._stop(record)
        if self.zygotes is not None:
            await trio.to_thread.run_sync(self.zygotes.close)

    async def _start(self, record: PluginRecord, old: PluginRecord | None) -> PluginRecord:
        if record.worker is not None:
            error = await record.worker.start()
        else:
            error = (await self._call_async(record, "mcphost_startup", self.config.limits.load_timeout)).error
        if not error:
            return record
        log.error("plugin failed to start", plugin=record.name, error=error)
        self._drop(record)
        if old is not None and old.status == "loaded":
            # The previous version never stopped serving; put it back in the plugin manager.
            self._restore(old, {})
            return replace(old, reload_error=error)
        return record.failed(error)

    async def _stop(self, record: PluginRecord) -> None:
        if record.worker is not None:
            await record.worker.stop(self.config.shutdown.drain_timeout, self.config.limits.load_timeout)
            return
        outcome = await self._call_async(record, "mcphost_shutdown", self.config.limits.load_timeout)
        if outcome.error:
            log.error("plugin failed to shut down", plugin=record.name, error=outcome.error)

    async def readiness(self) -> dict[str, tuple[bool, str | None]]:
        """Each loaded plugin's readiness check: ``name -> (ready, reason)``."""
        result = {}

        async def check(record: PluginRecord) -> None:
            if record.worker is not None:
                with trio.move_on_after(READY_TIMEOUT):
                    result[record.name] = await record.worker.ready()
                result.setdefault(record.name, (False, "its worker did not answer the readiness check"))
                return
            outcome = await self._call_async(record, "mcphost_ready", READY_TIMEOUT)
            ready = outcome.error is None and outcome.value is not False
            result[record.name] = (ready, outcome.error or (None if ready else "readiness check returned False"))

        # Side by side: a slow check costs one timeout, not one per plugin.
        async with trio.open_nursery() as nursery:
            for record in self.records:
                if record.status == "loaded":
                    nursery.start_soon(check, record)
        return result

    def _unregister(self, name: str) -> None:
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)


@dataclass(frozen=True)
class Reload:
    """What a reload did: plugins (re)loaded or removed, plugins that failed, versions to retire."""

    changed: list[str]
    failed: list[str]
    retired: list[PluginRecord]


def _fresh(record: PluginRecord, old: PluginRecord | None) -> bool:
    """Whether ``record`` differs from ``old`` in what it serves (a new module, or a new status)."""
    if old is None or record.status != old.status:
        return True
    return record.status == "loaded" and _serving(record) != _serving(old)


def _serving(record: PluginRecord) -> int:
    """What serves ``record``: its module, or its worker."""
    return id(record.worker if record.worker is not None else record.module)


def _own_modules(before: set[str], package: str) -> frozenset[str]:
    """Modules of ``package`` that are in ``sys.modules`` now and were not in ``before``: what
    importing a plugin added of its own (its dependencies' modules stay, whatever happens)."""
    return frozenset(n for n in set(sys.modules) - before if n == package or n.startswith(package + "."))


def _forget(names: Iterable[str]) -> dict[str, ModuleType]:
    """Take the modules named ``names`` out of ``sys.modules``; returns them."""
    return {name: sys.modules.pop(name) for name in names if name in sys.modules}


def _module_names(record: PluginRecord) -> list[str]:
    """Names in ``sys.modules`` of ``record``'s modules: those its import added, and any
    imported under its own module since."""
    root = next((n for n in record.modules if record.module is sys.modules.get(n)), None)
    return [n for n in list(sys.modules) if n in record.modules or (root is not None and n.startswith(root + "."))]


def _source_times(record: PluginRecord) -> tuple[tuple[str, float], ...]:
    """Modification times of the source files of ``record``'s modules."""
    times = []
    paths = (
        record.files
        if record.worker is not None
        else [getattr(sys.modules[n], "__file__", None) for n in _module_names(record)]
    )
    for path in paths:
        if path:
            with contextlib.suppress(OSError):
                times.append((path, os.stat(path).st_mtime_ns))
    return tuple(sorted(times))


def plugin_files(record: PluginRecord) -> list[Path]:
    """The source files a watcher should watch for ``record``: its modules' when it is
    loaded, and a path plugin's own file in any case (one that failed to load is
    watched until it is fixed)."""
    files = [Path(path) for path, _ in _source_times(record)] if record.status == "loaded" else []
    if record.path is not None:
        files.append(record.path / "__init__.py" if record.path.is_dir() else record.path)
    return files


class _LoadError(Exception):
    def __init__(self, message: str, problems: Sequence[Problem] = ()):
        super().__init__(message)
        self.problems = list(problems)


def _enabled(name: str, enable: Sequence[str], disable: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in enable) and not any(fnmatch.fnmatchcase(name, p) for p in disable)
