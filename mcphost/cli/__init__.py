"""The command line: ``mcphost``'s argument parser and each subcommand.

Top of the stack: it may import every layer below (daemon and down); nothing imports it but
``mcphost.__main__``.
"""
