"""Shared pieces of Lanyard's benchmark harness (see docs/performance.md §5, "The benchmark harness").

Every figure the harness reports is a ratio to a ceiling measured in the same run, because the
machines are shared and noisy: an absolute req/s on its own means nothing.
"""
