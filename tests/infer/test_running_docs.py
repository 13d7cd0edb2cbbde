"""The Python examples in docs/running.md run as written, against a real trained model."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "running.md"


def test_python_api_examples_run(trained_model, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "docs/running.md has no Python examples"
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {"MODEL": str(trained_model)})
    assert "LocalModel(" in capsys.readouterr().out
