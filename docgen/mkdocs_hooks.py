"""MkDocs hooks: add the pages generated from the code (:mod:`docgen.pages`) and the
benchmark report, which the bench writes at the top of the checkout with its plots."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # docgen is a folder of the checkout, not an installed package

from docgen.pages import generated  # noqa: E402


def on_files(files: Files, config: Any) -> Files:
    """Add the generated pages, ``BENCHMARKS.md`` as ``benchmarks.md`` and its plots (at the
    paths it links them from, relative to the page)."""
    for path, content in generated().items():
        files.append(File.generated(config, path, content=content))
    files.append(File.generated(config, "benchmarks.md", abs_src_path=str(ROOT / "BENCHMARKS.md")))
    for plot in sorted((ROOT / "bench" / "plots").glob("*.png")):
        files.append(File.generated(config, f"bench/plots/{plot.name}", abs_src_path=str(plot)))
    return files
