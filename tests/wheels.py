"""Wheels of this checkout's projects, and of everything they depend on, for installing
mcphost the way a sysadmin does: ``packaging/install.sh --wheelhouse DIR``, offline."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
BUNDLED = (REPO, REPO / "plugins" / "mcphost-sysinfo", REPO / "plugins" / "mcphost-files")
"""mcphost and the plugins ``install.sh`` installs with it."""
CACHE = REPO / ".cache"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]


def _project(path: Path) -> dict[str, object]:
    return tomllib.loads((path / "pyproject.toml").read_text())


def build(projects: Iterable[Path], work: Path) -> Path:
    """Wheels of ``projects`` (without their dependencies), in ``work/wheels``.

    Built with one shared copy of their declared build requirements rather than pip's isolated
    build environments, which would fetch and install the build backend once per project.
    """
    projects = list(projects)
    requires = {r for project in projects for r in _project(project)["build-system"]["requires"]}  # type: ignore[index]
    backend, wheels = work / "build-backend", work / "wheels"
    subprocess.run([*PIP, "install", "--target", str(backend), *sorted(requires)], check=True, timeout=600)
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), *map(str, projects)],
        env={**os.environ, "PYTHONPATH": str(backend)},
        check=True,
        timeout=600,
    )
    return wheels


def dependencies(projects: Iterable[Path], python_version: str) -> Path:
    """A directory of binary wheels of every third-party requirement of ``projects`` (for
    CPython ``python_version``, on this platform), downloaded once into the git-ignored cache
    and reused while the requirements stay the same."""
    projects = list(projects)
    local = {canonicalize_name(str(_project(p)["project"]["name"])) for p in projects}  # type: ignore[index]
    requirements = sorted(
        {
            requirement
            for project in projects
            for requirement in _project(project)["project"].get("dependencies", [])  # type: ignore[index, attr-defined]
            if canonicalize_name(Requirement(requirement).name) not in local
        }
    )
    key = hashlib.sha256("\n".join([python_version, *requirements]).encode()).hexdigest()[:16]
    directory = CACHE / f"wheelhouse-{key}"
    if not directory.is_dir():
        partial = directory.with_name(directory.name + ".partial")
        download = [*PIP, "download", "--only-binary=:all:", "--python-version", python_version, "--dest", str(partial)]
        subprocess.run(
            [*download, *requirements],
            check=True,
            timeout=900,
        )
        partial.rename(directory)
    return directory
