"""Turns engine events into terminal output: JSON lines, a progress bar, or plain lines.

Plain lines pass every name and message through `names.shown`: names come from trees and
repositories other people write, and must not reach the terminal as control sequences."""

from __future__ import annotations

import sys
from typing import Any

from orbit_fast import progress as p
from orbit_fast.names import shown


class Renderer:
    def __init__(self, json_out: bool, progress: bool) -> None:
        self.json_out = json_out
        self.bar: Any = None
        self.want_bar = progress and sys.stdout.isatty()
        self.errored = False  # the engine emitted an `error` event (the CLI prints no other)

    def __call__(self, ev: p.Event) -> None:
        if isinstance(ev, p.Error):
            self.errored = True
        if self.json_out:
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
                unit="B",
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


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def _summary_text(s: p.Summary) -> str:
    rate = s.bytes_copied / s.elapsed_s if s.elapsed_s > 0 else 0.0
    verb = "would copy" if s.dry_run else "copied"
    lines = [
        f"{verb} {s.files_copied if not s.dry_run else s.files_scanned - s.files_unchanged} "
        f"files ({_size(s.bytes_copied if not s.dry_run else s.bytes_total)}), "
        f"{s.files_unchanged} unchanged, {s.files_deleted} deleted, "
        f"{s.dirs_created} dirs and {s.links_created} links created in {s.elapsed_s:.2f} s"
        + (f" ({_size(rate)}/s)" if not s.dry_run and s.bytes_copied else ""),
    ]
    if s.bytes_resumed:
        lines.append(f"resumed {_size(s.bytes_resumed)} verified from an interrupted run")
    if s.names_unlisted:
        lines.append(f"{s.names_unlisted} names in the listings are not files of the tree "
                     f"(temp files, symlinks; {s.temps_removed} stale temp files removed): "
                     "see the warnings")  # fmt: skip
    if s.skipped:
        lines.append(f"{len(s.skipped)} entries skipped (exit code 1):")
        lines += [f"  {shown(path)}" for path in s.skipped[:50]]
        if len(s.skipped) > 50:
            lines.append(f"  ... and {len(s.skipped) - 50} more (see --json)")
    return "\n".join(lines)


def _repo_summary_text(
    s: p.BackupSummary | p.RestoreSummary | p.VerifySummary | p.PruneSummary,
) -> str:
    if isinstance(s, p.BackupSummary) and not s.snapshot:  # failed or stopped: nothing saved
        return (f"backup stopped before a snapshot was saved: read {_size(s.bytes_read)}, "
                f"added {s.chunks_added} chunks ({_size(s.bytes_added)} stored, kept for the "
                f"rerun) in {s.elapsed_s:.2f} s")
    if isinstance(s, p.BackupSummary):
        lines = [
            f"snapshot {s.snapshot[:8]} saved: {s.files_total} files ({_size(s.bytes_total)}); "
            f"{s.files_new} new, {s.files_changed} changed, {s.files_unchanged} unchanged",
            f"read {_size(s.bytes_read)}, added {s.chunks_added} chunks "
            f"({_size(s.bytes_added)} stored) in {s.packs_added} packs, {s.elapsed_s:.2f} s",
        ]
        if s.skipped:
            lines.append(f"{len(s.skipped)} entries skipped (exit code 1):")
            lines += [f"  {shown(path)}" for path in s.skipped[:50]]
        return "\n".join(lines)
    if isinstance(s, p.RestoreSummary):
        return (f"restored {s.files_restored} files, {s.files_skipped} already in place "
                f"({_size(s.bytes_total)}) in {s.elapsed_s:.2f} s"
                + "".join(f"\n  not restored: {shown(x)}" for x in s.problems[:50]))  # fmt: skip
    if isinstance(s, p.VerifySummary):
        what = "structure of " if s.quick else ""
        head = (f"checked the {what}{s.packs} packs ({s.chunks} chunks, {_size(s.bytes_read)} "
                f"read) and {s.snapshots} snapshots in {s.elapsed_s:.2f} s: ")  # fmt: skip
        if not s.problems:
            return head + "no problems"
        return head + f"{len(s.problems)} problems (exit code 13)\n" + "\n".join(
            f"  {shown(x)}" for x in s.problems
        )
    return (f"pruned: {s.packs_deleted} packs deleted, {s.packs_repacked} rewritten into "
            f"{s.packs_written}, {s.chunks_dropped} chunks dropped, {_size(s.bytes_freed)} "
            f"freed in {s.elapsed_s:.2f} s")  # fmt: skip
