"""The one exception type users see for bad input or bad options (and its not-fitted kind)."""


class ShardlearnError(ValueError):
    """A problem the user can fix (bad data, bad option); raised on every rank alike.

    The CLI prints its message once (from rank 0) and exits with status 2 on every rank.
    A ``ValueError``, as scikit-learn's convention for bad input wants (its tools and
    ``check_estimator`` catch ``ValueError``).
    """


class NotFittedError(ShardlearnError, AttributeError):
    """An estimator used before ``fit``: a ``ValueError`` and an ``AttributeError``, like
    scikit-learn's ``NotFittedError`` (which :mod:`shardlearn.models.base` adds as a base
    where scikit-learn is installed)."""


def agreed(message: str) -> ShardlearnError:
    """A :class:`ShardlearnError` that every rank raises alike (decided from collective
    results): the CLI prints it once and exits 2 on every rank, with no abort."""
    exc = ShardlearnError(message)
    exc.agreed = True
    return exc


class TrainingInterrupted(ShardlearnError):
    """A fit stopped on request (a signal on some rank) after writing a checkpoint.

    Raised on every rank alike; the CLI exits with status 3 (:data:`EXIT_INTERRUPTED`) and
    says how to resume.
    """

    agreed = True


#: exit status of a run stopped by a signal after writing its checkpoint
EXIT_INTERRUPTED = 3
