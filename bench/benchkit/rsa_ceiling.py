"""RSA-2048 PKCS1v15-SHA256 signatures per second on one core: the bound on token minting (G3).

Run as a separate, pinned process (`taskset -c 0 python -m benchkit.rsa_ceiling SECONDS`) so it
measures the same core the servers get. The key is created once outside the timed loop: parsing
or generating a key per signature is exactly what the servers must never do.
"""

from __future__ import annotations

import json
import sys
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# About the size of a JWT signing input (base64url header + claims of an access token).
SIGNING_INPUT = b"e" * 900


def signs_per_second(seconds: float) -> float:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pad, digest = padding.PKCS1v15(), hashes.SHA256()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    # Check the clock every 32 signatures so timing overhead stays negligible.
    while time.perf_counter() < deadline:
        for _ in range(32):
            key.sign(SIGNING_INPUT, pad, digest)
        count += 32
    return count / (time.perf_counter() - start)


if __name__ == "__main__":
    print(json.dumps({"rate": signs_per_second(float(sys.argv[1]))}))
