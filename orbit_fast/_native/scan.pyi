# Python face of ext/scan.pyx (mypy reads this; the twins are reference.scan_pair/scan_dir).
from orbit_fast._native.reference import Full, Side

ABI: int
FILE: int
DIR: int
LINK: int
OTHER: int

def scan_pair(
    src_fd: int, dst_fd: int, fold_unchanged: int
) -> tuple[list[tuple[bytes, Side | None, Side | None]], int]: ...
def scan_dir(dir_fd: int) -> list[tuple[bytes, Full]]: ...
def open_beneath(dirfd: int, rel: bytes, flags: int, mode: int, use_openat2: bool) -> int: ...
