"""Evaluation tasks in lm-eval's YAML format (the subset that works on local data), turned into documents and
the strings a model is scored on.

Supported keys, with lm-eval's meaning: `task`, `dataset_path: json` with `data_files` (top level or under
`dataset_kwargs`; a string, a list or {split: path}), `test_split` / `validation_split` / `training_split` /
`fewshot_split`, `output_type` (loglikelihood | multiple_choice | generate_until | loglikelihood_rolling),
`description`, `doc_to_text`, `doc_to_target`, `doc_to_choice` (a field name, a Jinja template, or a list),
`target_delimiter` (" "), `fewshot_delimiter` ("\\n\\n"), `num_fewshot`, `fewshot_config.sampler`
(default | first_n), `metric_list`, `generation_kwargs`, `filter_list` (regex, take_first, lowercase,
uppercase, remove_whitespace), plus keys that change no score (`tag`, `metadata`, `should_decontaminate`,
`doc_to_decontamination_query`, `dataset_name`). Anything else is refused by name, as is `!function`: a score
from a task file must not depend on code this harness cannot see.

A relative data file resolves against the working directory (as lm-eval does), else the task file's folder.

Few-shot examples are drawn per document from a generator seeded by (seed, document index), so a document's
prompt does not change with `--limit` or with the order documents are scored in (lm-eval draws them from one
generator in sequence).
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from lmforge.errors import DataError

OUTPUT_TYPES = ("loglikelihood", "multiple_choice", "generate_until", "loglikelihood_rolling")
DEFAULT_METRICS = {
    "loglikelihood": ["perplexity", "acc"],
    "multiple_choice": ["acc", "acc_norm"],
    "generate_until": ["exact_match"],
    "loglikelihood_rolling": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
}
IGNORED_KEYS = {"tag", "group", "metadata", "should_decontaminate", "doc_to_decontamination_query", "dataset_name",
                "include", "unsafe_code"}
KNOWN_KEYS = {"task", "dataset_path", "dataset_kwargs", "data_files", "test_split", "validation_split",
              "training_split", "fewshot_split", "output_type", "description", "doc_to_text", "doc_to_target",
              "doc_to_choice", "target_delimiter", "fewshot_delimiter", "num_fewshot", "fewshot_config",
              "metric_list", "generation_kwargs", "filter_list", "repeats"} | IGNORED_KEYS


@dataclass
class Task:
    """One task: its documents per split and how a document becomes text, target and choices."""

    name: str
    output_type: str
    splits: dict[str, Path]
    test_split: str
    doc_to_text: Any = None
    doc_to_target: Any = None
    doc_to_choice: Any = None
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    num_fewshot: int = 0
    fewshot_split: str | None = None
    fewshot_sampler: str = "default"
    metric_list: list[dict] = field(default_factory=list)
    generation_kwargs: dict = field(default_factory=dict)
    filter_list: list[dict] = field(default_factory=list)
    source: str = ""
    """Where the task came from (a YAML path or "builtin"), for the report."""
    config: dict = field(default_factory=dict)
    """The task file as written (report.json's `configs`)."""

    # --- documents -------------------------------------------------------------------------------

    def docs(self, split: str | None = None) -> list[dict]:
        split = split or self.test_split
        if split not in self._docs:
            self._docs[split] = _read_docs(self.splits[split])
        return self._docs[split]

    @cached_property
    def _docs(self) -> dict[str, list[dict]]:
        return {}

    @property
    def metrics(self) -> list[dict]:
        return self.metric_list or [{"metric": m} for m in DEFAULT_METRICS[self.output_type]]

    @property
    def filters(self) -> list[dict]:
        """[{"name", "filter": [steps]}]; without filter_list, lm-eval's one filter "none" (take the first)."""
        return self.filter_list or [{"name": "none", "filter": [{"function": "take_first"}]}]

    # --- a document's strings (lm-eval's semantics) ----------------------------------------------

    def text(self, doc: dict) -> str:
        return str(self._apply(self.doc_to_text, doc, "doc_to_text"))

    def choices(self, doc: dict) -> list[str]:
        spec = self.doc_to_choice
        if spec is None:
            raise DataError(f"task {self.name!r} has no doc_to_choice", where=self.source,
                            hint=f"{self.output_type} needs one")
        if isinstance(spec, list):
            return [str(render(c, doc)) if isinstance(c, str) else str(c) for c in spec]
        if isinstance(spec, dict):
            return [str(v) for v in spec.values()]
        if spec in doc:
            value = doc[spec]
        else:
            rendered = render(spec, doc)
            try:
                value = ast.literal_eval(rendered)
            except (ValueError, SyntaxError):
                raise DataError(f"doc_to_choice of task {self.name!r} rendered {rendered[:80]!r}, not a list",
                                where=self.source, hint="it must name a list field or render a list literal")
        if not isinstance(value, (list, tuple)) or not value:
            raise DataError(f"doc_to_choice of task {self.name!r} gave {value!r}, not a non-empty list",
                            where=self.source)
        return [str(v) for v in value]

    def target(self, doc: dict):
        """The target: a string, or for multiple choice the gold choice's index."""
        value = self._apply(self.doc_to_target, doc, "doc_to_target")
        if self.output_type != "multiple_choice":
            return value if isinstance(value, str) else str(value)
        choices = self.choices(doc)
        if isinstance(value, str):
            if value.strip().lstrip("-").isdigit():
                value = int(value)
            elif value in choices:
                value = choices.index(value)
            else:
                raise DataError(f"task {self.name!r}: target {value!r} is neither an index nor one of the choices "
                                f"{choices}", where=self.source)
        if not isinstance(value, int) or not 0 <= value < len(choices):
            raise DataError(f"task {self.name!r}: target index {value!r} is outside the {len(choices)} choices",
                            where=self.source)
        return value

    def target_text(self, doc: dict) -> str:
        """The target as the text a few-shot example shows."""
        target = self.target(doc)
        return self.choices(doc)[target] if self.output_type == "multiple_choice" else target

    def context(self, doc: dict, index: int, *, seed: int = 1234, num_fewshot: int | None = None) -> str:
        """description + few-shot examples + the document's text, as lm-eval lays them out."""
        n = self.num_fewshot if num_fewshot is None else num_fewshot
        shots = self.fewshot_docs(index, n, seed) if n else []
        examples = "".join(self.text(d) + self.target_delimiter + self.target_text(d) + self.fewshot_delimiter
                           for d in shots)
        return self.description + examples + self.text(doc)

    def fewshot_docs(self, index: int, n: int, seed: int) -> list[dict]:
        split = self.fewshot_split or next((s for s in ("train", "validation") if s in self.splits
                                            and s != self.test_split), self.test_split)
        pool = self.docs(split)
        if split == self.test_split:  # never show the document its own answer
            pool = pool[:index] + pool[index + 1:]
        if len(pool) < n:
            raise DataError(f"task {self.name!r} asks for {n} few-shot examples but split {split!r} offers "
                            f"{len(pool)}", where=self.source, hint="lower num_fewshot or add a fewshot_split")
        if self.fewshot_sampler == "first_n":
            return pool[:n]
        return random.Random(f"{seed}:{index}").sample(pool, n)

    def _apply(self, spec, doc: dict, key: str):
        if spec is None:
            raise DataError(f"task {self.name!r} has no {key}", where=self.source)
        if isinstance(spec, (int, list)):
            return spec
        if spec in doc:
            return doc[spec]
        rendered = render(spec, doc)
        if self.doc_to_choice is not None and rendered.strip().isdigit():
            return int(rendered)
        if rendered.startswith("[") and rendered.endswith("]") and key == "doc_to_target":
            try:
                return ast.literal_eval(rendered)
            except (ValueError, SyntaxError):
                pass
        return rendered


def render(template: str, doc: dict) -> str:
    """A Jinja template rendered with the document's fields (undefined fields are an error, as in lm-eval)."""
    import jinja2

    try:
        return _jinja().from_string(template).render(**doc)
    except jinja2.UndefinedError as e:
        raise DataError(f"template {template[:60]!r}: {e.message}", hint=f"the document's fields are {sorted(doc)}")
    except jinja2.TemplateSyntaxError as e:
        raise DataError(f"template {template[:60]!r} does not parse: {e.message}")


_JINJA = None


def _jinja():
    global _JINJA
    if _JINJA is None:
        import jinja2

        _JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        _JINJA.filters["regex_replace"] = lambda s, pattern, repl: re.sub(pattern, repl, s)
    return _JINJA


def _read_docs(path: Path) -> list[dict]:
    from lmforge.data.readers import json_objects

    return [obj for _, _, obj in json_objects(path)]


# --- loading task files ----------------------------------------------------------------------------


def _yaml_loader():
    """yaml.SafeLoader that names `!function` instead of failing on an unknown tag."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def function(loader, node):
        raise DataError(f"`!function {loader.construct_scalar(node)}` runs code from outside the task file",
                        hint="lmforge reads templates and field names only; write it as a Jinja template")

    Loader.add_constructor("!function", function)
    return Loader


def load_task_file(path: str | Path) -> Task:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError("no such task file", where=str(path))
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml_loader())
    except yaml.YAMLError as e:
        raise DataError(f"not valid YAML: {e}", where=str(path))
    if not isinstance(config, dict):
        raise DataError("a task file must be a mapping of lm-eval task keys", where=str(path))
    return task_from_config(config, where=str(path), base=path.parent)


def task_from_config(config: dict, *, where: str, base: Path | None = None) -> Task:
    unknown = sorted(set(config) - KNOWN_KEYS)
    if unknown:
        raise DataError(f"unsupported task keys: {', '.join(unknown)}", where=where,
                        hint="lmforge reads lm-eval's local-data subset (see docs/evaluation.md)")
    name = config.get("task")
    if not isinstance(name, str) or not name:
        raise DataError("the task needs a `task:` name", where=where)
    if config.get("dataset_path") not in ("json", "jsonl"):
        raise DataError(f"dataset_path {config.get('dataset_path')!r} is not local data", where=where,
                        hint="use `dataset_path: json` with `dataset_kwargs: {data_files: {test: FILE.jsonl}}`")
    output_type = config.get("output_type", "generate_until")
    if output_type not in OUTPUT_TYPES:
        raise DataError(f"output_type {output_type!r} is not one of {', '.join(OUTPUT_TYPES)}", where=where)
    files = config.get("data_files", (config.get("dataset_kwargs") or {}).get("data_files"))
    if files is None:
        raise DataError("the task names no data_files", where=where,
                        hint="dataset_kwargs: {data_files: {test: FILE.jsonl}}")
    if isinstance(files, (str, list)):
        files = {"train": files}  # HF datasets names a bare data_files split "train"
    splits = {}
    for split, file in files.items():
        if isinstance(file, list):
            if len(file) != 1:
                raise DataError(f"split {split!r} lists {len(file)} files; one file per split is supported",
                                where=where)
            file = file[0]
        splits[split] = _resolve(str(file), base, where)
    test_split = config.get("test_split") or config.get("validation_split") or next(iter(splits))
    for key in ("test_split", "validation_split", "training_split", "fewshot_split"):
        if config.get(key) is not None and config[key] not in splits:
            raise DataError(f"{key} {config[key]!r} is not one of the data_files splits {sorted(splits)}", where=where)
    fewshot = config.get("fewshot_config") or {}
    sampler = fewshot.get("sampler", "default")
    if sampler not in ("default", "first_n"):
        raise DataError(f"fewshot sampler {sampler!r} is not supported", where=where, hint="default or first_n")
    if output_type == "multiple_choice" and config.get("doc_to_choice") is None:
        raise DataError("a multiple_choice task needs doc_to_choice", where=where)
    if (config.get("repeats") or 1) != 1:
        raise DataError("repeats above 1 are not supported", where=where)
    for metric in config.get("metric_list") or []:
        if not isinstance(metric, dict) or "metric" not in metric:
            raise DataError(f"metric_list entries need a `metric:` name, got {metric!r}", where=where)
        from lmforge.evaluate.metrics import check_metric

        check_metric(metric["metric"], output_type, where)
    for flt in config.get("filter_list") or []:
        from lmforge.evaluate.filters import check_filter

        check_filter(flt, where)
    return Task(
        name=name, output_type=output_type, splits=splits, test_split=test_split,
        doc_to_text=config.get("doc_to_text"), doc_to_target=config.get("doc_to_target"),
        doc_to_choice=config.get("doc_to_choice"), description=config.get("description") or "",
        target_delimiter=config.get("target_delimiter", " "), fewshot_delimiter=config.get("fewshot_delimiter", "\n\n"),
        num_fewshot=int(config.get("num_fewshot") or 0),
        fewshot_split=config.get("fewshot_split") or config.get("training_split"), fewshot_sampler=sampler,
        metric_list=list(config.get("metric_list") or []), generation_kwargs=dict(config.get("generation_kwargs") or {}),
        filter_list=list(config.get("filter_list") or []), source=where, config=config,
    )


def _resolve(file: str, base: Path | None, where: str) -> Path:
    path = Path(file).expanduser()
    if path.is_absolute() or path.is_file() or base is None:
        found = path
    else:
        found = base / path
    if not found.is_file():
        raise DataError(f"data file {file!r} does not exist", where=where,
                        hint="a relative path resolves against the working directory, then the task file's folder")
    return found.resolve()
