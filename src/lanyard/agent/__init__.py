"""The host agent: the local token service (App Service, IMDS) and the workload runner.

It reaches the directory and control plane only over HTTPS with its own host credential, and never
imports their code (SECURITY.md B2, STYLE.md §11).
"""
