"""The command line as a user meets it: help, version, lazy imports."""

import importlib.metadata
import subprocess
import sys

from conftest import run_cli


def test_help_lists_verbs():
    proc = run_cli("--help", check=True)
    for verb in ("data", "tokenizer", "train", "generate", "demo"):
        assert verb in proc.stdout
    assert "ingest" in run_cli("data", "--help", check=True).stdout


def test_version():
    """The version the installed distribution declares (pyproject.toml), not the constant the CLI prints."""
    assert run_cli("--version", check=True).stdout.strip() == f"lmforge {importlib.metadata.version('lmforge')}"


def test_help_does_not_import_heavy_modules():
    """--help must stay fast: torch, transformers, pyarrow and tokenizers load only inside the verbs."""
    code = ("import sys; from lmforge.cli.main import app; "
            "heavy = [m for m in ('torch', 'transformers', 'pyarrow', 'tokenizers', 'numpy') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_generate_on_missing_model_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))  # an empty catalog, whatever other tests added
    proc = run_cli("generate", tmp_path / "nope", "hi")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nope'}: no such model (MODEL is a model directory in Hugging Face layout "
        "(e.g. RUN_DIR/model), a .gguf file or a catalog name; the catalog is empty: lmforge models import PATH)"]
