"""Turns engine events into terminal output: JSON lines, a progress bar, or plain lines.

Plain lines pass every name and message through `names.shown`: names come from trees and
repositories other people write, and must not reach the terminal as control sequences."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from orbit_fast import progress as p
from orbit_fast.names import shown

LEVELS = {"DEBUG": 0, "INFO": 1, "NOTICE": 2, "ERROR": 3}


class Renderer:
    """Events to the terminal, and with `log_file` to a log as rclone writes one
    ("2026/12/07 23:59:01 NOTICE: ..."), lines at `log_level` and above; `stats_every` (a
    duration) adds a line of totals that often (to the log file if there is one, else to
    stderr), for cron jobs with no terminal."""

    def __init__(self, json_out: bool, progress: bool, log_file: str = "",
                 log_level: str = "NOTICE", stats_every: str = "") -> None:  # fmt: skip
        self.json_out = json_out
        self.bar: Any = None
        self.want_bar = progress and sys.stdout.isatty()
        self.errored = False  # the engine emitted an `error` event (the CLI prints no other)
        # Called once if stdout's reader goes away (run_engine stops the run): a closed pipe
        # is not a file's I/O error, and not a reason to run on for hours printing nowhere.
        self.on_stdout_gone: Any = None
        self.stdout_gone = False
        self.log: IO[str] | None = None
        self.level = LEVELS[log_level]
        if log_file:
            try:
                self.log = open(log_file, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            except OSError as exc:
                from orbit_fast.errors import UsageError

                raise UsageError(f"--log-file {log_file}: {exc.strerror or exc}; give a "
                                 "writable file", "log_file") from None  # fmt: skip
        self.stats_s = 0.0
        if stats_every:
            from orbit_fast.units import parse_duration

            self.stats_s = max(parse_duration(stats_every, "stats"), 0.5)
        self._last_stats = time.monotonic()

    def _logline(self, level: str, text: str) -> None:
        if self.log is not None and LEVELS[level] >= self.level:
            stamp = time.strftime("%Y/%m/%d %H:%M:%S")
            self.log.write(f"{stamp} {level:<6}: {shown(text)}\n")
            if level != "INFO":
                self.log.flush()

    def _log_event(self, ev: p.Event) -> None:
        if isinstance(ev, p.Started):
            self._logline("INFO", f"started: {ev.source} -> {ev.destination}"
                          + (" (dry run)" if ev.dry_run else ""))  # fmt: skip
        elif isinstance(ev, p.FileDone):
            self._logline("INFO", f"{ev.path}: {ev.action} ({ev.size} bytes)")
        elif isinstance(ev, p.Warning):
            self._logline("NOTICE", f"{ev.path}: {ev.message}" if ev.path else ev.message)
        elif isinstance(ev, p.Error):
            self._logline("ERROR", f"{ev.message} (exit code {ev.exit_code})")
        elif isinstance(ev, p.Summary):
            self._logline("NOTICE", _summary_text(ev).replace("\n", "; "))
        elif isinstance(ev, p.Progress):
            self._logline("DEBUG", _stats_text(ev))

    def _stats(self, ev: p.Progress) -> None:
        now = time.monotonic()
        if now - self._last_stats < self.stats_s:
            return
        self._last_stats = now
        if self.log is not None:
            self._logline("NOTICE", _stats_text(ev))
        else:
            self._write_err(f"orbit-fast: stats: {_stats_text(ev)}")

    def __call__(self, ev: p.Event) -> None:
        try:
            self._show(ev)
        except BrokenPipeError:
            self._stdout_gone()

    def _stdout_gone(self) -> None:
        """Point stdout at /dev/null (nothing more to write there, and no error at exit)."""
        if self.stdout_gone:
            return
        self.stdout_gone = True
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        self._write_err("orbit-fast: the output's reader went away; stopping at a safe point "
                        "(exit 141): run the same command again to resume")  # fmt: skip
        if self.on_stdout_gone is not None:
            self.on_stdout_gone()

    def _show(self, ev: p.Event) -> None:
        if isinstance(ev, p.Error):
            self.errored = True
        if self.log is not None:
            self._log_event(ev)
        if self.stats_s and isinstance(ev, p.Progress):
            self._stats(ev)
        if self.json_out:
            if self.stdout_gone:
                return
            sys.stdout.buffer.write(p.encode_json(ev) + b"\n")
            # Live for pipes: everything but the per-file lines (which come in thousands a
            # second and are flushed with the next progress event, at most 0.25 s later).
            if not isinstance(ev, p.FileDone):
                sys.stdout.flush()
            return
        if isinstance(ev, p.Progress):
            self._bar(ev)
        elif isinstance(ev, p.Warning):
            self._write_err(
                f"orbit-fast: warning: {shown(ev.path)}: {shown(ev.message)}"
                if ev.path
                else f"orbit-fast: warning: {shown(ev.message)}"
            )
        elif isinstance(ev, p.FileDone) and ev.action.startswith("plan-"):
            print(f"{ev.action[5:]:>7} {shown(ev.path)}")
        elif isinstance(ev, p.Summary):
            self.close()
            print(_summary_text(ev))
        elif isinstance(ev, p.BackupSummary | p.RestoreSummary | p.VerifySummary
                        | p.PruneSummary):  # fmt: skip
            self.close()
            print(_repo_summary_text(ev))

    def _write_err(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def _bar(self, ev: p.Progress) -> None:
        if not self.want_bar:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=ev.bytes_total,
                # "iB" with a 1024 divisor reads KiB, MiB, GiB and MiB/s, as every other
                # number orbit-fast prints (tqdm's "B" would label binary values GB).
                unit="iB",
                unit_scale=True,
                unit_divisor=1024,
                dynamic_ncols=True,
                leave=False,
            )
        self.bar.total = ev.bytes_total
        self.bar.n = ev.bytes_done
        self.bar.set_postfix_str(
            f"{ev.files_done}/{ev.files_total} files" + ("" if ev.scan_done else " (scanning)"),
            refresh=False,
        )
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.log is not None:
            self.log.flush()


def _stats_text(ev: p.Progress) -> str:
    pct = 100.0 * ev.bytes_done / ev.bytes_total if ev.bytes_total else 100.0
    return (f"{ev.files_done}/{ev.files_total} files, {human_size(ev.bytes_done)} of "
            f"{human_size(ev.bytes_total)} ({pct:.0f}%){'' if ev.scan_done else ' so far'}, "
            f"{human_size(ev.rate_bps)}/s, {ev.elapsed_s:.0f} s elapsed")  # fmt: skip


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def plural(n: int, word: str, many: str = "") -> str:
    """"1 file", "2 files" ("1 entry", "2 entries" with `many`)."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def _summary_text(s: p.Summary) -> str:
    rate = s.bytes_copied / s.elapsed_s if s.elapsed_s > 0 else 0.0
    failed = s.exit_code not in (0, 1)
    verb = "would copy" if s.dry_run else ("before it stopped, copied" if failed else "copied")
    files = s.files_copied if not s.dry_run else s.files_scanned - s.files_unchanged
    lines = [
        f"{verb} {plural(files, 'file')}"
        f" ({human_size(s.bytes_copied if not s.dry_run else s.bytes_total)}), "
        f"{s.files_unchanged} unchanged, {s.files_deleted} deleted, "
        f"{plural(s.dirs_created, 'dir')} and {plural(s.links_created, 'link')} created in "
        f"{s.elapsed_s:.2f} s"
        + (f" ({human_size(rate)}/s)" if not s.dry_run and s.bytes_copied else ""),
    ]
    if failed:
        lines.append(f"the run did not finish (exit code {s.exit_code}): see the error below; "
                     "run the same command again to resume")  # fmt: skip
    if s.deletes_withheld:
        lines.append(f"{s.deletes_withheld} deletions withheld by the mirror guards (exit "
                     "code 22): see the error below")  # fmt: skip
    if s.files_backed_up:
        lines.append(f"{s.files_backed_up} replaced or deleted entries moved to the backup "
                     "directory")  # fmt: skip
    if s.bytes_resumed:
        lines.append(f"resumed {human_size(s.bytes_resumed)} verified from an interrupted run")
    if s.names_unlisted:
        lines.append(f"{s.names_unlisted} names in the listings are not files of the tree "
                     f"(temp files, symlinks; {s.temps_removed} stale temp files removed): "
                     "see the warnings")  # fmt: skip
    if s.skipped:
        lines.append(f"{plural(len(s.skipped), 'entry', 'entries')} skipped (exit code 1):")
        lines += [f"  {shown(path)}" for path in s.skipped[:50]]
        if len(s.skipped) > 50:
            lines.append(f"  ... and {len(s.skipped) - 50} more (see --json)")
    return "\n".join(lines)


def _repo_summary_text(
    s: p.BackupSummary | p.RestoreSummary | p.VerifySummary | p.PruneSummary,
) -> str:
    if isinstance(s, p.BackupSummary) and not s.snapshot:  # failed or stopped: nothing saved
        return (f"backup stopped before a snapshot was saved: read {human_size(s.bytes_read)}, "
                f"added {plural(s.chunks_added, 'chunk')} ({human_size(s.bytes_added)} stored, "
                f"kept for the rerun) in {s.elapsed_s:.2f} s")
    if isinstance(s, p.BackupSummary):
        lines = [
            f"snapshot {s.snapshot[:8]} saved: {plural(s.files_total, 'file')} "
            f"({human_size(s.bytes_total)}); "
            f"{s.files_new} new, {s.files_changed} changed, {s.files_unchanged} unchanged",
            f"read {human_size(s.bytes_read)}, added {plural(s.chunks_added, 'chunk')} "
            f"({human_size(s.bytes_added)} stored) in {plural(s.packs_added, 'pack')}, "
            f"{s.elapsed_s:.2f} s",
        ]
        if s.skipped:
            lines.append(f"{plural(len(s.skipped), 'entry', 'entries')} skipped (exit code 1):")
            lines += [f"  {shown(path)}" for path in s.skipped[:50]]
        return "\n".join(lines)
    if isinstance(s, p.RestoreSummary):
        return (f"restored {plural(s.files_restored, 'file')}, {s.files_skipped} already in place "
                f"({human_size(s.bytes_total)}) in {s.elapsed_s:.2f} s"
                + "".join(f"\n  not restored: {shown(x)}" for x in s.problems[:50]))  # fmt: skip
    if isinstance(s, p.VerifySummary):
        what = "structure of " if s.quick else ""
        head = (f"checked the {what}{plural(s.packs, 'pack')} ({plural(s.chunks, 'chunk')}, "
                f"{human_size(s.bytes_read)} read) and {plural(s.snapshots, 'snapshot')} in "
                f"{s.elapsed_s:.2f} s: ")  # fmt: skip
        if not s.problems:
            return head + "no problems"
        return head + f"{plural(len(s.problems), 'problem')} (exit code 13)\n" + "\n".join(
            f"  {shown(x)}" for x in s.problems
        )
    return (f"pruned: {plural(s.packs_deleted, 'pack')} deleted, {s.packs_repacked} rewritten "
            f"into {s.packs_written}, {plural(s.chunks_dropped, 'chunk')} dropped, "
            f"{human_size(s.bytes_freed)} freed in {s.elapsed_s:.2f} s")  # fmt: skip
