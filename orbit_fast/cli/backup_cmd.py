"""Backup repository commands: init, backup, snapshots, ls, diff, restore, verify, forget,
prune, unlock. Commands on an existing repository take it from -r/--repo or ORBIT_REPOSITORY,
as restic does."""

from __future__ import annotations

import json
import os
import time
from typing import Any, NoReturn

import click

from orbit_fast.cli.sync_cmd import _FilterOrderCommand

_repo = click.option(
    "-r", "--repo", "repo", envvar="ORBIT_REPOSITORY", required=True, metavar="REPO",
    help="The repository: a path, s3://bucket/prefix or smb://host/share/path. "
    "Env: ORBIT_REPOSITORY.",
)  # fmt: skip


def _remember(ctx: click.Context, param: click.Parameter, value: str) -> str:
    ctx.meta[f"orbit_{param.name}"] = value
    return value


# Where an encrypted repository's password is (passwords.py); the environment's
# ORBIT_PASSWORD_FILE, ORBIT_PASSWORD_COMMAND and ORBIT_PASSWORD are read after these.
password_options = [
    click.option("--password-file", metavar="FILE", default="", expose_value=False,
                 callback=_remember, help="Read the repository password from the first line "
                 "of FILE. Env: ORBIT_PASSWORD_FILE."),
    click.option("--password-command", metavar="CMD", default="", expose_value=False,
                 callback=_remember, help="Run CMD (no shell) and read the password from the "
                 "first line it prints. Env: ORBIT_PASSWORD_COMMAND. ORBIT_PASSWORD is read "
                 "last (the least safe); on a terminal you are asked."),
]  # fmt: skip


def with_password(f: Any) -> Any:
    for opt in reversed(password_options):
        f = opt(f)
    return f


def repo_option(f: Any) -> Any:
    """-r/--repo and where the repository's password comes from."""
    return _repo(with_password(f))


def _password() -> Any:
    from orbit_fast.passwords import PasswordSource

    meta = click.get_current_context().meta
    return PasswordSource(file=meta.get("orbit_password_file", ""),
                          command=meta.get("orbit_password_command", ""))  # fmt: skip
json_option = click.option("--json", "json_out", is_flag=True,
                           help="One JSON object per line on stdout.")  # fmt: skip
state_options = [
    click.option("--db-path", envvar="ORBIT_DB_PATH", metavar="PATH", default="",
                 help="Jobs DB (local disk). Default: $XDG_STATE_HOME/orbit-fast/jobs.db."),
    click.option("--universe-path", envvar="UNIVERSE_PATH", metavar="PATH", default="",
                 help="Universe chunk index (local disk). Default: universe.db next to the "
                 "jobs DB. Env: UNIVERSE_PATH."),
]  # fmt: skip


def with_state(f: Any) -> Any:
    for opt in reversed(state_options):
        f = opt(f)
    return f


def _fail(err: Exception, json_out: bool) -> NoReturn:
    from orbit_fast.cli.runner import exit_with_error

    exit_with_error(err, json_out)


def _endpoint() -> str:
    from orbit_fast.cli.runner import s3_endpoint

    return s3_endpoint()


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


insecure_option = click.option(
    "--insecure-no-encryption", is_flag=True,
    help="Create the repository unencrypted: whoever can read it reads every file. Shown by "
    "`snapshots` and the hub.",
)  # fmt: skip


@click.command("init")
@click.argument("repo")
@click.option("--codec", default="zstd:3", show_default=True,
              help="Default compression: none, lz4, zstd or zstd:N (1-19).")  # fmt: skip
@with_password
@insecure_option
def init_cmd(repo: str, codec: str, insecure_no_encryption: bool) -> None:
    """Create an empty backup repository at REPO, encrypted with the password given
    (--password-file, --password-command, their ORBIT_ variables, ORBIT_PASSWORD, or asked)."""
    from orbit_fast.api import init_repository
    from orbit_fast.errors import OrbitError

    try:
        rid = init_repository(repo, codec, s3_endpoint=_endpoint(), password=_password(),
                              insecure_no_encryption=insecure_no_encryption)  # fmt: skip
    except OrbitError as err:
        _fail(err, False)
    how = "NOT encrypted" if insecure_no_encryption else "encrypted"
    click.echo(f"created repository {rid[:8]} at {os.path.abspath(repo)} ({how})")


@click.command("backup", cls=_FilterOrderCommand)
@click.argument("src")
@click.argument("repo")
@click.option("--codec", default="", help="Compression for new chunks [default: the "
              "repository's, zstd:3 unless set at init].")  # fmt: skip
@click.option("--tag", multiple=True, help="Label the snapshot (repeatable).")
@click.option("--include", multiple=True, metavar="GLOB", help="As for sync (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="As for sync (repeatable).")
@click.option("--concurrency", "-j", type=click.IntRange(1, 256), default=None,
              envvar="ORBIT_CONCURRENCY", show_default="one per CPU",
              help="Worker processes (1-256).")  # fmt: skip
@with_state
@with_password
@insecure_option
@json_option
@click.option("--no-progress", is_flag=True, help="No progress bar, even on a terminal.")
@click.pass_context
def backup_cmd(ctx: click.Context, src: str, repo: str, codec: str, tag: tuple[str, ...],
               include: tuple[str, ...], exclude: tuple[str, ...], concurrency: int | None,
               db_path: str, universe_path: str, insecure_no_encryption: bool, json_out: bool,
               no_progress: bool) -> None:  # fmt: skip
    """Back up SRC into the repository REPO (created if it does not exist) as a snapshot.

    Files unchanged since the last snapshot of SRC are not read again; only chunks the
    repository lacks are stored. Rerun an interrupted backup to resume it.
    """
    from orbit_fast.api import backup
    from orbit_fast.cli.render import Renderer
    from orbit_fast.cli.runner import run_engine
    from orbit_fast.config import BackupOptions

    pw = _password()
    opts = BackupOptions(source=src, repository=repo, filters=ctx.meta.get("filter_order", ()),
                         concurrency=concurrency or 0, codec=codec, tags=tag, db_path=db_path,
                         universe_path=universe_path, s3_endpoint=_endpoint(),
                         password_file=pw.file, password_command=pw.command,
                         insecure_no_encryption=insecure_no_encryption)  # fmt: skip
    renderer = Renderer(json_out=json_out, progress=not no_progress and not json_out)
    run_engine(lambda cancel: backup(options=opts, on_event=renderer, cancel=cancel),
               renderer, json_out)  # fmt: skip


@click.command("snapshots")
@repo_option
@json_option
def snapshots_cmd(repo: str, json_out: bool) -> None:
    """List the snapshots, oldest first."""
    from orbit_fast.api import describe_repository
    from orbit_fast.errors import OrbitError
    from orbit_fast.names import shown

    try:
        info, snaps = describe_repository(repo, s3_endpoint=_endpoint(), password=_password())
    except OrbitError as err:
        _fail(err, json_out)
    if json_out:
        pass  # one object per snapshot, as before; describe_repository has the rest
    elif info.encryption == "none":
        click.echo(f"repository {info.id[:8]}: NOT ENCRYPTED (made with "
                   "--insecure-no-encryption): whoever can read it reads every file")  # fmt: skip
    else:
        click.echo(f"repository {info.id[:8]}: encrypted ({info.encryption}, "
                   f"{info.keys} key{'s' if info.keys != 1 else ''})")  # fmt: skip
    for s in snaps:
        name, files = s.id, s.files_total
        if json_out:
            print(json.dumps({"id": name, "time_ns": s.time_ns, "hostname": s.hostname,
                              "source": s.source, "tags": s.tags, "parent": s.parent,
                              "files": files, "bytes": s.bytes_total,
                              "bytes_added": s.bytes_added}))  # fmt: skip
        else:
            tags = f"  [{', '.join(s.tags)}]" if s.tags else ""
            click.echo(shown(f"{name[:8]}  {_when(s.time_ns)}  {s.hostname}  {s.source}  "
                             f"{files} files, {s.bytes_total:,} bytes{tags}"))  # fmt: skip
    if not json_out:
        click.echo(f"{len(snaps)} snapshots")


@click.command("ls")
@repo_option
@click.argument("snapshot")
@click.argument("path", required=False, default="")
@with_state
@json_option
@click.option("-l", "--long", "long_", is_flag=True,
              help="Owners, link counts, and + for a POSIX ACL, @ for other xattrs.")
def ls_cmd(repo: str, snapshot: str, path: str, db_path: str, universe_path: str,
           json_out: bool, long_: bool) -> None:  # fmt: skip
    """List what SNAPSHOT ("latest" or an id prefix) holds at or below PATH."""
    from orbit_fast.api import list_entries
    from orbit_fast.errors import OrbitError
    from orbit_fast.names import shown

    try:
        for n in list_entries(repo, snapshot, path, universe_path=universe_path,
                              db_path=db_path, s3_endpoint=_endpoint(),
                              password=_password()):  # fmt: skip
            if json_out:  # (the JSON encoder escapes control characters)
                print(json.dumps({"path": n.path.decode("utf-8", "backslashreplace") or ".",
                                  "kind": n.kind, "size": n.size, "mode": n.mode,
                                  "mtime_ns": n.mtime_ns, "chunks": n.chunks, "uid": n.uid,
                                  "gid": n.gid, "user": n.user, "group": n.group,
                                  "links": n.links, "xattrs": list(n.xattrs),
                                  "rdev": n.rdev}))  # fmt: skip
            else:
                suffix = ("/" if n.kind == "d" else f" -> {shown(n.target)}" if n.kind == "l"
                          else "")  # fmt: skip
                size = (f"{os.major(n.rdev)}, {os.minor(n.rdev)}" if n.kind in ("c", "b")
                        else str(n.size))  # fmt: skip
                if long_:
                    mark = "+" if n.acl else "@" if n.xattrs else " "
                    user, group = shown(n.user) or str(n.uid), shown(n.group) or str(n.gid)
                    click.echo(f"{n.kind} {oct(n.mode)[2:]:>4}{mark} {n.links:>3} {user:<8} "
                               f"{group:<8} {size:>12}  {_when(n.mtime_ns)}  "
                               f"{shown(n.path) or '.'}{suffix}")  # fmt: skip
                else:
                    click.echo(f"{n.kind} {oct(n.mode)[2:]:>4} {size:>12}  "
                               f"{_when(n.mtime_ns)}  {shown(n.path) or '.'}{suffix}")  # fmt: skip
    except OrbitError as err:
        _fail(err, json_out)


@click.command("diff")
@repo_option
@click.argument("snap1")
@click.argument("snap2")
@with_state
@json_option
def diff_cmd(repo: str, snap1: str, snap2: str, db_path: str, universe_path: str,
             json_out: bool) -> None:  # fmt: skip
    """What changed from SNAP1 to SNAP2: + added, - removed, M content, T metadata only."""
    from orbit_fast.api import diff_snapshots
    from orbit_fast.errors import OrbitError
    from orbit_fast.names import shown

    counts = dict.fromkeys("+-MT", 0)
    try:
        for what, path in diff_snapshots(repo, snap1, snap2, universe_path=universe_path,
                                         db_path=db_path, s3_endpoint=_endpoint(),
                              password=_password()):  # fmt: skip
            counts[what] += 1
            if json_out:  # (the JSON encoder escapes control characters)
                print(json.dumps({"change": what,
                                  "path": path.decode("utf-8", "backslashreplace") or "."}))
            else:
                click.echo(f"{what} {shown(path) or '.'}")
    except OrbitError as err:
        _fail(err, json_out)
    if not json_out:
        click.echo(f"{counts['+']} added, {counts['-']} removed, {counts['M']} modified, "
                   f"{counts['T']} metadata only")  # fmt: skip


@click.command("restore")
@repo_option
@click.argument("snapshot")
@click.argument("paths", nargs=-1)
@click.option("--target", required=True, metavar="DIR", help="Where to restore to.")
@with_state
@json_option
@click.option("--no-progress", is_flag=True, help="No progress bar, even on a terminal.")
@click.option("--numeric-ids", is_flag=True,
              help="As root, owners by the ids in the snapshot, not by their names.")
def restore_cmd(repo: str, snapshot: str, paths: tuple[str, ...], target: str, db_path: str,
                universe_path: str, json_out: bool, no_progress: bool,
                numeric_ids: bool) -> None:  # fmt: skip
    """Restore SNAPSHOT ("latest" or an id prefix), or only PATHS of it, into --target.

    Files are byte-identical with their mode and times, xattrs and ACLs; hard links are
    links again, fifos and (as root) devices are made; as root, owners by name where this
    system knows the name (--numeric-ids: by id). Rerun to resume: files already in place
    are skipped.
    """
    from orbit_fast.api import restore
    from orbit_fast.cli.render import Renderer
    from orbit_fast.cli.runner import run_engine

    renderer = Renderer(json_out=json_out, progress=not no_progress and not json_out)
    endpoint, pw = _endpoint(), _password()
    run_engine(lambda cancel: restore(repo, snapshot, target, paths, on_event=renderer,
                                      cancel=cancel, universe_path=universe_path,
                                      db_path=db_path, s3_endpoint=endpoint, password=pw,
                                      numeric_ids=numeric_ids),
               renderer, json_out)  # fmt: skip


@click.command("verify")
@repo_option
@click.option("--quick", is_flag=True, help="Check structure only: pack indexes parse and "
              "every chunk a snapshot needs is listed in a pack.")  # fmt: skip
@with_state
@json_option
def verify_cmd(repo: str, quick: bool, db_path: str, universe_path: str,
               json_out: bool) -> None:  # fmt: skip
    """Read every pack and check every chunk against its id; name each damaged snapshot,
    file and chunk (exit code 13)."""
    from orbit_fast.api import verify
    from orbit_fast.cli.render import Renderer
    from orbit_fast.cli.runner import run_engine

    renderer = Renderer(json_out=json_out, progress=False)
    endpoint, pw = _endpoint(), _password()
    run_engine(lambda cancel: verify(repo, quick, on_event=renderer, universe_path=universe_path,
                                     db_path=db_path, s3_endpoint=endpoint, password=pw),
               renderer, json_out)  # fmt: skip


@click.command("forget")
@repo_option
@click.option("--keep-last", type=click.IntRange(0), default=0, help="Keep the N newest.")
@click.option("--keep-daily", type=click.IntRange(0), default=0,
              help="Keep the newest of each of the last N days.")  # fmt: skip
@click.option("--keep-weekly", type=click.IntRange(0), default=0,
              help="Keep the newest of each of the last N weeks.")  # fmt: skip
@click.option("--keep-monthly", type=click.IntRange(0), default=0,
              help="Keep the newest of each of the last N months.")  # fmt: skip
@click.option("--prune", "and_prune", is_flag=True, help="Prune afterwards.")
@click.option("--dry-run", "-n", is_flag=True, help="Only list what would be forgotten.")
@with_state
@json_option
def forget_cmd(repo: str, keep_last: int, keep_daily: int, keep_weekly: int, keep_monthly: int,
               and_prune: bool, dry_run: bool, db_path: str, universe_path: str,
               json_out: bool) -> None:  # fmt: skip
    """Delete the snapshots the policy does not keep (per host and source); their data goes at
    the next prune."""
    from orbit_fast.api import forget
    from orbit_fast.cli.render import Renderer
    from orbit_fast.errors import OrbitError

    renderer = Renderer(json_out=json_out, progress=False)
    try:
        drop = forget(repo, keep_last=keep_last, keep_daily=keep_daily,
                      keep_weekly=keep_weekly, keep_monthly=keep_monthly, prune=and_prune,
                      dry_run=dry_run, on_event=renderer, universe_path=universe_path,
                      db_path=db_path, s3_endpoint=_endpoint(), password=_password())  # fmt: skip
    except OrbitError as err:
        _fail(err, json_out)
    verb = "would forget" if dry_run else "forgot"
    if json_out:
        print(json.dumps({"event": "forget", "dry_run": dry_run, "snapshots": drop}))
    else:
        click.echo(f"{verb} {len(drop)} snapshots" + "".join(f"\n  {n[:8]}" for n in drop))


@click.command("prune")
@repo_option
@with_state
@json_option
def prune_cmd(repo: str, db_path: str, universe_path: str, json_out: bool) -> None:
    """Delete chunks no snapshot references and rewrite mostly-empty packs (crash-safe)."""
    from orbit_fast.api import prune
    from orbit_fast.cli.render import Renderer
    from orbit_fast.cli.runner import run_engine

    renderer = Renderer(json_out=json_out, progress=False)
    endpoint, pw = _endpoint(), _password()
    run_engine(lambda cancel: prune(repo, on_event=renderer, universe_path=universe_path,
                                    db_path=db_path, s3_endpoint=endpoint, password=pw),
               renderer, json_out)  # fmt: skip


@click.command("unlock")
@repo_option
def unlock_cmd(repo: str) -> None:
    """Remove the repository lock. Only when the process that holds it is gone: a lock of a
    dead process on this host is cleared automatically."""
    from orbit_fast.api import unlock
    from orbit_fast.errors import OrbitError

    try:
        holder = unlock(repo, s3_endpoint=_endpoint(), password=_password())
    except OrbitError as err:
        _fail(err, False)
    click.echo("no lock was held" if holder is None else
               f"removed the lock of pid {holder.get('pid')} on {holder.get('host')}")  # fmt: skip


@click.group("index")
def index_group() -> None:
    """The universe chunk index (a cache of the repositories)."""


@index_group.command("rebuild")
@repo_option
@with_state
def index_rebuild_cmd(repo: str, db_path: str, universe_path: str) -> None:
    """Rebuild the index entries of REPO from its pack files."""
    from orbit_fast.api import rebuild_index
    from orbit_fast.errors import OrbitError

    try:
        n = rebuild_index(repo, universe_path=universe_path, db_path=db_path,
                          s3_endpoint=_endpoint(), password=_password())  # fmt: skip
    except OrbitError as err:
        _fail(err, False)
    click.echo(f"indexed {n} packs")


@click.group("key")
def key_group() -> None:
    """The keys of an encrypted repository: each opens it with one password."""


new_password_options = [
    click.option("--new-password-file", metavar="FILE", default="",
                 help="The new password: the first line of FILE (else asked twice)."),
    click.option("--new-password-command", metavar="CMD", default="",
                 help="The new password: the first line CMD prints."),
    click.option("--kdf-memory-mib", type=click.IntRange(8, 4096), default=None,
                 help="argon2id memory for the new key [default: 64, or "
                 "ORBIT_KDF_MEMORY_MIB]."),
    click.option("--kdf-time", type=click.IntRange(1, 64), default=None,
                 help="argon2id passes for the new key [default: 3, or ORBIT_KDF_TIME]."),
]  # fmt: skip


def with_new_password(f: Any) -> Any:
    for opt in reversed(new_password_options):
        f = opt(f)
    return f


@key_group.command("list")
@repo_option
@json_option
def key_list_cmd(repo: str, json_out: bool) -> None:
    """List the keys; * marks the one the password given opens."""
    from orbit_fast.api import list_keys
    from orbit_fast.errors import OrbitError

    try:
        keys = list_keys(repo, s3_endpoint=_endpoint(), password=_password())
    except OrbitError as err:
        _fail(err, json_out)
    for k in keys:
        if json_out:
            print(json.dumps(k._asdict()))
        else:
            click.echo(f"{'*' if k.current else ' '} {k.name[:8]}  {k.created}  {k.username}@"
                       f"{k.hostname}  argon2id {k.kdf_memory_kib >> 10} MiB x {k.kdf_time}")


def _new_key(replace: bool, repo: str, new_password_file: str, new_password_command: str,
             kdf_memory_mib: int | None, kdf_time: int | None) -> str:  # fmt: skip
    from orbit_fast.api import PasswordSource, add_key, change_password
    from orbit_fast.errors import OrbitError

    new = PasswordSource(file=new_password_file, command=new_password_command)
    try:
        return (change_password if replace else add_key)(
            repo, new, s3_endpoint=_endpoint(), password=_password(),
            kdf_memory_mib=kdf_memory_mib, kdf_time=kdf_time)  # fmt: skip
    except OrbitError as err:
        _fail(err, False)


@key_group.command("add")
@repo_option
@with_new_password
def key_add_cmd(repo: str, new_password_file: str, new_password_command: str,
                kdf_memory_mib: int | None, kdf_time: int | None) -> None:  # fmt: skip
    """Add a key for another password (the current one keeps working)."""
    name = _new_key(False, repo, new_password_file, new_password_command, kdf_memory_mib,
                    kdf_time)  # fmt: skip
    click.echo(f"added key {name[:8]}")


@key_group.command("passwd")
@repo_option
@with_new_password
def key_passwd_cmd(repo: str, new_password_file: str, new_password_command: str,
                   kdf_memory_mib: int | None, kdf_time: int | None) -> None:  # fmt: skip
    """Change the password: a key for the new one replaces the key the current one opens."""
    name = _new_key(True, repo, new_password_file, new_password_command, kdf_memory_mib,
                    kdf_time)  # fmt: skip
    click.echo(f"password changed (key {name[:8]})")


@key_group.command("remove")
@repo_option
@click.argument("key")
def key_remove_cmd(repo: str, key: str) -> None:
    """Remove KEY (an id prefix from `key list`): not the last, nor the one in use."""
    from orbit_fast.api import remove_key
    from orbit_fast.errors import OrbitError

    try:
        remove_key(repo, key, s3_endpoint=_endpoint(), password=_password())
    except OrbitError as err:
        _fail(err, False)
    click.echo(f"removed key {key[:8]}")


COMMANDS = [init_cmd, backup_cmd, snapshots_cmd, ls_cmd, diff_cmd, restore_cmd, verify_cmd,
            forget_cmd, prune_cmd, unlock_cmd, index_group, key_group]  # fmt: skip
