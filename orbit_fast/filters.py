"""--include / --exclude rules: gitignore-style globs, first match wins.

Rules are tried in the order given on the command line; the first whose pattern matches a path
decides (include or exclude); a path no rule matches is included. Directories are matched too,
with a trailing "/" in the pattern matching only directories, and an excluded directory is not
descended into (as in rsync). A pattern without "/" matches a name at any depth (`*.tmp`);
one with "/" is anchored at the top of the tree (`logs/*.gz`, `/build`); `**` spans
directories. Paths are relative to the source (and, for --mirror, the destination).

Rule files (--exclude-from, --include-from, --filter-from) are read when the run starts and
take their place in the command-line order; --files-from admits only the paths it lists (and
everything below a listed directory), the rules still apply within them. Sizes and ages
(Selection) judge source files only: a file they leave out is neither copied nor deleted.
"""

from __future__ import annotations

import os
import re
import time

from orbit_fast import units
from orbit_fast.errors import UsageError


def read_lines(path: str, what: str, from0: bool = False) -> list[str]:
    """The entries of a rule or list file: one per line (per NUL with `from0`), blank lines
    and, without `from0`, lines starting with '#' or ';' left out (as rsync and rclone do)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror or exc}; give a readable file",
                         what.lstrip("-").replace("-", "_")) from None  # fmt: skip
    text = os.fsdecode(data)
    if from0:
        return [x for x in text.split("\0") if x]
    lines = (x.rstrip("\r") for x in text.split("\n"))
    return [x for x in lines if x.strip() and not x.lstrip().startswith(("#", ";"))]


def expand_rules(rules: tuple[tuple[str, str], ...],
                 from0: bool = False) -> list[tuple[str, str]]:  # fmt: skip
    """(include|exclude, pattern) in order, the rule files read in place. A filter file's
    lines are "+ PATTERN" / "- PATTERN" (or "include PATTERN" / "exclude PATTERN"); "!"
    clears the rules before it, as in rsync and rclone."""
    out: list[tuple[str, str]] = []
    for action, value in rules:
        if not action.endswith("-from"):
            out.append((action, value))
            continue
        flag = "--" + action
        for line in read_lines(value, flag, from0):
            if action != "filter-from":
                out.append((action[: -len("-from")], line.strip() if not from0 else line))
                continue
            rule = line.strip()
            if rule == "!":
                out.clear()
                continue
            try:
                out.append(parse_rule(rule))
            except UsageError:
                raise UsageError(f"{flag} {value}: rule {line!r} is not '+ PATTERN', "
                                 "'- PATTERN' or '!' (rsync's merge, protect and hide rules "
                                 "are not supported)", "filters") from None  # fmt: skip
    return out


def parse_rule(rule: str, what: str = "--filter") -> tuple[str, str]:
    """One rule of rclone's --filter (and a filter file's line): "+ PATTERN" or "- PATTERN"
    (rsync's "include PATTERN" / "exclude PATTERN" too) as (action, pattern)."""
    head, _, pattern = rule.strip().partition(" ")
    kind = {"+": "include", "-": "exclude", "include": "include", "exclude": "exclude"}.get(head)
    if kind is None or not pattern.strip():
        raise UsageError(f"{what} rule {rule!r}: write '+ PATTERN' or '- PATTERN'",
                         what.lstrip("-").replace("-", "_"))  # fmt: skip
    return kind, pattern.strip()


def read_files_from(path: str, from0: bool = False) -> set[str]:
    """--files-from: paths relative to the source, one per line; a leading "/" or "./" and a
    trailing "/" are dropped (rsync's reading), ".." is refused."""
    out: set[str] = set()
    for line in read_lines(path, "--files-from", from0):
        rel = line if from0 else line.strip()
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise UsageError(f"--files-from {path}: {line!r} climbs out of the source with "
                             "'..'; list paths below the source", "files_from")  # fmt: skip
        if parts:
            out.add("/".join(parts))
    return out


class FilterRules:
    def __init__(self, rules: tuple[tuple[str, str], ...] = (), files_from: str = "",
                 from0: bool = False) -> None:  # fmt: skip
        self._rules: list[tuple[bool, re.Pattern[str]]] = []
        self._files: set[str] = read_files_from(files_from, from0) if files_from else set()
        # Directories that lead to a listed path: walked, not taken whole.
        self._leads: set[str] = set()
        for rel in self._files:
            parts = rel.split("/")
            self._leads.update("/".join(parts[:i]) for i in range(1, len(parts)))
        self._listed = bool(files_from)
        self._protected: list[str] = []  # never part of a run, never deleted (protect())
        expanded = expand_rules(rules, from0)
        if expanded:  # pathspec is imported only when there are rules
            from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern
        for action, pattern in expanded:
            if pattern.strip() in ("*/", "**/"):
                # Every directory (rsync's "--include='*/'" idiom); pathspec's translation of
                # a bare "*/" matches nothing.
                self._rules.append((action == "include", re.compile(r".+/\Z")))
                continue
            try:
                compiled = GitIgnoreSpecPattern(pattern)
            except Exception as exc:  # pathspec raises its own error types for bad patterns
                raise UsageError(f"bad --{action} pattern {pattern!r}: {exc}") from exc
            if compiled.regex is None:
                raise UsageError(f"--{action} pattern {pattern!r} matches nothing (a comment?)")
            # gitignore's "!" negation has no meaning here: include/exclude say it already.
            if compiled.include is False:
                raise UsageError(f"--{action} pattern {pattern!r}: leading '!' is not supported")
            self._rules.append((action == "include", compiled.regex))

    def __bool__(self) -> bool:
        """Whether any name may be left out by rules or a list (protect() aside: a walk
        skips protected names itself and may still fold unchanged files)."""
        return bool(self._rules) or self._listed

    @property
    def protecting(self) -> bool:
        return bool(self._protected)

    def protect(self, rel: str) -> None:
        """Leave `rel` (and what is below it) out of the run on both sides, even from
        --delete-excluded: a --backup-dir inside the destination."""
        if rel:
            self._protected.append(rel)

    def protected(self, rel: str) -> bool:
        return any(rel == p or rel.startswith(p + "/") for p in self._protected)

    def _listed_here(self, rel: str, is_dir: bool) -> bool:
        """--files-from: `rel` is listed, leads to a listed path, or is below a listed one."""
        if rel in self._files or (is_dir and rel in self._leads):
            return True
        i = rel.find("/")
        while i > 0:
            if rel[:i] in self._files:
                return True
            i = rel.find("/", i + 1)
        return False

    def included(self, rel: str, is_dir: bool) -> bool:
        """Whether `rel` (a /-separated path relative to the tree top) takes part in the run."""
        if self._protected and self.protected(rel):
            return False
        if self._listed and not self._listed_here(rel, is_dir):
            return False
        if not self._rules:
            return True
        key = rel + "/" if is_dir else rel
        for include, regex in self._rules:
            if regex.match(key):
                return include
        return True

    def included_name(self, name: str, dirs: dict[str, bool]) -> bool:
        """Whether a listed file `name` ("a/b/c") takes part: a store lists files, not
        directories, so every parent directory must be included too. `dirs` caches the
        directory answers between calls (one dict per listing)."""
        if not self._rules and not self._listed and not self._protected:
            return True
        parts = name.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            ok = dirs.get(d)
            if ok is None:
                ok = dirs[d] = self.included(d, True)
            if not ok:
                return False
        return self.included(name, False)


class Selection:
    """--min-size / --max-size / --min-age / --max-age on source files: `leaves_out(size,
    mtime_ns)` says a file takes no part (not copied; its copy at the destination is not
    deleted either, as rsync treats --max-size and rclone its size and age filters)."""

    def __init__(self, min_size: str = "", max_size: str = "", min_age: str = "",
                 max_age: str = "", now: float | None = None) -> None:  # fmt: skip
        now = time.time() if now is None else now
        self.min_size = units.parse_size(min_size, "min_size") if min_size else -1
        self.max_size = units.parse_size(max_size, "max_size") if max_size else -1
        # --max-age: files older than the cut-off are left out; --min-age: newer ones.
        self.oldest_ns = int(units.parse_age(max_age, "max_age", now) * 1e9) if max_age else -1
        self.newest_ns = int(units.parse_age(min_age, "min_age", now) * 1e9) if min_age else -1

    def __bool__(self) -> bool:
        return (self.min_size, self.max_size, self.oldest_ns, self.newest_ns) != (-1,) * 4

    def leaves_out(self, size: int, mtime_ns: int) -> bool:
        return ((self.min_size >= 0 and size < self.min_size)
                or (self.max_size >= 0 and size > self.max_size)
                or (self.oldest_ns >= 0 and mtime_ns < self.oldest_ns)
                or (self.newest_ns >= 0 and mtime_ns > self.newest_ns))  # fmt: skip
