ABI: int
FILE: int
DIR: int
LINK: int
OTHER: int

Side = tuple[int, int, int, int, int]  # kind, size, mtime_ns, atime_ns, mode

def scan_pair(
    src_dir: bytes, dst_dir: bytes, fold_unchanged: bool, follow: bool = False
) -> tuple[list[tuple[bytes, Side | None, Side | None]], int]: ...

Full = tuple[int, int, int, int, int, int, int, int, int]
# kind, size, mtime_ns, atime_ns, mode, ctime_ns, ino, uid, gid

def scan_dir(path: bytes, follow: bool = False) -> list[tuple[bytes, Full]]: ...
