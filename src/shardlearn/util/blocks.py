"""Block distribution of rows over ranks."""


def block_bounds(n: int, size: int, rank: int) -> tuple[int, int]:
    """Rows ``[rank*n//size, (rank+1)*n//size)``: the block of rank ``rank`` of ``size``.

    Blocks differ in length by at most one row; with more ranks than rows some are empty.
    """
    return rank * n // size, (rank + 1) * n // size
