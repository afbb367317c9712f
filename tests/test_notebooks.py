"""The notebooks run top to bottom offline (tiny protocol-trained model, scripted fakes)."""

from __future__ import annotations

import os
import pathlib
import sys
import time

import pytest

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["01_quickstart.ipynb", "02_multi_hop.ipynb", "03_compose.ipynb", "04_stepping.ipynb"]
TIME_LIMIT_S = 120  # per notebook; each takes well under a minute once the tiny model is cached


def test_notebooks_are_stored_without_outputs() -> None:
    import nbformat

    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_offline(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("ZOOM_REFINE_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the kernel is this interpreter (the venv's), whatever kernelspecs the machine has
    monkeypatch.setenv(
        "PATH", f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=TIME_LIMIT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    started = time.monotonic()
    client.execute()
    elapsed = time.monotonic() - started
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert errors == []
    assert elapsed < TIME_LIMIT_S
    text = "\n".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "offline: True" in text
    pictures = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert pictures  # the overview, the plot, the crop
    expected = {
        "01_quickstart.ipynb": "answer: A | first look: B",
        "02_multi_hop.ipynb": "max_hops",
        "03_compose.ipynb": "ToolMessage ['text', 'text']",
        "04_stepping.ipynb": "next: ('crop',)",
    }[name]
    assert expected in text
