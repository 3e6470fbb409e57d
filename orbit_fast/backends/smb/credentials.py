"""Where an smb:// URL points and who logs in there.

The password comes from ORBIT_SMB_PASSWORD, else a credentials file in the mount format the
deployment guide uses (`username=`, `password=`, `domain=`; ORBIT_SMB_CREDENTIALS, default
~/.smbcredentials), else `user:password@` in the URL (warned against: it ends up in shell
history and job records). The user: the URL's, else ORBIT_SMB_USER, else the file's. Settings
are read with environment.getenv: the process environment, else the hub's env file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

from orbit_fast.environment import getenv
from orbit_fast.errors import UsageError
from orbit_fast.locations import parse as parse_location


class Share(NamedTuple):
    host: str
    port: int
    root: str  # the UNC path of the URL's directory: \\host\share[\path]
    login: dict[str, Any]  # smbclient's keywords: username, password, encrypt


def parse_url(url: str) -> tuple[str, int, str, str, str | None, str | None]:
    """(host, port, share, path below the share, user, password) of an smb:// URL, decoded
    and normalised as the roots check reads it (locations.parse: a %2e%2e or %2F never
    becomes a step out of the share's sub-path here)."""
    loc = parse_location(url)
    if loc.scheme != "smb":
        raise UsageError(f"{url}: an SMB URL is smb://[user@]host[:port]/share[/path]")
    below = "/".join(loc.parts[1:])
    return loc.host.strip("[]"), loc.port, loc.parts[0], below, loc.user, loc.password


def read_credentials(path: str) -> dict[str, str]:
    """username/password/domain from a mount-style credentials file."""
    out = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() in ("username", "password", "domain"):
            out[key.strip()] = value.strip()
    return out


def resolve(url: str) -> Share:
    """The share and login for `url`; UsageError for a malformed URL. Signing is always on
    (Samba refuses unsigned SMB 3.1.1); ORBIT_SMB_ENCRYPT=1 adds SMB 3 encryption."""
    host, port, share, path, user, password = parse_url(url)
    if password is not None:
        warnings.warn(f"{host}: a password in the SMB URL is visible in process lists and "
                      "job records; use ORBIT_SMB_PASSWORD or a credentials file",
                      stacklevel=3)  # fmt: skip
    creds_file = getenv("ORBIT_SMB_CREDENTIALS") or os.path.expanduser("~/.smbcredentials")
    creds = read_credentials(creds_file) if os.path.isfile(creds_file) else {}
    user = user or getenv("ORBIT_SMB_USER") or creds.get("username")
    password = getenv("ORBIT_SMB_PASSWORD") or password or creds.get("password")
    domain = creds.get("domain")
    if user and domain and "\\" not in user:
        user = f"{domain}\\{user}"
    root = f"\\\\{host}\\{share}" + (("\\" + path.replace("/", "\\")) if path else "")
    login = {"username": user, "password": password,
             "encrypt": getenv("ORBIT_SMB_ENCRYPT") == "1"}  # fmt: skip
    return Share(host, port, root, login)
