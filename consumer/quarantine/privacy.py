"""Addresses are personal data: logs name an address only by a keyed hash (HMAC-SHA256), never in clear, and
metrics never carry one as a label.

The key comes from SENDTRACK_ADDRESS_HASH_KEY (the environment only: a flag would show it in the process list). Set
it alike on every instance and tool to compare hashes across them and across restarts; without it each process
draws a random key, so its hashes still hide the address but match only within that process.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from consumer.quarantine.signals import normal_address

KEY_VARIABLE = "SENDTRACK_ADDRESS_HASH_KEY"
_random_key = secrets.token_bytes(32)


def hash_key(environ: dict[str, str] | None = None) -> bytes:
    """The configured key, or this process's random one."""
    configured = (os.environ if environ is None else environ).get(KEY_VARIABLE, "")
    return configured.encode() if configured else _random_key


def address_ref(address: str, key: bytes | None = None) -> str:
    """What a log line says for an address: 16 hex digits of the keyed hash of its normal form."""
    digest = hmac.new(hash_key() if key is None else key, normal_address(address).encode(), hashlib.sha256)
    return digest.hexdigest()[:16]
