"""The web configuration file and identities: Basic users, bearer JWTs, roles, TLS, and clear errors."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import ssl
import time
from pathlib import Path

import bcrypt
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from consumer.ops.exchange import Response
from consumer.web.auth import (
    ANONYMOUS,
    RELEASE_ADDRESSES_ROLE,
    VIEW_ADDRESSES_ROLE,
    Auth,
    Identity,
    WebConfigError,
    load_web_config,
)
from consumer.web.owners import forward
from tests.web.fakes import Recorder, basic, request
from tests.web.serving import serve

ISSUER, AUDIENCE = "https://idp.test/", "sendtrack"


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def write(tmp_path: Path, text: str, name: str = "web.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def users_yaml() -> str:
    return f"""
basic_auth_users:
  alice: "{hashed("alice-pw")}"
  bob: "{hashed("bob-pw")}"
  carol: "{hashed("carol-pw")}"
sendtrack_roles:
  alice: [start_deliveries, viewer]
  bob: [viewer]
"""


def test_without_a_file_everyone_reads_anonymously_and_nobody_acts() -> None:
    auth = Auth()
    identity = auth.identify({})
    assert identity is ANONYMOUS
    assert auth.can_read(identity) and not auth.can_act(identity) and not auth.can_confirm(identity)
    assert auth.identify(basic("alice", "x")) is ANONYMOUS  # credentials mean nothing without users


def test_basic_users_get_their_roles(tmp_path: Path, users_yaml: str) -> None:
    auth = Auth(load_web_config(write(tmp_path, users_yaml)))
    alice = auth.identify(basic("alice", "alice-pw"))
    assert alice is not None and alice.user == "alice" and alice.method == "basic"
    assert auth.can_confirm(alice) and auth.can_read(alice)
    bob = auth.identify(basic("bob", "bob-pw"))
    assert bob is not None and auth.can_read(bob) and auth.can_act(bob) and not auth.can_confirm(bob)
    carol = auth.identify(basic("carol", "carol-pw"))  # authenticated, but no role: may not even read
    assert carol is not None and not auth.can_read(carol) and not auth.can_act(carol)


def test_address_roles_are_held_by_verified_users_only() -> None:
    both = frozenset({VIEW_ADDRESSES_ROLE, RELEASE_ADDRESSES_ROLE})
    dave, viewer = Identity("dave", both, "bearer"), Identity("carol", frozenset({VIEW_ADDRESSES_ROLE}), "basic")
    assert Auth.can_view_addresses(dave) and Auth.can_release_addresses(dave)
    assert Auth.can_view_addresses(viewer) and not Auth.can_release_addresses(viewer)
    assert not Auth.can_view_addresses(Identity("x", frozenset({"start_deliveries"}), "basic"))
    unverified = Identity("anonymous", both, ANONYMOUS.method)  # whatever it claims, the open view's reader
    assert not Auth.can_view_addresses(unverified) and not Auth.can_release_addresses(unverified)
    assert not Auth.can_view_addresses(None) and not Auth().can_view_addresses(Auth().identify({}))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("alice", "wrong"),
        basic("mallory", "alice-pw"),
        basic("alice", "x" * 100),  # beyond bcrypt's 72 bytes
        {"authorization": "Basic !!!not-base64"},
        {"authorization": "Basic " + "YWxpY2U="},  # "alice", no colon
        {"authorization": "Bearer abc"},  # no JWT configured
        {"authorization": "Digest x"},
    ],
)
def test_bad_or_missing_credentials_identify_nobody(tmp_path: Path, users_yaml: str, headers: dict) -> None:
    auth = Auth(load_web_config(write(tmp_path, users_yaml)))
    assert auth.identify(headers) is None
    assert ("WWW-Authenticate", 'Basic realm="sendtrack", charset="UTF-8"') in auth.challenges()


def test_a_verified_password_is_remembered_but_only_that_password(
    tmp_path: Path, users_yaml: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = Auth(load_web_config(write(tmp_path, users_yaml)))
    checks = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda pw, h: checks.append(pw) or real(pw, h))
    assert auth.identify(basic("alice", "alice-pw")) is not None
    assert auth.identify(basic("alice", "alice-pw")) is not None  # bcrypt costs ~50 ms: not at every request
    assert auth.identify(basic("alice", "alice-pw2")) is None
    assert auth.identify(basic("alice", "alice-pw2")) is None  # failures are never remembered
    assert checks == [b"alice-pw", b"alice-pw2", b"alice-pw2"]


def test_a_file_with_tls_only_asks_for_no_credentials(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = load_web_config(write(tmp_path, f"tls_server_config:\n  cert_file: {cert.name}\n  key_file: {key.name}\n"))
    assert isinstance(config.ssl_context(), ssl.SSLContext)
    assert Auth(config).identify({}) is ANONYMOUS


def test_the_tls_part_serves_https_and_forwarding_trusts_a_given_context(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = load_web_config(write(tmp_path, f"tls_server_config:\n  cert_file: {cert.name}\n  key_file: {key.name}\n"))
    owner = Recorder(Response(200, b"secret figures"))
    with serve(owner, tls=config.ssl_context()) as url:
        assert url.startswith("https://")
        client = ssl.create_default_context(cafile=str(cert))
        client.check_hostname = False  # the certificate names localhost, the test dials 127.0.0.1
        assert forward(request("/x"), url, context=client).body == b"secret figures"
        with pytest.raises(OSError):  # an untrusted certificate is refused
            forward(request("/x"), url)
    assert owner.requests[0].secure


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("basic_auth_users: [alice]", "basic_auth_users: must be a mapping"),
        ("basic_auth_users:\n  alice: plain-password", "basic_auth_users.alice: not a bcrypt hash"),
        ("basic_auth_user:\n  alice: x", "unsupported key(s) basic_auth_user"),
        ("sendtrack_roles:\n  ghost: [viewer]", "sendtrack_roles: users not in basic_auth_users: ghost"),
        ("tls_server_config:\n  cert_file: a.crt", "tls_server_config: needs both cert_file and key_file"),
        ("tls_server_config:\n  cert_file: a.crt\n  key_file: a.key", "tls_server_config.cert_file: no such file"),
        ("tls_server_config:\n  client_auth_type: x", "unsupported key(s) client_auth_type"),
        ("sendtrack_jwt:\n  issuer: x", "sendtrack_jwt.audience: is required"),
        ("sendtrack_jwt:\n  issuer: x\n  audience: y", "needs exactly one of public_key_file, jwks_file"),
        ("sendtrack_jwt:\n  issuer: x\n  audience: y\n  algorithms: [HS256]\n  jwks_file: k", "algorithms: must be"),
        ("a: [", "cannot read the web configuration"),
        ("- just a list", "must be a mapping"),
    ],
)
def test_a_bad_file_is_named_with_what_is_wrong(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(WebConfigError) as error:
        load_web_config(path)
    assert str(error.value).startswith(f"{path}: ") and problem in str(error.value)


def test_a_missing_file_and_a_broken_certificate_are_named(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match=r"nothere\.yml: cannot read"):
        load_web_config(tmp_path / "nothere.yml")
    (tmp_path / "bad.crt").write_text("not a certificate")
    (tmp_path / "bad.key").write_text("not a key")
    path = write(tmp_path, "tls_server_config:\n  cert_file: bad.crt\n  key_file: bad.key\n")
    with pytest.raises(WebConfigError, match=r"tls_server_config: cannot load .*bad\.crt"):
        load_web_config(path)


def test_the_shared_secret_is_the_secret_file_else_random_per_process(tmp_path: Path, users_yaml: str) -> None:
    (tmp_path / "web.key").write_bytes(b"k" * 32)
    shared = write(tmp_path, users_yaml + "sendtrack_secret_file: web.key\n", "shared.yml")
    assert Auth(load_web_config(shared)).secret == Auth(load_web_config(shared)).secret == b"k" * 32
    alone = write(tmp_path, users_yaml)
    assert Auth(load_web_config(alone)).secret != Auth(load_web_config(alone)).secret
    (tmp_path / "web.key").write_bytes(b"short")
    with pytest.raises(WebConfigError, match=r"sendtrack_secret_file: .* holds 5 bytes"):
        load_web_config(shared)


# -- bearer tokens ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def token(key, algorithm: str, kid: str | None = None, **claims) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "dana", "exp": now + 300, "iat": now, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def jwt_auth(tmp_path: Path, key_lines: str, extra: str = "") -> Auth:
    text = f"sendtrack_jwt:\n  issuer: {ISSUER}\n  audience: {AUDIENCE}\n{key_lines}{extra}"
    return Auth(load_web_config(write(tmp_path, text)))


def test_a_token_signed_by_the_configured_key_identifies_its_subject_and_roles(tmp_path: Path, rsa_key) -> None:
    (tmp_path / "idp.pem").write_bytes(public_pem(rsa_key))
    auth = jwt_auth(tmp_path, "  public_key_file: idp.pem\n", "  roles_claim: realm_access.roles\n")
    identity = auth.identify(bearer(token(rsa_key, "RS256", realm_access={"roles": ["start_deliveries"]})))
    assert identity is not None and identity.user == "dana" and identity.method == "bearer"
    assert auth.can_confirm(identity)
    assert ("WWW-Authenticate", 'Bearer realm="sendtrack"') in auth.challenges()


def test_roles_may_be_a_space_separated_claim(tmp_path: Path, ec_key) -> None:
    (tmp_path / "idp.pem").write_bytes(public_pem(ec_key))
    auth = jwt_auth(tmp_path, "  public_key_file: idp.pem\n", "  roles_claim: scope\n")
    identity = auth.identify(bearer(token(ec_key, "ES256", scope="viewer start_deliveries")))
    assert identity is not None and identity.roles == {"viewer", "start_deliveries"}


def test_a_jwks_file_picks_the_key_by_kid(tmp_path: Path, rsa_key, ec_key) -> None:
    keys = [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "r1", "use": "sig"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "e1", "use": "sig"},
    ]
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": keys}))
    auth = jwt_auth(tmp_path, "  jwks_file: jwks.json\n")
    assert auth.identify(bearer(token(ec_key, "ES256", kid="e1", roles=["viewer"]))).user == "dana"
    assert auth.identify(bearer(token(rsa_key, "RS256", kid="r1", roles=["viewer"]))).user == "dana"
    assert auth.identify(bearer(token(rsa_key, "RS256", kid="e1"))) is None  # the wrong key for its kid
    assert auth.identify(bearer(token(rsa_key, "RS256", kid="nope"))) is None


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://evil.test/"},
        {"aud": "someone-else"},
        {"exp": int(time.time()) - 3600},
        {"exp": None},
        {"sub": None},
    ],
)
def test_tokens_with_wrong_claims_identify_nobody(tmp_path: Path, rsa_key, claims: dict) -> None:
    (tmp_path / "idp.pem").write_bytes(public_pem(rsa_key))
    auth = jwt_auth(tmp_path, "  public_key_file: idp.pem\n")
    assert auth.identify(bearer(token(rsa_key, "RS256", **claims))) is None


def test_tokens_signed_otherwise_identify_nobody(tmp_path: Path, rsa_key, ec_key) -> None:
    (tmp_path / "idp.pem").write_bytes(public_pem(rsa_key))
    auth = jwt_auth(tmp_path, "  public_key_file: idp.pem\n", "  algorithms: [RS256]\n")
    assert auth.identify(bearer(token(ec_key, "ES256"))) is None  # an algorithm not allowed
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert auth.identify(bearer(token(other, "RS256"))) is None  # another key
    assert auth.identify(bearer(hs256_with_public_key(rsa_key))) is None  # the public key as an HMAC secret
    assert auth.identify(bearer("not.a.token")) is None


def hs256_with_public_key(key) -> str:
    """The classic forgery: an HMAC token keyed by the verifier's public key (PyJWT will not make one)."""

    def part(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": 2**40}
    signed = part(b'{"alg":"HS256","typ":"JWT"}') + b"." + part(json.dumps(claims).encode())
    return (signed + b"." + part(hmac.new(public_pem(key), signed, hashlib.sha256).digest())).decode()


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
