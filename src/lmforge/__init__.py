"""lmforge: turn your own data into a small language model you own, understand and run locally.

The public Python API is small and imported lazily so that `import lmforge` stays cheap:

    import lmforge
    model = lmforge.load("runs/demo/model")          # a path, or a name from `lmforge models list`
    print(model.generate("def fibonacci(n):", max_tokens=64))
    print(model.chat("Write a function that reverses a string"))
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load", "train", "ingest", "LmforgeError"]


def __getattr__(name):  # PEP 562: heavy modules (torch) load on first use only
    if name == "load":
        from lmforge.infer.local import load

        return load
    if name == "train":  # the subpackage, which is callable (see lmforge/train/__init__.py)
        import lmforge.train

        return lmforge.train
    if name == "ingest":
        from lmforge.data.ingest import ingest

        return ingest
    if name == "LmforgeError":
        from lmforge.errors import LmforgeError

        return LmforgeError
    raise AttributeError(f"module 'lmforge' has no attribute {name!r}")
