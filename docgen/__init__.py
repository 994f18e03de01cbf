"""What the documentation site and the man pages generate from the code, so that no hand
copy can drift: the configuration reference (from the config models), the CLI reference
(from the argument parser), the metrics list (from the daemon's Prometheus registry) and
the plugin API reference (from ``mcphost.__all__`` and the hook specifications).

Every import of mcphost's internals is in :mod:`docgen.sources`. ``python -m docgen``
writes the man pages; the site generates its pages at build time (:mod:`docgen.mkdocs_hooks`).
"""
