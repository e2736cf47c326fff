"""``python -m shardlearn`` and the ``shardlearn`` console script."""
import sys


def main(argv=None) -> int:
    from .runtime import install_abort_hook

    install_abort_hook()
    from .cli.main import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
