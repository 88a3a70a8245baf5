"""Deterministic event ids: a short prefix naming the source format + a hash of the source record's identity.

The same source record mapped twice gives the same ids (so a redelivered record is a duplicate downstream),
and records that differ in any identity part get different ids.
"""

from __future__ import annotations

from hashlib import blake2b

DIGEST_BYTES = 16  # 128 bits: collisions are not a practical concern, and ids stay short (prefix + 32 hex)
_ABSENT = b"\xff" * 8  # a length no part can have: None differs from every string


def event_id(prefix: str, *parts: str | int | None) -> str:
    """`prefix-<hash>`; parts are length-prefixed so that ("ab", "c") and ("a", "bc") differ."""
    digest = blake2b(digest_size=DIGEST_BYTES)
    for part in parts:
        if part is None:
            digest.update(_ABSENT)
            continue
        data = str(part).encode("utf-8", "surrogatepass")  # lone surrogates can reach here from JSON
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return f"{prefix}-{digest.hexdigest()}"
