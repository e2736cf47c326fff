"""The one exception type users see for bad input or bad options."""


class ShardlearnError(Exception):
    """A problem the user can fix (bad data, bad option); raised on every rank alike.

    The CLI prints its message once (from rank 0) and exits with status 2 on every rank.
    """
