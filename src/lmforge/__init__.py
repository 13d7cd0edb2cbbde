"""lmforge: turn your own data into a small language model you own, understand and run locally.

The public Python API is small and imported lazily so that `import lmforge` stays cheap:

    import lmforge
    model, tokenizer = lmforge.load("runs/demo/model")
    print(lmforge.generate(model, tokenizer, "def fibonacci(n):", max_tokens=64))
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load", "generate", "train", "ingest", "LmforgeError"]


def __getattr__(name):  # PEP 562: heavy modules (torch) load on first use only
    if name == "load":
        from lmforge.model.hf import load_pretrained

        return load_pretrained
    if name == "generate":
        from lmforge.infer.engine import generate_text

        return generate_text
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
