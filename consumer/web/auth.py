"""Who is asking, and what they may do: the web configuration file and the identity of a request.

The file follows the convention of Prometheus' own web server (`--web-config FILE`):

    tls_server_config:            # optional: serve HTTPS
      cert_file: server.crt       # paths relative to this file
      key_file: server.key
    basic_auth_users:             # name: bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')
      alice: $2y$10$...
    sendtrack_roles:              # sendtrack's own: the roles of each user
      alice: [start_deliveries]
    sendtrack_jwt:                # optional: bearer tokens of an identity provider
      issuer: https://idp.example.com/
      audience: sendtrack
      public_key_file: idp.pem    # or jwks_file: jwks.json
      algorithms: [RS256, ES256]  # the default; nothing else is accepted
      roles_claim: roles          # a dotted path (realm_access.roles); a list or a space-separated string
      user_claim: sub
    sendtrack_protect_metrics: true # optional: /metrics needs a user with a role (scrape with basic_auth)
    sendtrack_secret_file: web.key  # optional: random bytes (32 or more) keying CSRF tokens, the same file on
                                  # every instance (e.g. head -c 32 /dev/urandom > web.key); else random per process

Without a file the view is read-only for everyone, and nobody holds a role: no address page, no action. With one,
reading needs an authenticated user with at least one role, confirming a send needs `start_deliveries`, an
address's page `view_addresses`, and releasing an address `release_addresses`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import ssl
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import bcrypt
import jwt
import yaml
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from consumer.core.events import START_DELIVERIES_ROLE
from consumer.ops import logging as logs

BASIC, BEARER, ANONYMOUS_METHOD = "basic", "bearer", "anonymous"
ALGORITHMS = ("RS256", "ES256")
_TOP_KEYS = {
    "tls_server_config",
    "basic_auth_users",
    "sendtrack_roles",
    "sendtrack_jwt",
    "sendtrack_secret_file",
    "sendtrack_protect_metrics",
}
# The address pages' roles (the view's own; start_deliveries is the core's): seeing an address's status and recipient
# history (personal data), and releasing a quarantined or denylisted address.
VIEW_ADDRESSES_ROLE = "view_addresses"
RELEASE_ADDRESSES_ROLE = "release_addresses"
_MIN_SECRET_BYTES = 32
_TLS_KEYS = {"cert_file", "key_file"}
_JWT_KEYS = {"issuer", "audience", "public_key_file", "jwks_file", "algorithms", "roles_claim", "user_claim"}
_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")
_VERIFIED_CACHE_SIZE = 1024
_DEFAULT_COST = 10
_JWT_LEEWAY_S = 30


@dataclass(frozen=True)
class Identity:
    user: str
    roles: frozenset[str]
    method: str  # basic, bearer or anonymous

    @property
    def authenticated(self) -> bool:
        return self.method != ANONYMOUS_METHOD


ANONYMOUS = Identity("anonymous", frozenset(), ANONYMOUS_METHOD)


class WebConfigError(ValueError):
    """The web configuration file is unusable; the message names the file and what is wrong."""


@dataclass(frozen=True)
class JwtSettings:
    issuer: str
    audience: str
    keys: Any  # a public key object, or a jwt.PyJWKSet
    algorithms: tuple[str, ...]
    roles_claim: str
    user_claim: str


@dataclass(frozen=True)
class WebConfig:
    path: Path
    users: Mapping[str, bytes]  # bcrypt hashes
    roles: Mapping[str, frozenset[str]]
    jwt: JwtSettings | None
    cert_file: Path | None
    key_file: Path | None
    secret: bytes | None  # sendtrack_secret_file: shared by the instances, so CSRF tokens verify on any of them
    protect_metrics: bool = False  # sendtrack_protect_metrics: /metrics needs a user too (/healthz, /readyz never)

    @property
    def authenticates(self) -> bool:
        """As in Prometheus, a file without users (TLS only) asks nobody for credentials."""
        return bool(self.users) or self.jwt is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context, or None to serve plain HTTP."""
        if self.cert_file is None or self.key_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(
                f"{self.path}: tls_server_config: cannot load {self.cert_file} / {self.key_file}: {exc}"
            ) from None
        return context


def load_web_config(path: str | Path) -> WebConfig:
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise WebConfigError(f"{path}: cannot read the web configuration: {exc}") from None
    where = _Where(path)
    section = where.mapping(data, "", _TOP_KEYS)
    users = {
        u: where.bcrypt_hash(u, h)
        for u, h in where.mapping(section.get("basic_auth_users"), "basic_auth_users").items()
    }
    roles = {u: where.roles(u, r) for u, r in where.mapping(section.get("sendtrack_roles"), "sendtrack_roles").items()}
    if set(roles) - set(users):  # a typo in a name would silently leave a user without roles
        where.fail("sendtrack_roles", f"users not in basic_auth_users: {', '.join(sorted(set(roles) - set(users)))}")
    tls = where.mapping(section.get("tls_server_config"), "tls_server_config", _TLS_KEYS)
    if bool(tls.get("cert_file")) != bool(tls.get("key_file")):
        where.fail("tls_server_config", "needs both cert_file and key_file")
    config = WebConfig(
        path,
        users,
        roles,
        where.jwt(section.get("sendtrack_jwt")),
        where.file(tls.get("cert_file"), "tls_server_config.cert_file"),
        where.file(tls.get("key_file"), "tls_server_config.key_file"),
        where.secret(section.get("sendtrack_secret_file")),
        where.flag(section.get("sendtrack_protect_metrics", False), "sendtrack_protect_metrics"),
    )
    config.ssl_context()  # a bad certificate fails now, with the file's name, not at the first connection
    return config


class _Where:
    """Checks of the file's parts; every failure names the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> NoReturn:
        raise WebConfigError(f"{self.path}: {key + ': ' if key else ''}{problem}")

    def mapping(self, value: Any, key: str, allowed: set[str] | None = None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            self.fail(key, "must be a mapping with string keys")
        extra = sorted(set(value) - allowed) if allowed is not None else []
        if extra:
            self.fail(key, f"unsupported key(s) {', '.join(extra)} (supported: {', '.join(sorted(allowed or ()))})")
        return value

    def bcrypt_hash(self, user: str, value: Any) -> bytes:
        hashed = value.encode() if isinstance(value, str) else b""
        if not hashed.startswith(_BCRYPT_PREFIXES) or len(hashed) != 60 or not hashed[4:6].isdigit():
            self.fail(f"basic_auth_users.{user}", "not a bcrypt hash")
        return hashed

    def roles(self, user: str, value: Any) -> frozenset[str]:
        if not isinstance(value, list) or not all(isinstance(r, str) and r for r in value):
            self.fail(f"sendtrack_roles.{user}", "must be a list of role names")
        return frozenset(value)

    def file(self, value: Any, key: str) -> Path | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.fail(key, "must be a file name")
        found = self.path.parent / value
        if not found.is_file():
            self.fail(key, f"no such file: {found}")
        return found

    def flag(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, "must be true or false")
        return value

    def secret(self, value: Any) -> bytes | None:
        path = self.file(value, "sendtrack_secret_file")
        if path is None:
            return None
        secret = path.read_bytes()
        if len(secret) < _MIN_SECRET_BYTES:
            self.fail("sendtrack_secret_file", f"{path} holds {len(secret)} bytes, fewer than {_MIN_SECRET_BYTES}")
        return secret

    def jwt(self, value: Any) -> JwtSettings | None:
        if value is None:
            return None
        section = self.mapping(value, "sendtrack_jwt", _JWT_KEYS)
        for required in ("issuer", "audience"):
            if not isinstance(section.get(required), str) or not section[required]:
                self.fail(f"sendtrack_jwt.{required}", "is required")
        algorithms = section.get("algorithms", list(ALGORITHMS))
        if not isinstance(algorithms, list) or not algorithms or not set(algorithms) <= set(ALGORITHMS):
            self.fail("sendtrack_jwt.algorithms", f"must be a non-empty list of {', '.join(ALGORITHMS)}")
        return JwtSettings(
            section["issuer"],
            section["audience"],
            self.jwt_keys(section),
            tuple(algorithms),
            str(section.get("roles_claim", "roles")),
            str(section.get("user_claim", "sub")),
        )

    def jwt_keys(self, section: dict[str, Any]) -> Any:
        if ("public_key_file" in section) == ("jwks_file" in section):
            self.fail("sendtrack_jwt", "needs exactly one of public_key_file, jwks_file")
        key = "public_key_file" if "public_key_file" in section else "jwks_file"
        path = self.file(section[key], f"sendtrack_jwt.{key}")
        assert path is not None
        try:
            if key == "public_key_file":
                return load_pem_public_key(path.read_bytes())
            return jwt.PyJWKSet.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            self.fail(f"sendtrack_jwt.{key}", f"unusable key in {path}: {exc}")


class Auth:
    """Identifies requests. Without a config everyone is ANONYMOUS; with one, only valid credentials count."""

    def __init__(self, config: WebConfig | None = None) -> None:
        self.config = config if config is not None and config.authenticates else None
        self.secret = config.secret if config is not None and config.secret else secrets.token_bytes(32)
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[bytes, None] = {}  # keyed digests of (user, password) pairs bcrypt accepted
        self._lock = threading.Lock()
        # Unknown users are checked against this, so a wrong name costs as long as a wrong password: at the cost the
        # file's hashes use (a fixed cost would answer unknown names faster or slower than known ones).
        self._decoy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(_usual_cost(self.config)))
        for warning in startup_warnings(self.config):
            logs.get("sendtrack.web.auth").warning("web_config_warning", warning=warning, file=str(self.config.path))

    @property
    def enabled(self) -> bool:
        return self.config is not None

    def claimed(self, headers: Mapping[str, str]) -> tuple[str, str | None] | None:
        """The sign-in a request attempts, verified or not: (method, the Basic user name); None without any."""
        if self.config is None or "authorization" not in headers:
            return None
        scheme, _, credentials = headers["authorization"].strip().partition(" ")
        if scheme.lower() == BASIC:
            pair = _basic_pair(credentials.strip())
            return BASIC, pair[0] if pair else None
        return scheme.lower()[:16] or "none", None  # bounded: it labels a counter

    def identify(self, headers: Mapping[str, str]) -> Identity | None:
        """The request's identity; None when authentication is on and the credentials are missing or bad."""
        if self.config is None:
            return ANONYMOUS
        scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() == BASIC:
            return self._basic(credentials.strip())
        if scheme.lower() == BEARER and self.config.jwt is not None:
            return self._bearer(credentials.strip(), self.config.jwt)
        return None

    def challenges(self) -> list[tuple[str, str]]:
        """WWW-Authenticate headers of a 401: Basic makes browsers ask for a password."""
        headers = [("WWW-Authenticate", 'Basic realm="sendtrack", charset="UTF-8"')]
        if self.config is not None and self.config.jwt is not None:
            headers.append(("WWW-Authenticate", 'Bearer realm="sendtrack"'))
        return headers

    def can_read(self, identity: Identity | None) -> bool:
        """Everyone without a config; with one, an authenticated user with any role."""
        return identity is not None and (self.config is None or bool(identity.roles))

    def can_act(self, identity: Identity | None) -> bool:
        """Actions need a verified user: never the anonymous reader of a view without a config."""
        return identity is not None and identity.authenticated and self.can_read(identity)

    @staticmethod
    def can_confirm(identity: Identity | None) -> bool:
        return _holds(identity, START_DELIVERIES_ROLE)

    @staticmethod
    def can_view_addresses(identity: Identity | None) -> bool:
        """Addresses are personal data: only a verified user with the role sees one (never the open view's reader)."""
        return _holds(identity, VIEW_ADDRESSES_ROLE)

    @staticmethod
    def can_release_addresses(identity: Identity | None) -> bool:
        return _holds(identity, RELEASE_ADDRESSES_ROLE)

    def _basic(self, credentials: str) -> Identity | None:
        assert self.config is not None
        pair = _basic_pair(credentials)
        if pair is None:
            return None
        user, password = pair
        if not self._password_ok(user, password.encode(), self.config.users.get(user)):
            return None
        return Identity(user, self.config.roles.get(user, frozenset()), BASIC)

    def _password_ok(self, user: str, password: bytes, hashed: bytes | None) -> bool:
        digest = hmac.new(self._cache_key, user.encode() + b"\0" + password, hashlib.sha256).digest()
        with self._lock:
            if hashed is not None and digest in self._verified:
                return True
        try:
            ok = bcrypt.checkpw(password, hashed or self._decoy) and hashed is not None
        except ValueError:  # longer than bcrypt's 72 bytes: no hash in the file can match it
            return False
        if ok:
            with self._lock:
                if len(self._verified) >= _VERIFIED_CACHE_SIZE:
                    self._verified.pop(next(iter(self._verified)))
                self._verified[digest] = None
        return ok

    def _bearer(self, token: str, settings: JwtSettings) -> Identity | None:
        try:
            claims = jwt.decode(
                token,
                _signing_key(token, settings.keys),
                algorithms=list(settings.algorithms),
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=_JWT_LEEWAY_S,
                options={"require": ["exp", "iss", "aud"]},
            )
        except (jwt.PyJWTError, KeyError, ValueError, TypeError):  # no key for its kid; a key unfit for its alg
            return None
        user = _claim(claims, settings.user_claim)
        if not isinstance(user, str) or not user:
            return None
        return Identity(user, _roles(_claim(claims, settings.roles_claim)), BEARER)


def _holds(identity: Identity | None, role: str) -> bool:
    """Roles are held by verified users only: the reader of a view without users holds none."""
    return identity is not None and identity.authenticated and role in identity.roles


def _basic_pair(credentials: str) -> tuple[str, str] | None:
    try:
        user, sep, password = base64.b64decode(credentials, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def startup_warnings(config: WebConfig | None) -> list[str]:
    """What an operator should know about a web configuration that works but is weaker than it looks."""
    if config is None or not config.authenticates:
        return []
    warnings = []
    if config.users and config.cert_file is None:
        warnings.append("Basic auth without TLS: passwords cross the network readable unless a proxy ends TLS")
    if config.secret is None:
        warnings.append("no sendtrack_secret_file: form tokens verify only on the instance that issued them")
    return warnings


def _usual_cost(config: WebConfig | None) -> int:
    """The bcrypt cost most of the file's hashes use ($2y$<cost>$...), 10 without users."""
    costs = Counter(int(hashed[4:6]) for hashed in config.users.values()) if config is not None else Counter()
    return costs.most_common(1)[0][0] if costs else _DEFAULT_COST


def _signing_key(token: str, keys: Any) -> Any:
    if not isinstance(keys, jwt.PyJWKSet):
        return keys
    kid = jwt.get_unverified_header(token).get("kid")
    if kid is None and len(keys.keys) == 1:
        return keys.keys[0].key
    return keys[kid].key


def _claim(claims: Mapping[str, Any], dotted: str) -> Any:
    value: Any = claims
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _roles(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(r for r in value if isinstance(r, str) and r)
    return frozenset()
