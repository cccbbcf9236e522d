"""The host agent: the local token service (App Service, IMDS) and the workload runner.

It reaches the directory and control plane only over HTTPS with its own host credential, and never
imports their code (docs/security.md B2, docs/architecture.md §4).
"""
