"""JWT signing keys: one algorithm, exact `kid` lookup, the current key signs, older ones verify."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from servers.errors import ConfigError
from servers.settings import MIN_HMAC_SECRET_BYTES, Settings

_KEY_TYPES: dict[str, type[Any]] = {
    "RS256": rsa.RSAPrivateKey,
    "ES256": ec.EllipticCurvePrivateKey,
    "EdDSA": ed25519.Ed25519PrivateKey,
}
_MAX_REMEMBERED_HEADERS = 64
_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "oct": ("k", "kty"),
}


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key of the ring, parsed once: what signs and what verifies."""

    kid: str
    alg: str
    signing: Any
    verifying: Any
    public_jwk: dict[str, str] | None
    """The key's public JWK (with kid, alg, use), or None for HMAC."""


def generate_key_material(alg: str) -> bytes:
    """Return a fresh HMAC secret (32 random bytes) or a PEM private key for `alg`."""
    if alg == "HS256":
        return secrets.token_bytes(MIN_HMAC_SECRET_BYTES)
    private: Any
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    pem: bytes = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem


def with_generated_keys(settings: Settings) -> Settings:
    """Return settings whose signing key is set, generating one if none was configured.

    Done once in the parent process so that every worker signs with the same key.
    """
    if not settings.is_jwt:
        return settings
    if settings.alg == "HS256" and settings.jwt_secret is None:
        return dataclasses.replace(settings, jwt_secret=generate_key_material("HS256"))
    if settings.alg != "HS256" and settings.jwt_private_key is None:
        return dataclasses.replace(settings, jwt_private_key=generate_key_material(settings.alg))
    return settings


def load_key(alg: str, material: bytes) -> SigningKey:
    """Parse `material` for `alg` into a SigningKey; raises ConfigError if it does not fit."""
    algorithm = get_default_algorithms()[alg]
    if alg == "HS256":
        if len(material) < MIN_HMAC_SECRET_BYTES:
            raise ConfigError(f"HMAC secrets must be at least {MIN_HMAC_SECRET_BYTES} bytes")
        jwk = json.loads(algorithm.to_jwk(material))
        return SigningKey(_thumbprint(jwk), alg, material, material, None)
    try:
        private = serialization.load_pem_private_key(material, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read the {alg} private key: {exc}") from None
    if not isinstance(private, _KEY_TYPES[alg]):
        raise ConfigError(f"{alg} needs a {_KEY_TYPES[alg].__name__}, got {type(private).__name__}")
    if alg == "RS256" and private.key_size < 2048:
        raise ConfigError("RS256 keys must be at least 2048 bits")
    if alg == "ES256" and private.curve.name != "secp256r1":
        raise ConfigError("ES256 keys must be on P-256")
    public = private.public_key()
    jwk = json.loads(algorithm.to_jwk(public))
    kid = _thumbprint(jwk)
    return SigningKey(kid, alg, private, public, {**jwk, "kid": kid, "alg": alg, "use": "sig"})


def _thumbprint(jwk: dict[str, str]) -> str:
    # RFC 7638: SHA-256 over the required members in lexical order, no white space. The kid
    # keeps 22 characters (132 bits): unique enough for a ring, and it rides in every token.
    members = {k: jwk[k] for k in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":")).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()[:22]


class KeyRing:
    """Keys by `kid`, all of one algorithm; `current` signs, the rest only verify."""

    def __init__(self, alg: str, keys: list[SigningKey]) -> None:
        if not keys:
            raise ConfigError("the key ring needs at least one key")
        self.alg = alg
        self._keys: dict[str, SigningKey] = {}
        for key in reversed(keys):
            self._keys[key.kid] = key
        self.current = keys[0]
        # Header segment → key, for headers that already verified: every token a key signs
        # carries the same header, so the hot path skips parsing it again.
        self._verified_headers: dict[str, SigningKey] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """Return the ring of the configured keys; raises ConfigError for a bad or missing key."""
        material = settings.jwt_secret if settings.alg == "HS256" else settings.jwt_private_key
        if material is None:
            raise ConfigError("no signing key: call with_generated_keys() first")
        keys = [load_key(settings.alg, material)]
        keys += [load_key(settings.alg, m) for m in settings.jwt_previous_keys]
        return cls(settings.alg, keys)

    def lookup(self, kid: object) -> SigningKey | None:
        """Return the key with exactly this `kid`, or None (a kid is only ever a dict key)."""
        return self._keys.get(kid) if isinstance(kid, str) else None

    def key_for_header(self, segment: str) -> SigningKey | None:
        """Return the key remembered for this exact header segment, if any."""
        return self._verified_headers.get(segment)

    def remember_header(self, segment: str, key: SigningKey) -> None:
        """Remember that `segment` verified with `key` (bounded: a few headers per key)."""
        if len(self._verified_headers) < _MAX_REMEMBERED_HEADERS:
            self._verified_headers[segment] = key

    def rotate(self, key: SigningKey) -> None:
        """Make `key` the signing key; the previous ones keep verifying until retired."""
        if key.alg != self.alg:
            raise ConfigError(f"the ring holds {self.alg} keys, not {key.alg}")
        self._keys[key.kid] = key
        self.current = key

    def retire(self, kid: str) -> None:
        """Stop accepting tokens signed by `kid`; the current key cannot be retired."""
        if kid == self.current.kid:
            raise ConfigError("cannot retire the signing key; rotate first")
        self._keys.pop(kid, None)
        self._verified_headers = {s: k for s, k in self._verified_headers.items() if k.kid != kid}

    def jwks(self) -> dict[str, object] | None:
        """Return the public JWK Set, or None for HMAC (whose keys are never published)."""
        public = [k.public_jwk for k in self._keys.values() if k.public_jwk is not None]
        return {"keys": public} if public else None
