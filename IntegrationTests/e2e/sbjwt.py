"""HS256 JWTs with the standard library only (the node's --token-secret)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

# --------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------


def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def make_jwt(secret: str, claims: dict, header: dict | None = None) -> str:
    h = _b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    p = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{_b64url(sig)}"


def user_token(secret: str, user: str, ttl: float = 3600, **claims: Any) -> str:
    return make_jwt(secret, {"sub": user, "exp": int(time.time() + ttl), **claims})
