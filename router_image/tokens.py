"""Minting tokens for a route: what Azure ML's `get_token()` returns, a JWT and its refresh-by time.

The router verifies with the public half of the cluster's signing key (auth.py); whoever holds
the private half (the platform team, `python -m components local token`) mints with this.
"""

from __future__ import annotations

import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

ISSUER = "aks-model-serving"


def mint_token(private_key_pem: bytes | str, audience: str, *, lifetime_s: int = 3600,
               algorithm: str | None = None, issuer: str = ISSUER) -> tuple[str, float]:
    """A token for `audience` (the service or endpoint name) and the time to refresh it by.

    Like Azure ML, refresh_by is half way through the lifetime, so a client that renews then
    never presents an expired token.
    """
    pem = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
    key = load_pem_private_key(pem, password=None)
    algorithm = algorithm or ("RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256")
    now = int(time.time())
    claims = {"aud": audience, "iss": issuer, "iat": now, "nbf": now, "exp": now + lifetime_s, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, key, algorithm=algorithm), now + lifetime_s / 2
