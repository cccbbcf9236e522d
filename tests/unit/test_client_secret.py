"""Client secrets as az can take them: never a leading '-', which az's argparse reads as an option
(`az login --service-principal -p -abc…` fails with "expected one argument")."""

from __future__ import annotations

import pytest

from lanyard.directory import service


def test_a_secret_that_would_start_with_a_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = iter(["-" + "a" * 39, "-" + "b" * 39, "c" * 40])
    monkeypatch.setattr(service.secrets, "token_urlsafe", lambda n: next(drawn))
    assert service.new_client_secret() == "c" * 40


def test_real_secrets_are_40_url_safe_characters_without_a_leading_dash() -> None:
    for _ in range(2000):  # about 1 in 64 draws starts with '-': this would see ~30 of them
        secret = service.new_client_secret()
        assert len(secret) == 40 and not secret.startswith("-")
