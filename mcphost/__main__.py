"""``python -m mcphost``: the same as the ``mcphost`` command."""

from mcphost.cli import main

main()
