"""The starter notebook executes end to end on the fixture experiment."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parents[2] / "analysis" / "notebooks" / "sensitivity.ipynb"


@pytest.mark.slow
def test_notebook_executes(experiment, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    notebook.cells.insert(
        index + 1,
        nbformat.v4.new_code_cell(f"EXPERIMENT_DIRS = [{str(experiment)!r}]\nOUT_DIR = {str(tmp_path / 'frames')!r}"),
    )
    nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 6
    text = "".join(o.get("text", "") for o in outputs)
    assert "24 trials" in text
    findings_cell = next(i for i, cell in enumerate(notebook.cells) if "analysis.findings(" in cell.source)
    assert findings_cell < next(i for i, cell in enumerate(notebook.cells) if "results.trials.head()" in cell.source)
    assert "Findings (95% bootstrap intervals over runs" in text
    assert "Is it as good as the baselines?" in text
    assert (tmp_path / "frames" / "trials.parquet").exists()
