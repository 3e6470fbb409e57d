# Python face of ext/blocks.pyx (mypy reads this; the twin is reference.is_zero).
from _typeshed import ReadableBuffer

ABI: int

def is_zero(buf: ReadableBuffer) -> bool: ...
