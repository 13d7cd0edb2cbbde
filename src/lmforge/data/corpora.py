"""Embedded corpora: real data every machine already has. `python-stdlib` is the running interpreter's
standard-library source, split into train/validation by file. `python-stdlib-instruct` turns the same files'
documented public functions into chat records (the request from the signature and docstring, the answer the
function's source), split by the same files, so neither corpus validates on what the other trains on."""

from __future__ import annotations

import ast
import sys
import sysconfig
import warnings
from pathlib import Path
from typing import Iterator

from lmforge.errors import DataError
from lmforge.io import cache_dir, sha256_text

CORPORA = ("python-stdlib", "python-stdlib-instruct")
STDLIB_VAL_FRACTION = 0.02
STDLIB_EXCLUDE = ("site-packages", "site-packages/*", "*/site-packages/*", "__pycache__")
# python-stdlib-instruct: what a function must be to become a record. Bump INSTRUCT_VERSION with any change to
# the records, so cached builds are not reused.
INSTRUCT_VERSION = "1"
INSTRUCT_MAX_LINES = 80            # longer functions are left out: a small model's context, a readable answer
INSTRUCT_MIN_WORDS = 3             # a first docstring paragraph shorter than this asks for nothing
INSTRUCT_SKIP_DIRS = {"test", "tests", "idle_test"}  # test suites: test cases, not library functions


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    from lmforge.data.readers import list_files

    return list_files(stdlib_root(), include=["*.py"], exclude=STDLIB_EXCLUDE)


def _top_level_defs(body: list, owner: str | None = None) -> Iterator[tuple[str | None, ast.AST]]:
    """(class name or None, def) for module-level functions and the methods of module-level public classes,
    including those defined under a module-level `if` or `try` (platform variants)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield owner, node
        elif isinstance(node, ast.ClassDef) and owner is None and not node.name.startswith("_"):
            yield from _top_level_defs(node.body, node.name)
        elif isinstance(node, ast.If):
            yield from _top_level_defs(node.body, owner)
            yield from _top_level_defs(node.orelse, owner)
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            for part in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from _top_level_defs(part, owner)


def _trivial(node) -> bool:
    """A body that shows nothing to learn: empty, `pass`, `...`, a bare raise or `return NAME/CONSTANT`."""
    body = node.body[1:] if ast.get_docstring(node, clean=False) is not None else node.body
    if len(body) != 1:
        return not body
    stmt = body[0]
    if isinstance(stmt, (ast.Pass, ast.Raise)):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return True
    return isinstance(stmt, ast.Return) and (stmt.value is None or isinstance(stmt.value, (ast.Constant, ast.Name)))


def _outdent(lines: list[str], col: int) -> str:
    """The lines moved left by the def's own indentation. textwrap.dedent does this unless a multi-line string
    inside has lines further left, where it removes nothing and the code no longer parses; here such a line
    loses only the spaces it has."""
    if col == 0:
        return "".join(lines)
    return "".join(line[min(col, len(line) - len(line.lstrip(" \t"))):] for line in lines)


def _request(node, module: str, owner: str | None) -> str | None:
    """The user's turn: the signature and the docstring's first paragraph, one line; None if too thin."""
    doc = ast.get_docstring(node)
    paragraph = " ".join(doc.split("\n\n")[0].split()) if doc else ""
    if len(paragraph.split()) < INSTRUCT_MIN_WORDS:
        return None
    kind = "an async Python function" if isinstance(node, ast.AsyncFunctionDef) else "a Python function"
    where = f"module `{module}`"
    if owner is not None:
        kind, where = kind.replace("function", "method"), f"class `{owner}` in module `{module}`"
    return f"Write {kind} `{node.name}({ast.unparse(node.args)})` ({where}): {paragraph}"


def instruct_records(root: Path, files: list[Path]) -> Iterator[dict]:
    """python-stdlib-instruct's records, in file order then source order; files are parsed, never imported."""
    from lmforge.data.ingest import assign_split

    for path in files:
        rel = path.relative_to(root).as_posix()
        parts = rel.split("/")
        stem = parts[-1].removesuffix(".py")
        if INSTRUCT_SKIP_DIRS & set(parts[:-1]) or any(p.startswith("_") for p in parts[:-1]) or (
                stem.startswith("_") and stem != "__init__") or stem.startswith("test_"):
            continue
        try:
            source = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:  # the few deliberately non-UTF-8 files (encoding tests)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in old files warn, they still parse
            try:
                tree = ast.parse(source)
            except (SyntaxError, ValueError):
                continue
        lines = source.splitlines(keepends=True)
        module = ".".join(parts[:-1] + ([] if stem == "__init__" else [stem]))
        for owner, node in _top_level_defs(tree.body):
            if node.name.startswith("_") or _trivial(node):
                continue
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            if node.end_lineno - start + 1 > INSTRUCT_MAX_LINES:
                continue
            request = _request(node, module, owner)
            if request is None:
                continue
            # the whole lines from the first decorator to the end (ast.get_source_segment without decorators)
            answer = _outdent(lines[start - 1: node.end_lineno], node.col_offset).rstrip() + "\n"
            name = node.name if owner is None else f"{owner}.{node.name}"
            yield {"id": f"{rel}:{node.lineno}:{name}", "text": None, "source": rel,
                   "messages": [{"role": "user", "content": request}, {"role": "assistant", "content": answer}],
                   "split": assign_split(rel, STDLIB_VAL_FRACTION)}


def build_corpus(name: str, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    from lmforge.data.ingest import assign_split, write_dataset
    from lmforge.data.readers import read_folder

    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}", hint=f"available: {', '.join(CORPORA)}")
    root = stdlib_root()
    if name == "python-stdlib-instruct":
        return write_dataset(instruct_records(root, stdlib_files()), out, overwrite=overwrite, progress=progress,
                             corpus=name, python=sys.version.split()[0], sources=[str(root)],
                             val_fraction=STDLIB_VAL_FRACTION, builder=INSTRUCT_VERSION,
                             max_lines=INSTRUCT_MAX_LINES)

    def records():
        # A handful of stdlib test files are deliberately not UTF-8 (encoding tests); they are left out.
        for rec in read_folder(root, ["*.py"], STDLIB_EXCLUDE, skip_invalid=True):
            rec["split"] = assign_split(rec["source"], STDLIB_VAL_FRACTION)
            yield rec

    return write_dataset(records(), out, overwrite=overwrite, progress=progress, corpus=name,
                         python=sys.version.split()[0], sources=[str(root)], val_fraction=STDLIB_VAL_FRACTION)


def cached_corpus(name: str, *, progress: bool = True) -> Path:
    """The corpus as a dataset in lmforge's cache, built on first use; keyed by the files it reads."""
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}", hint=f"available: {', '.join(CORPORA)}")
    files = stdlib_files()
    version = [INSTRUCT_VERSION] if name == "python-stdlib-instruct" else []  # python-stdlib's keys as before
    key = sha256_text(sys.version, *version, *(f"{p}:{p.stat().st_size}" for p in files))[:16]
    path = cache_dir("datasets") / f"{name}-{key}"
    if not (path / "dataset.json").is_file():
        build_corpus(name, path, overwrite=True, progress=progress)
    return path
