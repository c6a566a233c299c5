"""Who may call a route: its keys (primary or secondary) or a token for it, never both.

Keys come from a mounted Kubernetes Secret, one file per key (`<kind>.<name>.primary`,
`.secondary`); the directory is re-read when it changes, so rotating a key needs no restart.
Tokens are JWTs signed with the cluster's key, whose public half is re-read the same way;
audience = route name (unique across services and endpoints, config.py), expiry enforced, only
the configured algorithm accepted (so `alg: none` and algorithm swaps fail), the signature checked
with the one published key its `kid` names. Secrets are compared in constant time and never logged.

The audience is the route's name, not its instance: a token minted for a service or endpoint that is then
deleted is good at one made under the same name until it expires (lifetime_seconds, an hour by default).
An audience per instance would need an identifier minters look up per route, and refuse every outstanding
token when it came in; a name reused within the hour is rare, and bumping token_key_rotation by two
refuses every outstanding token at once where it matters.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import jwt

from router_image.config import ConfigError, RouteConfig, TokenConfig
from router_image.tokens import thumbprint

log = logging.getLogger("router.auth")
KEY_RELOAD_S = 1.0
# Tokens are minted on another machine (the platform team's, a CI runner): a clock a little ahead
# of the router's would make a fresh token "not yet valid" (nbf, iat). Azure AD allows 5 minutes;
# a minute covers NTP-synced machines without stretching an expired token far.
CLOCK_SKEW_S = 60
# mint_token's tokens are 300 bytes (RS256: 600). PyJWT checks a token's characters one by one in Python
# before its signature, so a 60 KB header of junk, anyone's to send, cost 3 ms of CPU (a real token 0.2 ms).
MAX_TOKEN_BYTES = 8192
# A client sends one token for up to its lifetime (Azure ML's clients renew at refresh_by, half way), so its
# signature is checked once, not at every request: ES256 verification costs ~110 us against ~26 us for all the
# rest of a relayed request. Bounded: only tokens that verified are kept, the oldest first out.
VERIFIED_TOKENS = 4096
# A token without a `kid` (minted before mint_token set one) is checked with each published key in turn (three:
# the previous, current and next signing keys), ~290 us of ES256 for a forged one, anyone's to send. Those are
# taken until they expire, at most this many signature checks a second per route (~1% of a core each); beyond it
# they are refused unchecked. Per route: forged tokens sent to one route spent a pod-wide budget, and every other
# route's legacy tokens were refused. A client's token is checked once (VERIFIED_TOKENS), so this is the rate of
# new ones, not of requests.
KIDLESS_CHECKS_PER_S = 100.0
INVALID_TOKEN = 'Bearer error="invalid_token"'

PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)
PUBLIC_KEY_LABELS = ("PUBLIC KEY", "RSA PUBLIC KEY")  # SubjectPublicKeyInfo, and PKCS #1 for RSA


class AuthError(Exception):
    def __init__(self, message: str, challenge: str):
        super().__init__(message)
        self.challenge = challenge


def stamp_of(stat: os.stat_result) -> tuple[int, int, int]:
    """What tells that a file changed: its time, and its inode and size for a change within one tick of a
    coarse file clock (a Secret swapped by the kubelet, or a file replaced by rename, is a new inode)."""
    return stat.st_mtime_ns, stat.st_ino, stat.st_size


def files_stamp(*paths: str) -> tuple[int, ...]:
    """stamp_of each file, through the Secret's `..data` link; () while one is missing."""
    try:
        stats = [os.stat(path) for path in paths]
    except OSError:
        return ()
    return tuple(x for stat in stats for x in stamp_of(stat))


class Mounted:
    """Files of a mounted Secret, re-read at most once a second when their times changed."""

    def __init__(self) -> None:
        # Taken before the files are read: a change landing during a read shows at the next check.
        self._stamp = self._stamp_now()
        self._checked = 0.0

    def _stamp_now(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _read(self) -> None:
        raise NotImplementedError

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked > KEY_RELOAD_S:
            self._checked = now
            self.reread_if_changed()

    def reread_if_changed(self) -> None:
        stamp = self._stamp_now()
        if stamp != self._stamp:
            self._stamp = stamp
            self._read()


class KeyStore(Mounted):
    """The mounted key files, re-read when the folder changed (Authenticator.refresh, off the request path)."""

    def __init__(self, folder: str | None):
        self._folder = Path(folder) if folder else None
        self._keys: dict[str, list[bytes]] = {}
        super().__init__()
        self._read()

    def _stamp_now(self) -> tuple[int, ...]:
        if self._folder is None or not self._folder.is_dir():
            return ()
        # Kubernetes swaps the `..data` symlink on update; the folder's and files' times catch both.
        stamps = []
        for path in [self._folder, *self._folder.iterdir()]:
            try:
                stamps.append(stamp_of(os.stat(path)))
            except OSError:  # listed, then removed (the kubelet drops the old folder after a swap)
                continue
        return tuple(x for stamp in sorted(stamps) for x in stamp)

    def _read(self) -> None:
        keys: dict[str, list[bytes]] = {}
        if self._folder is not None and self._folder.is_dir():
            for path in self._folder.iterdir():
                if path.name.startswith(".") or not path.is_file():
                    continue
                route, _, which = path.name.rpartition(".")
                if which in ("primary", "secondary"):
                    try:
                        value = path.read_bytes().strip()
                    except OSError:  # removed since the listing
                        continue
                    if value:
                        keys.setdefault(route, []).append(value)
        self._keys = keys

    def keys(self, key_id: str) -> list[bytes]:
        return self._keys.get(key_id, [])


class PublicKey(Mounted):
    """The token verification keys' file, re-read like the keys: rotating the signing key needs no restart.

    It holds one PEM public key, or several while the signing key is rotated: the new one is added next to
    the old, minted with once every pod has it, and the old one removed once its tokens expired. With one
    key only, each pod refused the tokens of one key or the other until every pod had the new file and
    every token of the old key had expired.

    It must be readable at first (a config naming a key that is not there does not apply, a router does not
    start); later a read that fails keeps the keys it had, and is logged, until the file changes again.
    The keys are parsed when read, not per token (about 26 us a request otherwise), each under its RFC 7638
    thumbprint, the `kid` of the tokens it signs.
    """

    def __init__(self, path: str, algorithm: str):
        self._path = path
        self._algorithm_name = algorithm
        self._algorithm = jwt.get_algorithm_by_name(algorithm)
        super().__init__()
        self.keys = self._parse()  # by thumbprint, in the file's order

    def _stamp_now(self) -> tuple[int, ...]:
        return files_stamp(self._path)

    def _parse(self) -> dict[str, Any]:
        """Public keys only, each named by its place when refused, never by its text: PyJWT takes a private key as
        well (the signing key mounted in its public half's place would make every pod a minter; a private RSA key
        cannot even verify, and each token was a 500), and its own errors name no file."""
        blocks = list(PEM_BLOCK.finditer(Path(self._path).read_bytes()))
        if not blocks:
            raise ConfigError(f"token public key file {self._path} holds no PEM key")
        keys: dict[str, Any] = {}
        for n, block in enumerate(blocks, 1):
            label = block.group(1).decode()
            if label not in PUBLIC_KEY_LABELS:
                raise ConfigError(f"token public key file {self._path}: block {n} is a {label}, "
                                  "where only public keys belong")
            try:
                key = self._algorithm.prepare_key(block.group())
            except (ValueError, jwt.InvalidKeyError):
                raise ConfigError(f"token public key file {self._path}: block {n} does not load as an "
                                  f"{self._algorithm_name} public key") from None
            keys[thumbprint(key)] = key
        return keys

    def _read(self) -> None:
        try:
            self.keys = self._parse()
        except (OSError, ConfigError) as exc:
            log.warning("token public key not re-read, the previous one stays: %s", exc)


def _decode(token: TokenConfig, key: Any, credential: bytes, audience: str) -> dict[str, Any]:
    return jwt.decode(credential, key, algorithms=[token.algorithm], audience=audience, issuer=token.issuer,
                      options={"require": ["exp", "iat", "aud", "iss"]}, leeway=CLOCK_SKEW_S)


class Authenticator:
    def __init__(self, keys_dir: str | None, token: TokenConfig | None):
        self.keys = KeyStore(keys_dir)
        self._token = token
        self._public_key = PublicKey(token.public_key_file, token.algorithm) if token else None
        # SHA-256 of (audience, token) -> its exp: a digest, so that no lookup compares a token's own bytes.
        self._verified: dict[bytes, int] = {}
        self._verified_with: dict[str, Any] | None = None  # the keys they verified with: a re-read clears them
        # Route name -> (the checks its kid-less tokens may have now, when that was): a token bucket per route, the
        # least recently spent first. A bucket unspent for a second is full, as one never made: those are dropped, so
        # it holds the routes (of the config, never of a request) spent on within the last second.
        self._kidless: dict[str, tuple[float, float]] = {}

    def refresh(self) -> None:
        """Re-read the key files and token keys that changed: the router's credentials watch calls it, in a thread,
        so that no request waits on the file system (listing the key folder took 0.5 ms with 100 routes)."""
        self.keys.reread_if_changed()
        if self._public_key is not None:
            self._public_key.reread_if_changed()

    def check(self, route: RouteConfig, key_id: str, authorization: bytes | None) -> None:
        """Raise AuthError unless the Authorization header admits this route (its `key_id`, made once per
        config load: a property of the frozen model would build it per request)."""
        auth = route.auth
        if not auth.key_enabled and not auth.token_enabled:
            return
        scheme = "Bearer" if auth.key_enabled else 'Bearer error="invalid_token"'
        if not authorization or not authorization[:7].lower() == b"bearer ":
            raise AuthError("missing Authorization: Bearer <key or token>", "Bearer")
        credential = authorization[7:].strip()
        if auth.key_enabled:
            for key in self.keys.keys(key_id):  # a loop, not any(<generator>): this runs per request
                if hmac.compare_digest(credential, key):
                    return
            raise AuthError("invalid key", scheme)
        self._verify_token(route, credential)

    def _verify_token(self, route: RouteConfig, credential: bytes) -> None:
        if self._token is None or self._public_key is None:
            raise AuthError("token auth is on but the router has no signing key", INVALID_TOKEN)
        if len(credential) > MAX_TOKEN_BYTES:
            raise AuthError(f"invalid token: over {MAX_TOKEN_BYTES} bytes", INVALID_TOKEN)
        keys = self._public_key.keys
        if keys is not self._verified_with:  # a key taken out of the file takes its tokens with it
            self._verified.clear()
            self._verified_with = keys
        digest = hashlib.sha256(route.name.encode() + b" " + credential).digest()
        exp = self._verified.get(digest)
        if exp is not None:
            if exp > time.time() - CLOCK_SKEW_S:  # PyJWT's own test, with the same leeway
                return
            del self._verified[digest]
            raise AuthError("token expired", 'Bearer error="invalid_token", error_description="expired"')
        try:
            claims = self._claims(self._token, keys, credential, route.name)
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired", 'Bearer error="invalid_token", error_description="expired"') from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {type(exc).__name__}", INVALID_TOKEN) from None
        # Whoever holds the signing key could mint a token good for years; one that leaks stays good as long.
        # int(): PyJWT takes a time given as a string of digits (it checked that int() of each passes).
        if int(claims["exp"]) - int(claims["iat"]) > self._token.lifetime_seconds:
            raise AuthError(f"invalid token: it lives over {self._token.lifetime_seconds} s (lifetime_seconds)",
                            INVALID_TOKEN)
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]
        self._verified[digest] = int(claims["exp"])

    def _claims(self, token: TokenConfig, keys: dict[str, Any], credential: bytes, audience: str) -> dict[str, Any]:
        """The token's claims, its signature checked with the key its `kid` names; one without a kid with each key
        in turn while the kid-less budget lasts (a signature that one does not verify is tried with the next,
        anything else is the token's fault)."""
        if b"=" in credential:  # PyJWT takes a padded signature: each token had a second form, to fill the cache with
            raise AuthError("invalid token: base64url padding ('='), which a JWS has none of", INVALID_TOKEN)
        kid = jwt.get_unverified_header(credential).get("kid")
        if kid is not None:
            key = keys.get(kid)
            if key is None:
                raise AuthError("invalid token: its kid names no published key", INVALID_TOKEN)
            return _decode(token, key, credential, audience)
        *others, last = keys.values()
        for key in others:
            self._spend_kidless_check(audience)
            try:
                return _decode(token, key, credential, audience)
            except jwt.InvalidSignatureError:
                continue
        self._spend_kidless_check(audience)
        return _decode(token, last, credential, audience)

    def _spend_kidless_check(self, route: str) -> None:
        """One signature check for a kid-less token of `route`, from its bucket refilled at KIDLESS_CHECKS_PER_S."""
        now = time.monotonic()
        checks, at = self._kidless.pop(route, (KIDLESS_CHECKS_PER_S, now))  # re-inserted below: last in order
        checks = min(KIDLESS_CHECKS_PER_S, checks + (now - at) * KIDLESS_CHECKS_PER_S)
        while self._kidless:
            oldest = next(iter(self._kidless))
            if now - self._kidless[oldest][1] < 1.0:
                break
            del self._kidless[oldest]
        if checks < 1:
            self._kidless[route] = (checks, now)
            raise AuthError(f"invalid token: it has no kid, and tokens without one get {KIDLESS_CHECKS_PER_S:.0f} "
                            "signature checks a second on each route, all spent on this one; mint a new one "
                            "(mint_token sets a kid)", INVALID_TOKEN)
        self._kidless[route] = (checks - 1, now)
