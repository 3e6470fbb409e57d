"""The hostile local user: run as `nobody` (runuser), it races a root run of the engine.

Standard library only, and no import of the project: it runs under `python3 -I -S` as another
user, from a copy the harness puts where `nobody` can read it (tests/attack/harness.py).

    python3 -I -S attacker.py PLAN.json

The plan (JSON, written by the harness) holds groups of moves, all driven from one polling loop:

- `source`: files of a source tree this user owns. Each is hard-linked into a stash first (so
  the original inode survives), then, once the trigger fires, replaced (rename, atomic) by a
  symlink to the root-only secret whose target text has the file's length, padded with extra
  slashes, and whose own mtime is the file's (utime without following, i.e. `touch -h`): an
  lstat of size and mtime cannot tell the two apart. Files whose size no link target can have
  (over 4095 bytes: multi-block copies) flip between the link and the original every `flip_s`,
  so blocks are read through the link while the last look at the name sees the real file.
- `dest`: directories in a tree this user can write the parent of. Once a new entry appears in
  the directory watched for it (the run is writing there: the directory itself, or its parent
  when the run creates it), it is renamed aside and a symlink to a victim directory takes its
  place; if the run puts a real directory back, that is swapped again.

Triggers: `new_entry` (a name not there at start appears in a directory), `atime` (a directory's
atime moved: someone listed it; this process never lists it) or `after_s`, whichever first.
Prints `ready` once prepared, then runs until the `stop` file exists or `timeout_s` passes, and
prints one JSON report: the CLOCK_MONOTONIC time of each group's first swap and the counts.
"""

from __future__ import annotations

import json
import os
import sys
import time

LINK_MAX = 4095  # the longest symlink target Linux stores (PATH_MAX less the NUL)


class Trigger:
    def __init__(self, spec: dict) -> None:
        self.new_entry = spec.get("new_entry")
        self.atime = spec.get("atime")
        self.after = time.monotonic() + spec["after_s"] if "after_s" in spec else None
        self.delay_s = spec.get("delay_s", 0.0)
        self.seen = set(_listdir(self.new_entry)) if self.new_entry else set()
        self.atime_ns = os.stat(self.atime).st_atime_ns if self.atime else None
        self.fired_at: float | None = None

    def fired(self) -> bool:
        if self.fired_at is None and self._now():
            self.fired_at = time.monotonic()
        return self.fired_at is not None and time.monotonic() >= self.fired_at + self.delay_s

    def _now(self) -> bool:
        if self.after is not None and time.monotonic() >= self.after:
            return True
        if self.atime is not None and os.stat(self.atime).st_atime_ns != self.atime_ns:
            return True
        if self.new_entry is not None and set(_listdir(self.new_entry)) - self.seen:
            return True
        return False


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:  # not there yet, or not ours to read
        return []


def link_text(secret: str, size: int) -> str:
    """A path to `secret` of exactly `size` characters where one can be made, else the secret's
    own path: slashes repeated between directory and name resolve the same."""
    head, name = secret.rsplit("/", 1)
    pad = size - len(head) - len(name)
    return f"{head}{'/' * pad}{name}" if 1 <= pad and size <= LINK_MAX else secret


class SourceSwap:
    def __init__(self, g: dict) -> None:
        self.trigger = Trigger(g["trigger"])
        self.flip_s = g.get("flip_s", 0.005)
        self.stash = g["stash"]
        self.files = []  # (path, original, prepared link, mtime_ns, matched length, target)
        for i, (path, size, mtime_ns) in enumerate(g["files"]):
            orig = os.path.join(self.stash, f"o{i}")
            os.link(path, orig)  # the real inode, to put back
            target = link_text(g["secret"], size)
            self.files.append((path, orig, os.path.join(self.stash, f"l{i}"), mtime_ns,
                               len(target) == size, target))
        for f in self.files:
            self._prepare(f)
        self.linked = False
        self.next_flip = 0.0
        self.first: float | None = None
        self.swaps = 0

    def _prepare(self, f: tuple) -> None:
        _path, _orig, link, mtime_ns, _matched, target = f
        os.symlink(target, link)
        os.utime(link, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def step(self) -> None:
        if not self.trigger.fired():
            return
        now = time.monotonic()
        if self.first is None:  # every file becomes a link, in listing order
            self.first = now
            for f in self.files:
                self._to_link(f)
            self.linked, self.next_flip = True, now + self.flip_s
            return
        if now < self.next_flip:
            return
        for f in self.files:
            if f[4]:
                continue  # held as a link: every later read goes through it
            if self.linked:  # a length no link can match: flip it
                self._to_orig(f)
            else:
                self._to_link(f)
        self.linked, self.next_flip = not self.linked, now + self.flip_s

    def _to_link(self, f: tuple) -> None:
        path, _orig, link, *_ = f
        try:
            os.rename(link, path)
            self.swaps += 1
        except OSError:
            return
        self._prepare(f)

    def _to_orig(self, f: tuple) -> None:
        path, orig, link, *_ = f
        back = link + ".o"
        try:
            os.link(orig, back)
            os.rename(back, path)
        except OSError:
            pass

    @property
    def waiting(self) -> bool:
        return self.first is None

    def report(self) -> dict:
        return {"kind": "source", "first": self.first, "swaps": self.swaps}


class DestSwap:
    def __init__(self, g: dict) -> None:
        self.dirs = []
        for path, victim, watch in g["dirs"]:
            self.dirs.append({"path": path, "victim": victim, "trigger": Trigger({
                "new_entry": watch}), "swapped": 0, "tries": 0})  # fmt: skip
        self.first: float | None = None
        self.swaps = 0

    def step(self) -> None:
        for d in self.dirs:
            path = d["path"]
            if d["swapped"]:
                # The run made a real directory there again: take that one too.
                if os.path.islink(path) or not os.path.isdir(path):
                    continue
            elif not d["trigger"].fired():
                continue
            head, name = os.path.split(path)
            d["tries"] += 1  # a fresh name each time: never onto an earlier one
            try:
                os.rename(path, os.path.join(head, f".{name}.away{d['tries']}"))
                os.symlink(d["victim"], path)
            except OSError:
                continue
            d["swapped"] += 1
            self.swaps += 1
            if self.first is None:
                self.first = time.monotonic()

    @property
    def waiting(self) -> bool:
        return any(not d["swapped"] for d in self.dirs)

    def report(self) -> dict:
        return {"kind": "dest", "first": self.first, "swaps": self.swaps}


def main(plan_path: str) -> None:
    with open(plan_path) as f:
        plan = json.load(f)
    groups = [SourceSwap(g) if g["kind"] == "source" else DestSwap(g) for g in plan["groups"]]
    print("ready", flush=True)
    deadline = time.monotonic() + plan.get("timeout_s", 120)
    stop, look = plan["stop"], 0.0
    while (now := time.monotonic()) < deadline:
        for g in groups:
            g.step()
        if now >= look:  # the stop file, every 10 ms
            if os.path.exists(stop):
                break
            look = now + 0.01
        # A poll every ~0.1 ms while a trigger is awaited: enough to win the race. Then every
        # millisecond: flips and re-swaps need no more, and the run gets the CPU.
        time.sleep(0.0001 if any(g.waiting for g in groups) else 0.001)
    print(json.dumps([g.report() for g in groups]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
