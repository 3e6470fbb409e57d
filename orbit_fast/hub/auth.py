"""Users, passwords, tokens and roles for the hub.

- Passwords: argon2id (argon2-cffi's defaults: 64 MiB, t=3, p=4), rehashed on login when the
  parameters change.
- Tokens are 256-bit random strings handed out once; the DB keeps only HMAC-SHA256(secret,
  token), keyed with ORBIT_AUTH_SECRET, so a copy of jobs.db logs nobody in and rotating the
  secret ends every session. Sessions (dashboard, cookie) carry a CSRF value that unsafe
  requests must echo in X-CSRF-Token; API tokens (scripts, `Authorization: Bearer`) do not.
- Tokens are bound to their user's generation, which every password or role change bumps, and
  user and token ids are never reused: a token issued while its user was being deleted, reset
  or demoted never authenticates.
- Login throttling per account and per client address (LoginThrottle): 5 tries within 15
  minutes, then one per 2, 4, 8 ... seconds (at most 15 minutes), like OWASP's advice.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
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
    generation: int = 0  # the user's credentials generation the token was checked against

    def may(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


def login_keys(username: str, client: str) -> tuple[str, str, str]:
    """The throttle keys of a login: the account from this client, the client, the account."""
    name = username.lower()
    return f"pair:{name}|{client}", f"ip:{client}", f"user:{name}"


class LoginThrottle:
    """Login tries per key within a window: an account from one client and a client get FREE
    tries, an account from everywhere ACCOUNT_FREE, so one attacker cannot keep a user locked
    out of their own account (the attacker's own keys run out first).

    A try is counted when it is reserved, before the password is checked, so parallel tries
    cannot all pass the check before the first failure is recorded: past a key's budget in
    WINDOW, one try per backoff step (2, 4, 8 ... s since the last, at most MAX_WAIT). A
    success clears its account's keys and gives back its reservation of the client's. Memory
    is bounded by evicting the least recently tried keys, never by forgetting everyone.
    """

    FREE = 5
    ACCOUNT_FREE = 50  # an account under a distributed attack: every client's tries count
    WINDOW = 900.0
    MAX_WAIT = 900.0
    MAX_KEYS = 50_000
    KEEP = ACCOUNT_FREE + 16  # 2^16 s is past MAX_WAIT: older tries change nothing

    def __init__(self) -> None:
        self._tries: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        return [t for t in self._tries.get(key, ()) if now - t < self.WINDOW]

    def _budget(self, key: str) -> int:
        return self.ACCOUNT_FREE if key.startswith("user:") else self.FREE

    def reserve(self, *keys: str) -> tuple[float, float]:
        """(0, stamp) and the try counted against every key, or (seconds to wait, 0) and
        nothing counted. Give `stamp` back to `succeeded`."""
        now = time.monotonic()
        with self._lock:
            worst = 0.0
            for key in keys:
                tries = self._recent(key, now)
                if (extra := len(tries) - self._budget(key)) >= 0:
                    wait = min(2.0 ** (extra + 1), self.MAX_WAIT)
                    worst = max(worst, tries[-1] + wait - now)
            if worst > 0:
                for key in keys:  # a key under attack stays recent: eviction spares it
                    if key in self._tries:
                        self._tries.move_to_end(key)
                return worst, 0.0
            for key in keys:
                self._tries[key] = [*self._recent(key, now), now][-self.KEEP:]
                self._tries.move_to_end(key)
            while len(self._tries) > self.MAX_KEYS:
                self._tries.popitem(last=False)
            return 0.0, now

    def succeeded(self, *keys: str, stamp: float = 0.0) -> None:
        """The password was right: the account's keys (pair:, user:) start afresh; the
        client's (ip:) lose only this try's reservation."""
        with self._lock:
            for key in keys:
                if not key.startswith("ip:"):
                    self._tries.pop(key, None)
                elif (tries := self._tries.get(key)) and stamp in tries:
                    tries.remove(stamp)
