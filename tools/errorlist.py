"""Print the exit-code table from orbit_fast.errors; --check fails on a code used twice or a
table in docs/exit-codes.md that does not match the code."""

from __future__ import annotations

import sys
from pathlib import Path

from orbit_fast import errors

DOC = Path(__file__).resolve().parent.parent / "docs" / "exit-codes.md"
MEANING = {
    "OK": "success: the destination matches the source",
    "PARTIAL": "finished, but some source entries were skipped (listed in the summary and "
    "in --json warnings); rerun once they are readable. Also: metadata the destination could "
    "not keep, or that a sync from S3 left out (a `metadata` warning per kind, with a count)",
    "USAGE": "bad arguments or options (nothing was changed)",
    "SOURCE": "the source is missing, not a directory or unreadable",
    "DESTINATION": "the destination cannot be used: inside the source (or the reverse), "
    "read-only, not a directory, or a write failed",
    "NETWORK_DB": "the jobs DB would be on a network filesystem (SMB/CIFS/NFS): refused",
    "BUSY": "another run holds the jobs DB; wait, or use another --db-path",
    "DISK_FULL": "no space left on the destination; free space and rerun to resume",
    "WORKER": "worker processes kept dying on the same task; progress is checkpointed",
    "DATABASE": "the jobs DB is unreadable, damaged or from a newer version",
    "NATIVE": "compiled kernels missing or stale; reinstall",
    "REPOSITORY": "not a backup repository, a repository of an older (format 1) or newer "
    "format, or a damaged config or snapshot",
    "LOCKED": "another process holds the repository lock; wait, or `orbit-fast unlock REPO` "
    "if that process is gone",
    "INTEGRITY": "verify or restore found missing or damaged chunks (each named with its "
    "snapshot and file), or a tree that is missing, altered or unsafe (named with its "
    "directory); files that do not use them were restored",
    "REMOTE": "remote storage (S3, SMB) unreachable after retries, credentials refused, bucket "
    "or share missing, or permission denied; the message names which",
    "JOB_FAILED": "`orbit-fast job run --wait`: the hub ran the job and it failed or was "
    "cancelled (the message has the job's error)",
    "HUB": "the hub is unreachable, refused the login or token, or has no such job",
    "OUTSIDE_ROOTS": "a source, destination, repository or restore target is not reached "
    "from an allowed root (ORBIT_ALLOWED_ROOTS) through directories only, now: a symbolic link "
    "in its path, or roots narrowed since the job was made; nothing was touched",
    "WRONG_PASSWORD": "no key of the encrypted repository opens with the password given; "
    "check the password file, command or ORBIT_PASSWORD (`orbit-fast key list` with a good "
    "password shows the keys)",
    "NO_PASSWORD": "the repository is encrypted and no password was given: use "
    "--password-file, --password-command, ORBIT_PASSWORD_FILE, ORBIT_PASSWORD_COMMAND, "
    "ORBIT_PASSWORD, or run on a terminal to be asked",
    "KEY_DAMAGED": "a key file of the repository is unreadable or damaged (named); another "
    "key's password still opens it, `orbit-fast key list` shows them",
    "AUTHENTICATION": "an object of an encrypted repository (snapshot, tree, pack index, blob, "
    "lock or config, named) failed authentication: changed, truncated, moved or from another "
    "repository; what does not depend on it was used, and `orbit-fast verify` lists them all",
    "DELETIONS_WITHHELD": "a --mirror run copied what it could and deleted nothing: its "
    "source lies on another filesystem than at the last successful run (unmounted?), has no "
    "files, or more would be deleted than --max-delete allows; the message says which and "
    "how to override it for one run (docs/sync.md, \"Mirror safety\")",
    "INTERRUPTED": "stopped by SIGINT (Ctrl-C) after a checkpoint; rerun to resume",
    "BROKEN_PIPE": "the program reading the output went away (`--json | head`): stopped after a "
    "checkpoint, as a SIGPIPE would stop another tool; rerun to resume",
    "TERMINATED": "stopped by SIGTERM after a checkpoint; rerun to resume",
}


def table() -> str:
    rows = ["| code | name | meaning |", "|---|---|---|"]
    rows += [f"| {c.value} | `{c.name}` | {MEANING[c.name]} |" for c in errors.ExitCode]
    return "\n".join(rows) + "\n"


def main() -> int:
    values = [c.value for c in errors.ExitCode]
    if len(values) != len(set(values)):
        print("an exit code is used twice", file=sys.stderr)
        return 1
    missing = [c.name for c in errors.ExitCode if c.name not in MEANING]
    if missing:
        print(f"exit codes without a meaning: {missing}", file=sys.stderr)
        return 1
    if "--check" in sys.argv:
        if table() not in DOC.read_text(encoding="utf-8"):
            print(f"{DOC} is out of date; regenerate with: python tools/errorlist.py",
                  file=sys.stderr)  # fmt: skip
            return 1
        return 0
    print(table(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
