"""What a running platform tells its operator: the access log, its own log, and Prometheus metrics.

`files` writes private, size-rotated log files that several processes share (`--workers N`);
`logs` points the `lanyard.*` loggers at them; `access` is the ASGI middleware that writes one JSON
line per request from a background thread; `metrics` holds every counter and histogram; `http`
serves them to an administrator (platform) or over a root-only unix socket (agent).
"""
