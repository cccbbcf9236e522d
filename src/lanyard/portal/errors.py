"""The portal's one error type, and ARM's own refusal as the page shows it."""

from __future__ import annotations

import httpx


class PortalError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def arm_message(answer: httpx.Response) -> str:
    """ARM's own error, as ARM wrote it ("AuthorizationFailed: The client ... does not have ...")."""
    try:
        error = answer.json().get("error", {})
    except ValueError:
        error = {}
    if not isinstance(error, dict):
        error = {}
    return f"{error.get('code', 'Error')}: {str(error.get('message', ''))[:1000]}"
