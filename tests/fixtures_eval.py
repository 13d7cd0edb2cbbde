"""Task files over planted local data, shared by the harness and lm-eval adapter tests."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def _lines(n: int) -> list[str]:
    lines = [s for s in (STDLIB / "textwrap.py").read_text().splitlines() if len(s.strip()) > 12]
    return lines[:n]


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory) -> Path:
    """Four task files, one per output type, over planted local data (absolute paths, as lm-eval needs)."""
    d = tmp_path_factory.mktemp("tasks")
    lines = _lines(80)
    mc = [{"context": "\n".join(lines[i:i + 4]) + "\n", "choices": [lines[i + 4], lines[i + 9], lines[i + 14]],
           "label": 0} for i in range(0, 60, 2)]
    (d / "mc_test.jsonl").write_text("".join(json.dumps(x) + "\n" for x in mc[:24]))
    (d / "mc_train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in mc[24:]))
    docs = [{"q": "\n".join(lines[i:i + 3]) + "\n", "a": lines[i + 3], "text": "\n".join(lines[i:i + 12])}
            for i in range(0, 40, 2)]
    (d / "docs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in docs))
    common = "dataset_path: json\n"
    (d / "t_mc.yaml").write_text(
        f"task: t_mc\n{common}dataset_kwargs:\n  data_files:\n    test: {d / 'mc_test.jsonl'}\n"
        f"    train: {d / 'mc_train.jsonl'}\ntest_split: test\nfewshot_split: train\nnum_fewshot: 2\n"
        "fewshot_config:\n  sampler: first_n\noutput_type: multiple_choice\ndoc_to_text: '{{context}}'\n"
        "doc_to_choice: choices\ndoc_to_target: label\ntarget_delimiter: ''\nfewshot_delimiter: \"\\n###\\n\"\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    (d / "t_ll.yaml").write_text(
        f"task: t_ll\n{common}dataset_kwargs:\n  data_files:\n    test: {d / 'docs.jsonl'}\ntest_split: test\n"
        "output_type: loglikelihood\ndoc_to_text: '{{q}}'\ndoc_to_target: a\ntarget_delimiter: ''\n")
    (d / "t_gen.yaml").write_text(
        f"task: t_gen\n{common}dataset_kwargs:\n  data_files:\n    test: {d / 'docs.jsonl'}\ntest_split: test\n"
        "output_type: generate_until\ndoc_to_text: '{{q}}'\ndoc_to_target: a\n"
        "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 12\n  do_sample: false\n"
        "filter_list:\n  - name: word\n    filter:\n      - function: regex\n        regex_pattern: '([A-Za-z_]+)'\n"
        "      - function: take_first\n"
        "metric_list:\n  - metric: exact_match\n    ignore_case: true\n")
    (d / "t_roll.yaml").write_text(
        f"task: t_roll\n{common}dataset_kwargs:\n  data_files:\n    test: {d / 'docs.jsonl'}\ntest_split: test\n"
        "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: text\n")
    return d


