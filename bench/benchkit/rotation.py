"""What cluster.py's G13 (minting while the signing keys rotate) adds: wrk that keeps every token it
was given, a check of each of them against a JWKS, and freezing the node not under test.

wrk's `response()` hook writes each 200 body (one JSON object, no newline in it) to a file, one a
line; wrk counts a request only once that hook has run, so the lines plus the error answers must
be its request count exactly. The hook costs wrk a little CPU per response, the same with or without
a rotation, so a ratio of two captured runs is unaffected.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from benchkit.harness import LOAD_CORE, HttpTarget, Sample, _lua_quote, _lua_script, assert_loopback, pinned
from benchkit.lanyard import lanyard_binary
from benchkit.tokens import CheckFailed, b64url_decode

# Opened by wrk's thread (one: -t1) in init(); flushed by the C library when wrk exits.
_LUA_CAPTURE = r"""
local captured = nil
init = function(args)
  captured = assert(io.open(CAPTURE_PATH, "wb"))
  captured:setvbuf("full", 1048576)
end
response = function(status, headers, body)
  if status == 200 then captured:write(body, "\n") end
end
"""


def run_wrk_capturing(
    wrk: str, target: HttpTarget, seconds: float, connections: int, workdir: Path, capture: Path
) -> Sample:
    """harness.run_wrk, with every 200 answer's body left in `capture`, one a line (read them with
    tokens_in)."""
    assert_loopback(target.url)
    if target.expect_status != 200:
        raise ValueError("capturing is for targets that expect 200")
    script = workdir / "wrk-capture.lua"
    script.write_text(_lua_script(target) + _LUA_CAPTURE.replace("CAPTURE_PATH", _lua_quote(str(capture))))
    duration_arg = f"-d{max(1, round(seconds))}s"
    cmd = pinned(
        [wrk, "-t1", f"-c{connections}", duration_arg, "--timeout", "5s", "-s", str(script), target.url], LOAD_CORE
    )
    capture.unlink(missing_ok=True)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk produced no summary (exit {done.returncode}): {done.stderr.strip()[:400]}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    duration = raw["duration_us"] / 1e6
    sample = Sample(
        rate=raw["requests"] / duration if duration else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        requests=raw["requests"],
        bad_status=raw["status"],
        socket_errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
    )
    with capture.open("rb") as lines:
        kept = sum(1 for _ in lines)
    if kept + sample.bad_status != sample.requests:
        raise CheckFailed(f"wrk counted {sample.requests} answers ({sample.bad_status} errors) but kept {kept} bodies")
    return sample


def tokens_in(capture: Path) -> Iterator[str]:
    """The access tokens of a capture file, in the order wrk received them."""
    with capture.open("rb") as lines:
        for body in lines:
            token = json.loads(body).get("access_token")
            if not isinstance(token, str):
                raise CheckFailed(f"a 200 answer without an access_token: {body[:200]!r}")
            yield token


# ------------------------------------------------------------------------------------------ checks


@dataclass
class KidUse:
    """What one signing key signed among the tokens checked."""

    tokens: int = 0
    first_iat: int = 0
    last_iat: int = 0


@dataclass
class Audit:
    """Every token checked against one JWKS: signature, expiry, appid; tallied by kid."""

    jwks: dict[str, Any]
    client_id: str
    checked: int = 0
    by_kid: dict[str, KidUse] = field(default_factory=dict)
    _keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for jwk in self.jwks.get("keys", []):
            numbers = rsa.RSAPublicNumbers(
                int.from_bytes(b64url_decode(jwk["e"])), int.from_bytes(b64url_decode(jwk["n"]))
            )
            self._keys[str(jwk["kid"])] = numbers.public_key()

    def check(self, tokens: Iterable[str], what: str) -> list[str]:
        """Verify each token; the kids in the order they first signed (within these tokens)."""
        order: list[str] = []
        now = time.time()
        for token in tokens:
            try:
                header_b64, claims_b64, signature_b64 = token.split(".")
                header = json.loads(b64url_decode(header_b64))
                claims = json.loads(b64url_decode(claims_b64))
            except ValueError as exc:
                raise CheckFailed(f"{what}: an access_token is not a JWT") from exc
            kid = str(header.get("kid"))
            key = self._keys.get(kid)
            if header.get("alg") != "RS256" or key is None:
                raise CheckFailed(f"{what}: a token signed by kid {kid} ({header.get('alg')}), not in the JWKS after")
            try:
                key.verify(
                    b64url_decode(signature_b64),
                    f"{header_b64}.{claims_b64}".encode("ascii"),
                    padding.PKCS1v15(),
                    hashes.SHA256(),
                )
            except InvalidSignature:
                raise CheckFailed(f"{what}: a token's signature does not verify with its kid {kid}") from None
            if int(claims.get("exp", 0)) <= now or claims.get("appid") != self.client_id:
                raise CheckFailed(f"{what}: a token expired or for appid {claims.get('appid')}")
            iat = int(claims.get("iat", 0))
            use = self.by_kid.get(kid)
            if use is None:
                use = self.by_kid[kid] = KidUse(0, iat, iat)
            use.tokens += 1
            use.first_iat, use.last_iat = min(use.first_iat, iat), max(use.last_iat, iat)
            if not order or order[-1] != kid:
                order.append(kid)
            self.checked += 1
        return order


def signed_before_activation(audit: Audit, keys: list[dict[str, Any]]) -> list[str]:
    """Kids that signed a token (by its iat, whole seconds) earlier than a second before `lanyard
    keys list` says they were activated: a key signing while it was only pending."""
    early = []
    for key in keys:
        use = audit.by_kid.get(str(key.get("kid")))
        activated = _epoch(key.get("activated"))
        if use is not None and activated is not None and use.first_iat < activated - 1:
            early.append(f"{key['kid']} (iat {use.first_iat}, activated {key['activated']})")
    return early


def signed_after_retirement(audit: Audit, keys: list[dict[str, Any]]) -> float:
    """The longest a key went on signing after `lanyard keys list` says it retired (a node swaps its
    signer when the change feed brings the retirement), in whole seconds; 0 if none did."""
    retired = {str(k.get("kid")): _epoch(k.get("retired")) for k in keys}
    lags = [use.last_iat - at for kid, use in audit.by_kid.items() if (at := retired.get(kid)) is not None]
    return max([0.0, *lags])


def activated_within(keys: list[dict[str, Any]], windows: Iterable[tuple[float, float]]) -> set[str]:
    """Kids `lanyard keys list` says were activated within any of these (start, end) epoch-second
    windows (its times are whole seconds, so a window starts at its whole second)."""
    found = set()
    for key in keys:
        at = _epoch(key.get("activated"))
        if at is not None and any(math.floor(start) <= at <= end for start, end in windows):
            found.add(str(key["kid"]))
    return found


def _epoch(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()


# ------------------------------------------------------------------------------------------ freeze


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class Freezer:
    """Keeps every process group but the one under test stopped (SIGSTOP by pid, SIGCONT to resume):
    an idle node still runs its jobs (a rotating one generates a key every period), and on a 2-core
    machine with wrk on the other core that work would land on the measurement of the other node."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.frozen: set[str] = set()

    def only(self, name: str) -> None:
        for other, pids in self.groups.items():
            if other != name and other not in self.frozen:
                _signal_all(pids, signal.SIGSTOP)
                self.frozen.add(other)
        if name in self.frozen:
            _signal_all(self.groups[name], signal.SIGCONT)
            self.frozen.discard(name)

    def thaw(self) -> None:
        for name in list(self.frozen):
            _signal_all(self.groups[name], signal.SIGCONT)
            self.frozen.discard(name)

    @contextlib.contextmanager
    def running(self) -> Iterator[Freezer]:
        try:
            yield self
        finally:
            self.thaw()


def list_keys(home: Path) -> list[dict[str, Any]]:
    """`lanyard keys list` against a home: every signing key with its state and times."""
    cmd = [str(lanyard_binary()), "--home", str(home), "keys", "list"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise CheckFailed(f"lanyard keys list failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    value, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.find("[") :])
    if not isinstance(value, list) or not all(isinstance(k, dict) for k in value):
        raise CheckFailed(f"lanyard keys list printed {done.stdout[:200]!r}")
    return value
