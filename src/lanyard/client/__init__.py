"""Lanyard's client library: credentials that fit azure-core's `get_token` protocol, over httpx.

Imports nothing from the server side, so it can be split out and used by apps on their own.
"""

from lanyard.client.credentials import AccessToken, ClientSecretCredential, CredentialError

__all__ = ["AccessToken", "ClientSecretCredential", "CredentialError"]
