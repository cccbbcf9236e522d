"""Lanyard: a self-hosted managed-identity platform, wire-compatible with Azure's."""

__version__ = "0.1.0"
