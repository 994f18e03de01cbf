"""A worker started as a fresh interpreter (``fork_server = false``, or when the fork server
cannot start): ``python -m mcphost.plugins.worker <fd> <log level>``.

It makes the fork server's deferrals (:func:`mcphost.plugins.worker.zygote.import_runtime`) before
the worker runtime is imported, so that it imports no more of the SDK than a forked worker
holds: neither the SDK's client and HTTP transport nor its per-revision wire models.
"""

from mcphost.ops import sdk_models, sdk_packages

sdk_models.build_on_first_use()
sdk_packages.defer_inits()

from mcphost.plugins.worker.main import main  # noqa: E402  (after the deferrals, which it would defeat)

main()
