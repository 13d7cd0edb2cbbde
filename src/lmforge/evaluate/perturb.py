"""Perturbation by renaming (`--perturb rename`): the same task with other names, to tell a model that solves it
from one that remembers its surface.

Code (`rename_code`, `rename_problem`): the prompt and solution are parsed together as one program with `ast`, and
only names whose every use the program shows are renamed:
  renamed    function parameters (lambda ones too), names bound inside functions (assignments, loop, `with` and
             `except` targets, comprehension variables, walrus targets outside comprehensions), nested function
             names, and the program's top-level function names;
  kept       `keep` (the entry point, names the test uses), builtins, keywords, dunder names, `self` / `cls`,
             imported names, names bound at module or class level other than functions (a module variable may be
             read from outside; a class attribute is read as `obj.name`), methods and classes, names inside
             f-strings (their positions differ across Python versions), names that are also a string constant or,
             when the program calls eval / exec / getattr / globals / ..., a word of one, parameters that are
             passed by keyword to a callable the program does not define (`functools.partial(f, x=1)`), and names
             bound in `match` patterns or type parameters.
Attributes (`obj.name`) and keyword names at calls of functions the program does not define are never touched.
Each renamed name gets a fresh, plausible name (a noun for a variable, a verb for a function, a letter for a
letter) that occurs nowhere in the program, its comments or `keep`; the choice is seeded by (seed, program) so it
is deterministic. Edits are made at token positions (`tokenize`) in the original text, so formatting and comments
survive and the new prompt is still a prefix of the new program. Docstrings and comments follow: in doctest
lines (`>>>` / `...`) every renamed name; in prose (docstrings: the renamed parameters and functions; comments:
every renamed name) the mentions that can only mean the identifier (`_code_like`: one letter other than "a" / "i",
a short non-word like "xs" or "lst", or a name with `_`, a digit or an inner capital), as whole words and not
inside "e.g." / "i.e."; a plain word such as "numbers" or "string" stays, as the English word it usually is there.
Before returning, the new program is parsed and, with the renaming undone and docstrings blanked, must give the
same AST as the original: semantics kept, or an error.

Text (`rename_entities`): person-like names and capitalised entity words are replaced consistently across all the
texts of one item (context, choices, target), so the answer stays the answer. An entity is a word in the known
first-name lists (anywhere), or a capitalised word (Xxxx) that occurs somewhere not at a sentence start and is not
in the stop-list (pronoun I, days, months, titles, common function words). Known names keep their list (female,
male); other entities take gender-neutral names. Limits: a multi-word entity ("New York") is renamed word by word;
an entity seen only at sentence starts is missed; ALL-CAPS or lowercase mentions are not renamed; renaming a
real-world entity breaks world-knowledge questions ("the capital of France"), so use it on tasks whose entities
are arbitrary (reading comprehension, word problems, coreference), not on knowledge tasks.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import io
import keyword
import random
import re
import tokenize
from typing import Iterable, Sequence

from lmforge.errors import DataError

NOUNS = ("value", "item", "total", "count", "amount", "entry", "element", "record", "piece", "token", "chunk",
         "part", "node", "field", "label", "score", "weight", "level", "limit", "bound", "offset", "cursor",
         "marker", "target", "source", "origin", "output", "payload", "sample", "member", "unit", "block", "slot",
         "cell", "pair", "group", "batch", "bucket", "buffer", "store", "tally", "quantity", "measure", "extent",
         "span", "step", "stride", "position", "location", "place", "spot", "anchor", "pivot", "center", "edge",
         "corner", "border", "front", "rear", "head", "tail", "peak", "base", "root", "leaf", "branch", "stem",
         "crumb", "grain", "flake", "pebble", "stone", "brick", "tile", "panel", "frame", "layer", "sheet", "strip",
         "band", "ring", "cycle", "round", "phase", "stage", "state", "status", "signal", "flag", "switch", "toggle",
         "probe", "sensor", "reading", "figure", "metric", "ratio", "share", "portion", "fraction", "slice",
         "segment", "section")
VERBS = ("compute", "evaluate", "process", "transform", "resolve", "derive", "calculate", "determine", "assess",
         "measure_it", "analyse", "handle", "convert", "produce", "build", "make_result", "find_answer", "solve",
         "apply_rule", "examine", "inspect", "scan", "sweep", "gather", "collect", "reduce_all", "combine",
         "merge_all", "arrange", "organise", "normalise", "prepare", "generate", "construct", "assemble",
         "estimate", "judge", "rank", "tally_up", "count_up", "lookup", "locate", "detect", "extract", "select",
         "choose", "pick", "split_up", "join_up", "encode_it", "decode_it", "render", "format_it", "shape")
LETTERS = tuple("abcdefghijkmnopqrstuvwxyz")  # no "l": it reads as 1 (PEP 8)
_DYNAMIC = {"eval", "exec", "compile", "globals", "locals", "vars", "getattr", "setattr", "hasattr", "delattr",
            "__import__"}
_NEVER = set(dir(builtins)) | set(keyword.kwlist) | set(getattr(keyword, "softkwlist", ())) | {"self", "cls"}
_PROSE_SKIP = {"a", "i", "A", "I"}
_SHORT_WORDS = set("an as at be by do go if in is it me my no of on or so to up us we and are but can for has her "
                   "his how its new not now one our out the two was who why yes you all any few end odd set day top "
                   "row key".split())


def _code_like(name: str) -> bool:
    """A name prose can only mean as the identifier: one letter (not "a" / "i"), up to three letters and no common
    English word ("xs", "lst", "arr"), or with `_`, a digit or a capital inside. A longer plain lowercase word
    ("numbers", "string") is left alone in prose, where it is usually English, not the parameter."""
    if name in _PROSE_SKIP or name in _SHORT_WORDS:
        return False
    return len(name) <= 3 or "_" in name or any(ch.isdigit() for ch in name) or name[1:] != name[1:].lower()


# ---- code ---------------------------------------------------------------------------------------------------


class _Text:
    """Line/column <-> character offset for one program (columns from `ast` are UTF-8 bytes)."""

    def __init__(self, text: str):
        self.lines = io.StringIO(text).readlines()  # the lines tokenize and ast count
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, lineno: int, col: int, *, byte_col: bool = True) -> int:
        line = self.lines[lineno - 1] if lineno - 1 < len(self.lines) else ""
        if byte_col and not line.isascii():
            col = len(line.encode("utf-8")[:col].decode("utf-8", "replace"))
        return self.starts[lineno - 1] + col


class _Scan:
    """What the AST says about every name: where it occurs, which scopes bind it, what must be kept."""

    def __init__(self, tree: ast.Module, text: _Text, names_at: dict[int, str]):
        self.text, self.names_at = text, names_at
        self.name_offsets = sorted(names_at)
        self.occurrences: dict[str, list[int]] = {}   # name -> offsets of its renamable occurrences
        self.explained: set[int] = set()              # NAME tokens that are not variable uses (attrs, kwargs)
        self.local: set[str] = set()                  # bound in a function (or comprehension) scope
        self.params: set[str] = set()
        self.functions: set[str] = set()              # defined by the program (module level or nested)
        self.fixed: set[str] = set()
        self.calls: list[tuple[ast.Call, str | None]] = []
        self.strings: list[str] = []
        self.docstrings: set[int] = set()             # id() of docstring Constant nodes
        self.visit_body(tree.body, "module")

    # where a name without its own position sits: the first NAME token equal to it at or after `start`
    def _token_after(self, name: str, start: int, end: int | None = None) -> int | None:
        import bisect

        for off in self.name_offsets[bisect.bisect_left(self.name_offsets, start):]:
            if end is not None and off >= end:
                return None
            if self.names_at[off] == name:
                return off
        return None

    def _at(self, node) -> int:
        return self.text.offset(node.lineno, node.col_offset)

    def _end(self, node) -> int:
        return self.text.offset(node.end_lineno, node.end_col_offset)

    def occur(self, name: str, offset: int | None) -> None:
        if offset is None:
            self.fixed.add(name)  # a use we cannot place: never rename it
        else:
            self.occurrences.setdefault(name, []).append(offset)

    def bind(self, name: str, scope: str) -> None:
        (self.local if scope in ("function", "comp") else self.fixed).add(name)

    def visit_body(self, body, scope: str) -> None:
        """A module's, function's or class's body: its leading string is a docstring."""
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            self.docstrings.add(id(body[0].value))
        for stmt in body:
            self.visit(stmt, scope)

    def visit_args(self, args: ast.arguments, scope: str) -> None:
        for d in args.defaults + [d for d in args.kw_defaults if d is not None]:
            self.visit(d, scope)
        for a in args.posonlyargs + args.args + [args.vararg] + args.kwonlyargs + [args.kwarg]:
            if a is None:
                continue
            self.params.add(a.arg)
            self.local.add(a.arg)
            self.occur(a.arg, self._at(a))
            if a.annotation is not None:
                self.visit(a.annotation, scope)

    def visit(self, node, scope: str) -> None:  # noqa: C901 (one dispatch on node types)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                self.visit(d, scope)
            if scope == "class":
                self.fixed.add(node.name)  # a method: read as obj.name
            else:
                self.functions.add(node.name)
                (self.local if scope != "module" else self.functions).add(node.name)
                self.occur(node.name, self._token_after(node.name, self._at(node)))
            for p in getattr(node, "type_params", ()):
                self.fixed.add(getattr(p, "name", ""))
            self.visit_args(node.args, scope)
            if node.returns is not None:
                self.visit(node.returns, scope)
            self.visit_body(node.body, "function")
        elif isinstance(node, ast.Lambda):
            self.visit_args(node.args, scope)
            self.visit(node.body, "function")
        elif isinstance(node, ast.ClassDef):
            for d in node.decorator_list + node.bases + [k.value for k in node.keywords]:
                self.visit(d, scope)
            self.fixed.add(node.name)
            for p in getattr(node, "type_params", ()):
                self.fixed.add(getattr(p, "name", ""))
            self.visit_body(node.body, "class")
        elif isinstance(node, ast.Name):
            self.occur(node.id, self._at(node))
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                self.bind(node.id, scope)
        elif isinstance(node, ast.NamedExpr):
            self.visit(node.value, scope)
            self.occur(node.target.id, self._at(node.target))
            self.bind(node.target.id, "module" if scope == "comp" else scope)  # a walrus in a comprehension
            # binds in the enclosing scope, which may be the module: kept unless clearly a function's
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            for i, gen in enumerate(node.generators):
                self.visit(gen.iter, scope if i == 0 else "comp")
                self.visit(gen.target, "comp")
                for cond in gen.ifs:
                    self.visit(cond, "comp")
            for part in ([node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]):
                self.visit(part, "comp")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            start, end = self._at(node), self._end(node)
            for name in node.names:
                if isinstance(node, ast.Global):
                    self.fixed.add(name)  # a module variable
                self.occur(name, self._token_after(name, start + len("global" if isinstance(node, ast.Global)
                                                                     else "nonlocal"), end))
        elif isinstance(node, ast.ExceptHandler):
            if node.type is not None:
                self.visit(node.type, scope)
            if node.name:
                self.bind(node.name, scope)
                after = self._end(node.type) if node.type is not None else self._at(node)
                self.occur(node.name, self._token_after(node.name, after))
            for stmt in node.body:
                self.visit(stmt, scope)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                self.fixed.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.Attribute):
            self.visit(node.value, scope)
            self.explained.add(self._end(node) - len(node.attr))
        elif isinstance(node, ast.Call):
            self.visit(node.func, scope)
            for a in node.args:
                self.visit(a, scope)
            callee = node.func.id if isinstance(node.func, ast.Name) else None
            for k in node.keywords:
                if k.arg is not None:
                    self.explained.add(self._at(k))
                self.visit(k.value, scope)
            self.calls.append((node, callee))
        elif isinstance(node, ast.JoinedStr):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name):
                    self.fixed.add(sub.id)
                elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    self.strings.append(sub.value)
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str) and id(node) not in self.docstrings:
                self.strings.append(node.value)
        elif type(node).__name__.startswith("Match") and type(node).__name__ != "Match":
            for field in ("name", "rest"):
                if isinstance(getattr(node, field, None), str):
                    self.fixed.add(getattr(node, field))
            for child in ast.iter_child_nodes(node):
                self.visit(child, scope)
        else:
            for child in ast.iter_child_nodes(node):
                self.visit(child, scope)


def _renamable(scan: _Scan, keep: set[str]) -> set[str]:
    names = (scan.local | scan.params | scan.functions) - scan.fixed - keep - _NEVER
    names = {n for n in names if not (n.startswith("__") and n.endswith("__"))}
    strings = set(s.strip() for s in scan.strings)
    dynamic = any(n in _DYNAMIC for n in scan.occurrences)
    words = {w for s in scan.strings for w in re.findall(r"[A-Za-z_]\w*", s)} if dynamic else set()
    names -= strings | words
    for call, callee in scan.calls:  # a parameter passed by keyword to a callable we cannot see stays
        if callee not in scan.functions:
            names -= {k.arg for k in call.keywords if k.arg in scan.params}
    return names


def _fresh_names(order: list[str], scan: _Scan, avoid: set[str], rng: random.Random) -> dict[str, str]:
    pools = {kind: list(pool) for kind, pool in (("noun", NOUNS), ("verb", VERBS), ("letter", LETTERS))}
    for pool in pools.values():
        rng.shuffle(pool)
    used = set(avoid)
    mapping = {}
    for name in order:
        kind = "verb" if name in scan.functions else ("letter" if len(name) == 1 else "noun")
        pool = pools[kind] if kind != "letter" or any(c not in used for c in pools["letter"]) else pools["noun"]
        new = next((c for c in pool if c not in used), None)
        k = 2
        while new is None:  # every pool word taken: number them
            new = next((f"{c}{k}" for c in pool if f"{c}{k}" not in used), None)
            k += 1
        used.add(new)
        mapping[name] = new
    return mapping


def _rewrite_words(text: str, mapping: dict[str, str]) -> str:
    if not mapping:
        return text
    pattern = re.compile(r"(?<![\w.])(?<!\w\.)(" + "|".join(map(re.escape, sorted(mapping, key=len, reverse=True)))
                         + r")(?!\w)(?!\.\w)")
    return pattern.sub(lambda m: mapping[m.group(1)], text)


def _rewrite_doc(body: str, code_map: dict[str, str], prose_map: dict[str, str]) -> str:
    out = []
    for line in body.splitlines(keepends=True):
        doctest = line.lstrip().startswith((">>>", "..."))
        out.append(_rewrite_words(line, code_map if doctest else prose_map))
    return "".join(out)


_STRING_START = re.compile(r"^([A-Za-z]*)('''|\"\"\"|'|\")", re.S)


def _undo(tree: ast.AST, inverse: dict[str, str], docstrings: bool = True) -> str:
    """ast.dump with renamed identifiers mapped back and docstrings blanked: equal dumps = the same program."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            node.id = inverse.get(node.id, node.id)
        elif isinstance(node, ast.arg):
            node.arg = inverse.get(node.arg, node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.name = inverse.get(node.name, node.name)
        elif isinstance(node, ast.keyword) and node.arg:
            node.arg = inverse.get(node.arg, node.arg)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            node.names = [inverse.get(n, n) for n in node.names]
        elif isinstance(node, ast.ExceptHandler) and node.name:
            node.name = inverse.get(node.name, node.name)
        if docstrings and isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                body[0].value.value = ""
    return ast.dump(tree)


def rename_code(prompt: str, solution: str = "", *, seed: int = 0, keep: Iterable[str] = frozenset(),
                avoid: Iterable[str] = frozenset()) -> tuple[str, str, dict[str, str]]:
    """(new prompt, new solution, {old name: new name}) for `prompt + solution` as one program. `keep` names are
    neither renamed nor chosen as new names; `avoid` names are only never chosen (the identifiers of code that
    runs beside the program, such as a test). See the module docstring for the rules."""
    program = prompt + solution
    try:
        tree = ast.parse(program)
    except SyntaxError as e:
        raise DataError(f"the prompt and solution do not parse as Python: {e.msg}", where=f"line {e.lineno}",
                        hint="rename_code needs a complete program (prompt + canonical solution)") from None
    keep = set(keep)
    text = _Text(program)
    tokens = list(tokenize.generate_tokens(io.StringIO(program).readline))
    names_at = {text.offset(*t.start, byte_col=False): t.string for t in tokens if t.type == tokenize.NAME}
    scan = _Scan(tree, text, names_at)
    names = _renamable(scan, keep)
    cut = len(prompt)
    # a function's keyword arguments are renamed with its parameters; other keyword names stay as they are
    for call, callee in scan.calls:
        if callee in scan.functions:
            for k in call.keywords:
                if k.arg in names:
                    scan.occurrences.setdefault(k.arg, []).append(scan._at(k))
    # every occurrence must sit on a NAME token of that name, and every NAME token of that name must be an
    # occurrence or explained (an attribute, a keyword name) — else the name stays (something unseen uses it)
    placed: dict[str, set[int]] = {n: set(scan.occurrences.get(n, ())) for n in names}
    for off, tok in names_at.items():
        if tok in names and off not in placed[tok] and off not in scan.explained:
            names.discard(tok)
    for n in list(names):
        if any(names_at.get(off) != n or off < cut < off + len(n) for off in placed[n]):
            names.discard(n)
    order = sorted(names, key=lambda n: min(placed[n]))
    digest = hashlib.sha256(f"{seed}\x00{program}".encode("utf-8", "surrogatepass")).digest()
    taken = set(re.findall(r"\w+", program)) | keep | set(avoid) | _NEVER
    mapping = _fresh_names(order, scan, taken, random.Random(digest))
    # edits: every occurrence, plus docstrings and comments
    edits = [(off, off + len(n), mapping[n]) for n in order for off in placed[n]]
    prose_map = {o: n for o, n in mapping.items() if (o in scan.params or o in scan.functions) and _code_like(o)}
    doc_offsets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) in scan.docstrings:
            doc_offsets.add(text.offset(node.lineno, node.col_offset))
    for t in tokens:
        start = text.offset(*t.start, byte_col=False)
        end = text.offset(*t.end, byte_col=False)
        if start < cut < end:
            continue  # a token across the prompt's end: left as it is
        if t.type == tokenize.COMMENT:
            new = _rewrite_words(t.string, {o: n for o, n in mapping.items() if _code_like(o)})
        elif t.type == tokenize.STRING and start in doc_offsets:
            m = _STRING_START.match(t.string)
            head, quote = m.group(1), m.group(2)
            body = t.string[len(head) + len(quote):len(t.string) - len(quote)]
            new = head + quote + _rewrite_doc(body, mapping, prose_map) + quote
        else:
            continue
        if new != t.string:
            edits.append((start, end, new))
    edits.sort()
    parts, last = [[], []], 0
    for start, end, new in edits:
        side = 0 if end <= cut else 1
        if side == 1 and last < cut:
            parts[0].append(program[last:cut])
            last = cut
        parts[side].append(program[last:start] + new)
        last = end
    if last < cut:
        parts[0].append(program[last:cut])
        last = cut
    parts[1].append(program[last:])
    new_prompt, new_solution = "".join(parts[0]), "".join(parts[1])
    inverse = {v: k for k, v in mapping.items()}
    if _undo(ast.parse(new_prompt + new_solution), inverse) != _undo(ast.parse(program), {}):
        raise AssertionError(f"renaming changed the program beyond its names: {mapping}")  # a bug here, not input
    return new_prompt, new_solution, mapping


def _test_needs(test: str) -> set[str]:
    """Names a test takes from the program: read but bound nowhere in the test, or passed as keywords. A test
    that does not parse keeps every identifier it mentions."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return set(re.findall(r"[A-Za-z_]\w*", test))
    bound, read, keywords = set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.keyword) and node.arg:
            keywords.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            read.update(node.names)
    return (read - bound) | keywords


def rename_problem(problem: dict, *, seed: int = 0) -> dict:
    """A HumanEval-style problem (`prompt`, `canonical_solution`, `test`, `entry_point`) with its names renamed.

    The entry point is kept (the test runs `check(entry_point)`), and so is every name the test reads without
    binding it (helpers it calls: HumanEval/38's `encode_cyclic`) and every keyword name it passes (a parameter
    called by name; no HumanEval test does: all call `candidate` positionally). No new name is one the test uses.
    `test` is returned unchanged; "renames" holds the mapping."""
    missing = [k for k in ("prompt", "canonical_solution", "test", "entry_point") if k not in problem]
    if missing:
        raise DataError(f"a code problem needs {', '.join(missing)}", where=str(problem.get("task_id", "problem")))
    test = problem["test"]
    keep = {problem["entry_point"], "check", "candidate"} | _test_needs(test)
    prompt, solution, mapping = rename_code(problem["prompt"], problem["canonical_solution"], seed=seed, keep=keep,
                                            avoid=re.findall(r"[A-Za-z_]\w*", test))
    return {**problem, "prompt": prompt, "canonical_solution": solution, "renames": mapping}


# ---- text ---------------------------------------------------------------------------------------------------

FEMALE = ("Alice", "Maria", "Emma", "Olivia", "Sophia", "Hannah", "Grace", "Chloe", "Laura", "Sarah", "Julia",
          "Nora", "Clara", "Ella", "Ruth", "Irene", "Linda", "Paula", "Vera", "Lucy", "Amelia", "Diana", "Helen",
          "Rosa", "Elena", "Nina", "Karen", "Megan", "Fiona", "Wendy", "Mary", "Jane", "Anna", "Emily", "Jessica",
          "Rachel", "Susan", "Betty", "Carol", "Sandra")
MALE = ("John", "David", "James", "Michael", "Robert", "Daniel", "Thomas", "Peter", "Henry", "Samuel", "Oliver",
        "Lucas", "Victor", "Oscar", "Felix", "Hugo", "Arthur", "Leon", "Marco", "Ivan", "Tom", "Bob", "Jack",
        "Mark", "Paul", "George", "Steven", "Kevin", "Brian", "Edward", "William", "Richard", "Joseph", "Charles",
        "Anthony", "Frank", "Gary", "Eric", "Adam", "Simon")
NEUTRAL = ("Avery", "Jordan", "Casey", "Morgan", "Riley", "Quinn", "Rowan", "Reese", "Emerson", "Skyler", "Harper",
           "Finley", "Sage", "Marlow", "Ellis", "Arden", "Blair", "Devon", "Hollis", "Kendall", "Linden", "Peyton",
           "Remy", "Shiloh", "Tatum", "Wren", "Zion", "Lennox", "Oakley", "Sutton")
STOP = {
    "I", "The", "A", "An", "And", "But", "Or", "If", "In", "On", "At", "Of", "To", "For", "With", "As", "By", "It",
    "This", "That", "These", "Those", "There", "Then", "He", "She", "They", "We", "You", "His", "Her", "Their",
    "Our", "Your", "My", "What", "Which", "Who", "Whom", "Whose", "When", "Where", "Why", "How", "Yes", "No", "Not",
    "Is", "Are", "Was", "Were", "Be", "Do", "Does", "Did", "Question", "Answer", "Q", "True", "False", "None",
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "January", "February", "March",
    "April", "May", "June", "July", "August", "September", "October", "November", "December",
    "Mr", "Mrs", "Ms", "Dr", "Prof", "Sir", "Madam", "St", "Mt", "God", "Option", "Choice", "Passage", "Context",
    "Title", "Article", "Sentence", "Statement", "Hypothesis", "Premise", "Step", "Note", "Therefore", "So",
    "Also", "However", "Finally", "First", "Second", "Third", "Next", "Each", "Every", "All", "Some", "Many",
}
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+\b")
_OPENERS = " \t\"'([\u201c\u2018"


def _sentence_initial(text: str, start: int) -> bool:
    """Whether the word at `start` begins the text, a sentence, a line or a clause after ':' / ';'."""
    before = text[max(0, start - 16):start].rstrip(_OPENERS)
    if not before:
        return start <= 16
    return before[-1] in ".!?:;\n"


def _entities(texts: Sequence[str]) -> list[str]:
    """Entity words of an item, in order of first appearance."""
    known = set(FEMALE) | set(MALE) | set(NEUTRAL)
    found: dict[str, bool] = {}
    for t in texts:
        for m in _CAPITALISED.finditer(t):
            w = m.group(0)
            initial = _sentence_initial(t, m.start())
            if w in known:
                found.setdefault(w, True)
            elif w not in STOP:
                found[w] = found.get(w, False) or not initial
    return [w for w, entity in found.items() if entity]


def entity_mapping(texts: Sequence[str], *, seed: int = 0) -> dict[str, str]:
    """{entity: new name} for one item's texts (deterministic for the seed and the texts)."""
    present = {w.lower() for t in texts for w in re.findall(r"\w+", t)}
    digest = hashlib.sha256(f"{seed}\x00".encode() + "\x00".join(texts).encode("utf-8", "surrogatepass")).digest()
    rng = random.Random(digest)
    pools = {}
    for name, pool in (("f", FEMALE), ("m", MALE), ("n", NEUTRAL)):
        pools[name] = [p for p in pool if p.lower() not in present]
        rng.shuffle(pools[name])
    mapping = {}
    for w in _entities(texts):
        kind = "f" if w in FEMALE else "m" if w in MALE else "n"
        pool = pools[kind] or pools["n"] or [p for k in "fmn" for p in pools[k]]
        if not pool:
            break  # every name in the lists is taken: leave the rest
        mapping[w] = pool.pop()
    return mapping


def rename_entities(texts: list[str], *, seed: int = 0) -> list[str]:
    """The item's texts (context, choices, target) with its entities renamed consistently across all of them."""
    mapping = entity_mapping(texts, seed=seed)
    if not mapping:
        return list(texts)
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")
    return [pattern.sub(lambda m: mapping[m.group(1)], t) for t in texts]
