"""Users, passwords, tokens and roles for the hub.

- Passwords: argon2id (argon2-cffi's defaults: 64 MiB, t=3, p=4), rehashed on login when the
  parameters change.
- Tokens are 256-bit random strings handed out once; the DB keeps only HMAC-SHA256(secret,
  token), keyed with ORBIT_AUTH_SECRET, so a copy of jobs.db logs nobody in and rotating the
  secret ends every session. Sessions (dashboard, cookie) carry a CSRF value that unsafe
  requests must echo in X-CSRF-Token; API tokens (scripts, `Authorization: Bearer`) do not.
- Login throttling per account and per client address: after 5 failures within 15 minutes,
  each further try waits 2^k seconds (at most 15 minutes), like OWASP's advice.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

import argon2

ROLES = ("viewer", "operator", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 hashes anything, but a megabyte password is an attack

_hasher = argon2.PasswordHasher()  # argon2id


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_problem(password: str, username: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"the password needs at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"the password may have at most {MAX_PASSWORD} characters"
    if password.lower() == username.lower():
        return "the password may not be the user name"
    return None


def verify_password(pw_hash: str, password: str) -> tuple[bool, str | None]:
    """(matches, a new hash to store if the parameters changed)."""
    try:
        _hasher.verify(pw_hash, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False, None
    return True, hash_password(password) if _hasher.check_needs_rehash(pw_hash) else None


_DUMMY = hash_password("not-a-real-password-0")


def burn_time(password: str) -> None:
    """Spend what a verification costs, so a wrong user name answers as slowly as a wrong
    password (no user enumeration by timing)."""
    verify_password(_DUMMY, password)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(secret: str, token: str) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: str
    via: str  # "session" (cookie), "token" (bearer), "anonymous" (auth off)
    token_id: int = 0
    csrf: str = ""

    def may(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


class LoginThrottle:
    """Failed logins per key (account, client address) within a window."""

    FREE = 5
    WINDOW = 900.0
    MAX_WAIT = 900.0

    def __init__(self) -> None:
        self._fails: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def wait_s(self, *keys: str) -> float:
        """Seconds before another try is allowed (0: now)."""
        now = time.monotonic()
        worst = 0.0
        with self._lock:
            for key in keys:
                fails = [t for t in self._fails.get(key, ()) if now - t < self.WINDOW]
                self._fails[key] = fails
                extra = len(fails) - self.FREE
                if extra >= 0 and fails:
                    worst = max(worst, fails[-1] + min(2.0**extra, self.MAX_WAIT) - now)
        return max(0.0, worst)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._fails.setdefault(key, []).append(now)
            if len(self._fails) > 100_000:  # bounded memory under a spray of names
                self._fails.clear()

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)
