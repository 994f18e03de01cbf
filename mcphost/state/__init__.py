"""Storage backends: session records and their stores, event stores, rate-limit budgets, in
memory or a file for one machine and in Redis for replicas.

It may import ops and core only.
"""
