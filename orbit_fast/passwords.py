"""Where a repository's password comes from: a file, a command, the environment, a terminal.

In the order restic users know: `--password-file` / `--password-command` (given to the run),
then ORBIT_PASSWORD_FILE, ORBIT_PASSWORD_COMMAND, ORBIT_PASSWORD (the least safe: the
environment of a process is readable by its user and lands in crash reports), then a prompt
when stdin is a terminal. The environment is read through environment.getenv, so a hub's env
file reaches its jobs. A `PasswordSource` names where the password is, never the password:
it is what a hub job stores. The password is read when an encrypted repository is opened,
and not kept after its keys are unwrapped.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
import subprocess
import sys
from collections.abc import Callable

import msgspec

from orbit_fast.environment import getenv
from orbit_fast.errors import PasswordMissing, UsageError

MAX_PASSWORD_BYTES = 4096
COMMAND_TIMEOUT_S = 60


class PasswordSource(msgspec.Struct, frozen=True, kw_only=True):
    file: str = ""  # a path; its first line is the password
    command: str = ""  # a command line (shlex-split, no shell); its first output line is it

    def describe(self) -> str:
        return (f"password file {self.file}" if self.file else
                f"password command {self.command!r}" if self.command else "")  # fmt: skip


def read_password(source: PasswordSource | None, warn: Callable[[str], None] | None = None,
                  *, confirm: bool = False,
                  prompt: str = "repository password: ") -> bytes:  # fmt: skip
    """The password from the first place that has one; PasswordMissing if none does.
    `warn` hears about a password file that others can read. `confirm`: a prompt asks twice
    (a new repository or key)."""
    source = source or PasswordSource()
    env_file = getenv("ORBIT_PASSWORD_FILE") or ""
    env_cmd = getenv("ORBIT_PASSWORD_COMMAND") or ""
    env_pw = getenv("ORBIT_PASSWORD")
    if source.file:
        pw = _from_file(source.file, "--password-file", warn)
    elif source.command:
        pw = _from_command(source.command, "--password-command")
    elif env_file:
        pw = _from_file(env_file, "ORBIT_PASSWORD_FILE", warn)
    elif env_cmd:
        pw = _from_command(env_cmd, "ORBIT_PASSWORD_COMMAND")
    elif env_pw is not None:
        pw = env_pw.encode()
    elif sys.stdin.isatty():
        pw = _prompt(prompt, confirm)
    else:
        raise PasswordMissing(
            "the repository is encrypted and no password was given: pass --password-file F "
            "or --password-command CMD, set ORBIT_PASSWORD_FILE or ORBIT_PASSWORD_COMMAND "
            "(or ORBIT_PASSWORD, the least safe), or run on a terminal to be asked"
        )
    if not pw:
        raise PasswordMissing("the password given is empty; an empty password is not accepted")
    return pw


def read_new_password(source: PasswordSource, warn: Callable[[str], None] | None = None) -> bytes:
    """A new password (`key add`, `key passwd`): from the source's file or command, else
    typed twice on a terminal; never from the environment, which holds the current one."""
    if source.file:
        pw = _from_file(source.file, "--new-password-file", warn)
    elif source.command:
        pw = _from_command(source.command, "--new-password-command")
    elif sys.stdin.isatty():
        pw = _prompt("new password: ", confirm=True)
    else:
        raise PasswordMissing("no new password: pass --new-password-file F or "
                              "--new-password-command CMD, or run on a terminal")  # fmt: skip
    if not pw:
        raise PasswordMissing("the new password is empty; an empty password is not accepted")
    return pw


def _from_file(path: str, where: str, warn: Callable[[str], None] | None) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink: read through it, on purpose, like restic
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        else:
            raise PasswordMissing(
                f"cannot read the password file {path} ({where}): {exc.strerror}; check the "
                "path and its permissions"
            ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PasswordMissing(f"the password file {path} ({where}) is not a regular file")
        if st.st_mode & 0o077 and warn is not None:
            warn(f"the password file {path} can be read by other users (mode "
                 f"{stat.S_IMODE(st.st_mode):04o}); `chmod 600 {path}`")  # fmt: skip
        data = os.read(fd, MAX_PASSWORD_BYTES + 1)
    finally:
        os.close(fd)
    return _first_line(data, f"the password file {path}")


def _from_command(command: str, where: str) -> bytes:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"{where}: cannot split {command!r} into words ({exc})") from None
    if not argv:
        raise UsageError(f"{where} is empty")
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              timeout=COMMAND_TIMEOUT_S, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PasswordMissing(f"the password command {argv[0]} ({where}) could not run: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None  # fmt: skip
    if done.returncode != 0:
        raise PasswordMissing(f"the password command {argv[0]} ({where}) failed with exit "
                              f"status {done.returncode}; nothing was read")  # fmt: skip
    return _first_line(done.stdout[: MAX_PASSWORD_BYTES + 1], f"the password command {argv[0]}")


def _first_line(data: bytes, what: str) -> bytes:
    if len(data) > MAX_PASSWORD_BYTES:
        raise PasswordMissing(f"{what} gives more than {MAX_PASSWORD_BYTES} bytes; it should "
                              "hold the password alone")  # fmt: skip
    line = data.split(b"\n", 1)[0]
    return line[:-1] if line.endswith(b"\r") else line


def _prompt(prompt: str, confirm: bool) -> bytes:
    import getpass

    pw = getpass.getpass(prompt).encode()
    if confirm and getpass.getpass("again: ").encode() != pw:
        raise PasswordMissing("the two passwords typed differ; nothing was changed")
    return pw
