"""--include / --exclude rules: gitignore-style globs, first match wins.

Rules are tried in the order given on the command line; the first whose pattern matches a path
decides (include or exclude); a path no rule matches is included. Directories are matched too,
with a trailing "/" in the pattern matching only directories, and an excluded directory is not
descended into (as in rsync). A pattern without "/" matches a name at any depth (`*.tmp`);
one with "/" is anchored at the top of the tree (`logs/*.gz`, `/build`); `**` spans
directories. Paths are relative to the source (and, for --mirror, the destination).
"""

from __future__ import annotations

import re

from orbit_fast.errors import UsageError


class FilterRules:
    def __init__(self, rules: tuple[tuple[str, str], ...] = ()):
        self._rules: list[tuple[bool, re.Pattern[str]]] = []
        if rules:  # pathspec is imported only when there are rules
            from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern
        for action, pattern in rules:
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
        return bool(self._rules)

    def included(self, rel: str, is_dir: bool) -> bool:
        """Whether `rel` (a /-separated path relative to the tree top) takes part in the run."""
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
        if not self._rules:
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
