"""The servers the benchmark compares mcphost with, each run as its own process."""
