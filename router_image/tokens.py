"""Minting tokens for a route: what Azure ML's `get_token()` returns, a JWT and its refresh-by time.

The router verifies with the public half of the cluster's signing key (auth.py); whoever holds
the private half (the platform team, `python -m components local token`) mints with this.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.utils import base64url_encode

ISSUER = "aks-model-serving"
THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}  # RFC 7638, 3.2


def thumbprint(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    """The key's RFC 7638 thumbprint, a token's `kid`: the router checks a token's signature with the one key it
    names, where a token naming none cost a check with each published key (three: the previous, current and next)."""
    algorithm = "RS256" if isinstance(public_key, rsa.RSAPublicKey) else "ES256"
    jwk = jwt.get_algorithm_by_name(algorithm).to_jwk(public_key, as_dict=True)
    members = json.dumps({name: jwk[name] for name in THUMBPRINT_MEMBERS[jwk["kty"]]}, separators=(",", ":"),
                         sort_keys=True)
    return base64url_encode(hashlib.sha256(members.encode()).digest()).decode()


def mint_token(private_key_pem: bytes | str, audience: str, *, lifetime_s: int = 3600,
               issuer: str = ISSUER) -> tuple[str, float]:
    """A token for `audience` (the service or endpoint name) and the time to refresh it by.

    Like Azure ML, refresh_by is half way through the lifetime, so a client that renews then
    never presents an expired token. The key says the algorithm (router.token_algorithm made it).
    """
    pem = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
    key = load_pem_private_key(pem, password=None)
    signing: tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, str]
    if isinstance(key, rsa.RSAPrivateKey):
        signing = key, "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        signing = key, "ES256"
    else:
        kind = f"EC {key.curve.name}" if isinstance(key, ec.EllipticCurvePrivateKey) else type(key).__name__
        raise ValueError(f"mint_token: the key is {kind.removesuffix('PrivateKey')}; the router verifies tokens signed "
                         "with an EC P-256 (ES256) or RSA (RS256) private key")
    now = int(time.time())
    claims = {"aud": audience, "iss": issuer, "iat": now, "nbf": now, "exp": now + lifetime_s, "jti": uuid.uuid4().hex}
    return (jwt.encode(claims, signing[0], algorithm=signing[1], headers={"kid": thumbprint(signing[0].public_key())}),
            now + lifetime_s / 2)
