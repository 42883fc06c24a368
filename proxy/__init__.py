"""ragproxy: a local retrieval proxy in front of Ollama."""

import os

# numpy's BLAS on one thread, set before numpy loads: ragproxy's products are small (a few thousand
# rows of the vector search's second pass), and waking a second BLAS thread for each one cost 3x
# more than the product on a busy 2-core machine (bench/speed.py). The embedder has its own threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def version() -> str:
    """ragproxy's version as installed ("unknown" when run from sources that were not)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("ragproxy")
    except PackageNotFoundError:
        return "unknown"
