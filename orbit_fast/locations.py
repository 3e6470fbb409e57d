"""Where a run reads or writes, decoded and normalised once: a local path, s3://bucket/prefix or
smb://[user[:password]@]host[:port]/share/path. The roots check (roots.py), the hub's job
checks, its overlap rule and the backends (s3.py, smb/credentials.py) all read a location
through `parse`, so what is checked is what is used.

URL rules (docs/threat-model.md, "Roots"): the path is split on "/" first and each component
then percent-decoded, once; a component that decodes to something holding "/", "\\" or NUL,
or that is "..", is refused; "." and empty components ("//") are dropped, as a POSIX path and
rsync's arguments treat them; scheme, host and (SMB) share name are lower-cased. A local path
is taken as written (no percent-decoding: "%" is an ordinary character in a file name).
"""

from __future__ import annotations

import posixpath
import re
from typing import NamedTuple

from orbit_fast.errors import UsageError

SMB_PORT = 445
MAX_LOCATION_CHARS = 4096
_HEX = re.compile(r"%([0-9A-Fa-f]{2})")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]*")
_HOST = re.compile(r"[a-z0-9._-]+|\[[0-9a-f:.]+\]")


class Location(NamedTuple):
    """A parsed location. `parts` are decoded components: below the bucket (S3), share first
    (SMB), below "/" (local). `user`/`password` are the SMB login, never part of the place."""

    scheme: str  # "" (local), "s3" or "smb"
    host: str = ""  # the bucket (S3) or the server (SMB), lower case
    port: int = 0  # SMB's, 445 unless given
    parts: tuple[str, ...] = ()
    user: str | None = None
    password: str | None = None

    @property
    def remote(self) -> bool:
        return bool(self.scheme)

    @property
    def path(self) -> str:
        """A local location's absolute path; the part below the bucket or share otherwise."""
        joined = "/".join(self.parts if not self.scheme or self.scheme == "s3" else self.parts[1:])
        return "/" + joined if not self.scheme else joined

    def place(self) -> Location:
        """The same place without the login: what roots and overlaps compare."""
        return self._replace(user=None, password=None)


def _decode(part: str, url: str) -> str:
    """One component, percent-decoded once (bytes as UTF-8)."""
    if "%" not in part:
        return part
    raw = bytearray()
    i = 0
    while i < len(part):
        m = _HEX.match(part, i)
        if m:
            raw.append(int(m.group(1), 16))
            i = m.end()
        else:
            raw += part[i].encode()
            i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{url}: {part!r} does not decode to UTF-8 text") from None


def _components(path: str, url: str, decode: bool, smb: bool) -> tuple[str, ...]:
    out = []
    for raw in path.split("/"):
        part = _decode(raw, url) if decode else raw
        if "\0" in part:
            raise UsageError(f"{url}: NUL in a path component")
        if part in ("", "."):
            continue  # the same place: a//b and a/./b are a/b
        if part == "..":
            raise UsageError(f"{url}: '..' is not allowed in a location (write the path it "
                             "leads to)")  # fmt: skip
        if decode and ("/" in part or "\\" in part):
            raise UsageError(f"{url}: the component {raw!r} decodes to {part!r}, which holds a "
                             "path separator")  # fmt: skip
        if smb and not part.strip(". "):
            # Windows servers drop trailing dots and spaces: "... " would be ".." there.
            raise UsageError(f"{url}: the component {part!r} is only dots and spaces")
        out.append(part)
    return tuple(out)


def parse(url: str) -> Location:
    """The location `url` names; UsageError saying why for one that is malformed or unsafe."""
    if not url or len(url) > MAX_LOCATION_CHARS or "\0" in url:
        raise UsageError(f"{url[:200]!r}: give a path or URL without NUL, at most "
                         f"{MAX_LOCATION_CHARS} characters")  # fmt: skip
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme in ("", "file"):
        path = rest if sep else url
        if not path.startswith("/"):
            raise UsageError(f"{url}: use an absolute path")
        return Location("", parts=_components(path, url, decode=False, smb=False))
    authority, _, path = rest.partition("/")
    if scheme == "s3":
        bucket = authority.lower()
        if not _BUCKET.fullmatch(bucket):
            raise UsageError(f"{url}: an S3 URL is s3://bucket[/prefix] (bucket names are "
                             "letters, digits, '.', '-' and '_')")  # fmt: skip
        return Location("s3", bucket, parts=_components(path, url, decode=True, smb=False))
    if scheme == "smb":
        user = password = None
        login, at, hostport = authority.rpartition("@")
        if at:
            name, colon, secret = login.partition(":")
            user = _decode(name, url) or None
            password = _decode(secret, url) if colon else None
        host, port = hostport.lower(), SMB_PORT
        m = re.fullmatch(r"(.*?)(?::(\d{1,5}))?", host)
        if m and m.group(2):
            host, port = m.group(1), int(m.group(2))
        parts = _components(path, url, decode=True, smb=True)
        if not _HOST.fullmatch(host) or not 0 < port < 65536 or not parts:
            raise UsageError(f"{url}: an SMB URL is smb://[user@]host[:port]/share[/path]")
        return Location("smb", host, port, (parts[0].lower(), *parts[1:]), user, password)
    raise UsageError(f"{url}: unknown scheme {scheme}://; use a local path, s3://bucket/prefix "
                     "or smb://[user@]host[:port]/share/path")  # fmt: skip


def _quote(part: str) -> str:
    """A decoded component as a URL writes it: '%' and unprintable characters escaped, so
    that parse(format(loc)) == loc."""
    return "".join(c if c != "%" and c.isprintable() else
                   "".join(f"%{b:02X}" for b in c.encode()) for c in part)  # fmt: skip


def _login(text: str) -> str:
    return _quote(text).replace("@", "%40").replace("/", "%2F")


def format(loc: Location) -> str:  # noqa: A001 - the inverse of parse
    """The canonical text of a location (what options and messages carry)."""
    if not loc.scheme:
        return "/" + "/".join(loc.parts)
    tail = "".join("/" + _quote(p) for p in loc.parts)
    if loc.scheme == "s3":
        return f"s3://{loc.host}{tail}"
    login = ""
    if loc.user is not None:
        login = _login(loc.user).replace(":", "%3A")
        if loc.password is not None:
            login += ":" + _login(loc.password)
        login += "@"
    port = f":{loc.port}" if loc.port != SMB_PORT else ""
    return f"smb://{login}{loc.host}{port}{tail}"


def normalise(url: str) -> str:
    """format(parse(url)): one spelling per location."""
    return format(parse(url))


def within(inner: Location, outer: Location) -> bool:
    """`inner` is `outer` or below it (same scheme, host and port; logins ignored)."""
    return ((inner.scheme, inner.host, inner.port) == (outer.scheme, outer.host, outer.port)
            and inner.parts[:len(outer.parts)] == outer.parts)  # fmt: skip


def overlap(a: Location, b: Location) -> bool:
    """One of the two is the other or below it."""
    return within(a, b) or within(b, a)


def local_path(path: str) -> Location:
    """A local path as a Location, made absolute and lexically normal first (what
    config.validate stores)."""
    return parse(posixpath.normpath(path) if path.startswith("/") else path)
