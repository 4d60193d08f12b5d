"""The README's layer example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_layer_example_runs():
    section = README.read_text().split("\n## The layer\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the layer section should hold one python example"
    exec(compile(blocks[0], str(README), "exec"), {})
