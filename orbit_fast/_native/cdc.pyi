# Python face of ext/cdc.pyx (mypy reads this; the twin is reference.Chunker).
from _typeshed import ReadableBuffer, WriteableBuffer

ABI: int

class Chunker:
    def __init__(self, gear: ReadableBuffer, min_size: int, avg_size: int, max_size: int,
                 mask_s: int, mask_l: int) -> None: ...  # fmt: skip
    @property
    def offset(self) -> int: ...
    @property
    def chunk_start(self) -> int: ...
    # `out` holds uint64 (array("Q")); returns (cuts written to out, bytes of data consumed)
    def feed(self, data: ReadableBuffer, out: WriteableBuffer) -> tuple[int, int]: ...
