"""Build shardlearn's compiled kernels; everything else about the package is in pyproject.toml.

Every ``src/shardlearn/**/_*_kernels.c`` becomes an extension module next to its source
(``models/kmeans/_kmeans_kernels.c`` -> ``shardlearn.models.kmeans._kmeans_kernels``). They are plain C99
against the CPython buffer protocol (no NumPy headers), built with the machine's C compiler
at ``pip install`` time. They are optional: without a compiler the install still succeeds and
the models use their NumPy code paths, which give the same results, only slower
(``shardlearn.backend.compiled_kernels``; ``SHARDLEARN_KERNELS=numpy`` forces those paths).
"""
from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent
# No -march: the build must run on any CPU of its architecture (a kernel that wants AVX2
# carries a second copy for it, picked at run time). fp-contract=fast lets those copies
# fuse multiply-adds (one rounding instead of two).
COMPILE_ARGS = ["-O3", "-std=c99", "-ffp-contract=fast"]


def kernel_extensions():
    # the headers the kernels include (_kernel_args.h: their argument checks): a changed
    # header rebuilds them, and setuptools ships these `depends` in the sdist
    headers = [h.relative_to(ROOT).as_posix() for h in sorted((ROOT / "src").glob("shardlearn/**/_*.h"))]
    exts = []
    for source in sorted((ROOT / "src").glob("shardlearn/**/_*_kernels.c")):
        module = ".".join(source.relative_to(ROOT / "src").with_suffix("").parts)
        exts.append(Extension(module, [source.relative_to(ROOT).as_posix()], depends=headers,
                              extra_compile_args=COMPILE_ARGS, optional=True))
    return exts


setup(ext_modules=kernel_extensions())
