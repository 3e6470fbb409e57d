"""Request bodies of the hub API (pydantic): the same models validate input and generate the
OpenAPI document. Unknown fields are refused, so a typo never passes silently."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Location = Annotated[str, Field(min_length=1, max_length=4096)]
Username = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
Password = Annotated[str, Field(min_length=1, max_length=1024)]
Role = Literal["admin", "operator", "viewer"]
Short = Annotated[str, Field(min_length=1, max_length=4096)]
Rule = Annotated[str, Field(min_length=1, max_length=4096)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobConfig(Strict):
    """The guide's job configuration; every field optional."""

    # `default=` by name: mypy reads a model as a dataclass_transform (PEP 681), which sees a
    # field's default only as a keyword, and would call each of these required.

    concurrency: Annotated[int, Field(ge=1, le=256)] | None = Field(
        default=None,
        description="Files (or parts) in flight at once; the guide advises 4-8 for SMB.")
    chunk_size_mb: Annotated[float, Field(gt=0, le=256)] | None = Field(
        default=None, description="Request and part size in MiB (sync, mirror); 1-4 for SMB.")
    retry_attempts: Annotated[int, Field(ge=0, le=100)] | None = Field(
        default=None,
        description="Tries per storage request, and runs retried after a transient error.")
    compression: Annotated[str, Field(max_length=16)] | None = Field(
        default=None, description="none, lz4, zstd or zstd:N (1-19) for backup repositories.")
    password_file: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        default=None,
        description="Backup: an absolute path the hub reads at each run for the repository's "
        "password (its first line). The password is never stored in jobs.db nor shown. "
        "Unset: ORBIT_PASSWORD_FILE, ORBIT_PASSWORD_COMMAND or ORBIT_PASSWORD from the hub's "
        "environment or env file.")
    insecure_no_encryption: bool | None = Field(
        default=None, description="Backup: create the repository unencrypted (anyone who can "
        "read it reads every file).")
    # The sync options (docs/sync.md), named as the CLI names them (--max-delete: max_delete).
    checksum: bool | None = Field(default=None, description="Compare content, not size and mtime.")
    max_delete: Annotated[str | int, Field()] | None = Field(
        default=None, description="Mirror: deletions above this (entries, or 'P%' of the "
        "destination's) are all withheld, exit 22. Default for hub jobs: 50%; 'off': none.")
    backup_dir: Short | None = Field(
        default=None, description="Move what a run replaces or deletes here (relative: below "
        "the destination; {date}, {time}, {datetime}).")
    suffix: Annotated[str, Field(max_length=100)] | None = None
    bwlimit: Annotated[str, Field(max_length=1000)] | None = Field(
        default=None, description="This job's limit: 10M, 10M:2M (up:down) or a timetable "
        "\"08:00,512k 19:00,off\"; the hub's ORBIT_BWLIMIT holds for all jobs together.")
    filter: Annotated[list[Rule], Field(max_length=1000)] | None = Field(
        default=None, description="Rules '+ PATTERN' / '- PATTERN' in order, first match "
        "wins (rclone's --filter); then include, then exclude.")
    include: Annotated[list[Rule], Field(max_length=1000)] | None = None
    exclude: Annotated[list[Rule], Field(max_length=1000)] | None = None
    include_from: Short | None = Field(default=None, description="An absolute path, read at "
                                       "each run; likewise exclude_from, filter_from, files_from.")
    exclude_from: Short | None = None
    filter_from: Short | None = None
    files_from: Short | None = None
    from0: bool | None = None
    min_size: Annotated[str | int, Field()] | None = None
    max_size: Annotated[str | int, Field()] | None = None
    min_age: Annotated[str, Field(max_length=40)] | None = None
    max_age: Annotated[str, Field(max_length=40)] | None = None
    size_only: bool | None = None
    ignore_existing: bool | None = None
    update: bool | None = None
    delete_excluded: bool | None = None
    s3_storage_class: Annotated[str, Field(max_length=40)] | None = None
    s3_sse: Literal["AES256", "aws:kms"] | None = None
    s3_sse_kms_key_id: Annotated[str, Field(max_length=2048)] | None = None
    s3_region: Annotated[str, Field(max_length=64)] | None = None
    no_owner: bool | None = None
    no_group: bool | None = None
    no_xattrs: bool | None = None
    no_acls: bool | None = None
    no_hard_links: bool | None = None
    trust_remote_metadata: bool | None = None
    smb_security: bool | None = None


class RunRequest(Strict):
    """POST /api/jobs/{id}/run: overrides for this one run (docs/sync.md, "Mirror safety")."""

    force_delete: bool = Field(default=False, description="Delete although the source looks "
                               "unmounted or emptied (the mirror guards).")
    max_delete: Annotated[str | int, Field()] | None = Field(
        default=None, description="This run's limit instead of the job's ('off': none).")


class JobCreate(Strict):
    name: Name
    source: Location
    destination: Location
    config: JobConfig = Field(default_factory=JobConfig)
    mode: Literal["sync", "mirror", "backup"] = "sync"
    schedule: Annotated[str, Field(max_length=200)] | None = Field(
        default=None, description="Cron expression (local time), e.g. '0 2 * * *', or @daily.")


class JobUpdate(Strict):
    """PATCH /api/jobs/{id}: the fields given replace the job's (config as a whole); an empty
    schedule removes it."""

    name: Name | None = None
    source: Location | None = None
    destination: Location | None = None
    config: JobConfig | None = None
    mode: Literal["sync", "mirror", "backup"] | None = None
    schedule: Annotated[str, Field(max_length=200)] | None = None


class Register(Strict):
    username: Username
    password: Password
    role: Role = "viewer"
    bootstrap_token: Annotated[str, Field(max_length=200)] | None = None


class Login(Strict):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Password


class TokenCreate(Strict):
    name: Name
    days: Annotated[float, Field(gt=0, le=3650)] = 90


class UserCreate(Strict):
    username: Username
    password: Password
    role: Role = "viewer"


class UserUpdate(Strict):
    password: Password | None = None
    role: Role | None = None


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")  # details such as fields, retry_after_s

    code: str = Field(description="Stable, machine-readable: e.g. job_not_found, csrf.")
    message: str = Field(description="What went wrong and what to do.")


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: ErrorDetail


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["healthy", "unhealthy"]
    version: str
    problems: list[str] | None = None
