"""The composition root and the process's lifecycle: the :class:`Daemon`, the worker master,
start-up errors and listener binding, and signals that arrive while starting.

It wires the layers below together (transport and down) and is imported only by the command line.
"""
