"""``python -m shardlearn`` and the ``shardlearn`` console script."""
import os
import sys


def main(argv=None) -> int:
    # the command line never hands an estimator to scikit-learn: skip importing it (about a
    # second per rank at start); SHARDLEARN_SKLEARN=1 keeps scikit-learn's base classes
    os.environ.setdefault("SHARDLEARN_SKLEARN", "0")
    from .runtime import install_abort_hook

    install_abort_hook()
    from .cli.main import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
