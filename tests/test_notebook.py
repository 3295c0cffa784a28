"""examples/quickstart.ipynb executes top to bottom in under a minute (issue 29: fit -> smooth ->
forecast -> plots through the Python API on a simulated recording), in a kernel of this venv's python."""

from __future__ import annotations

import os
import sys
import time

import pytest

from conftest import ROOT

NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
LIMIT_S = 60


def test_the_example_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and not any(c.outputs or c.execution_count for c in code), "clear the notebook's outputs"


def test_the_example_notebook_runs_in_under_a_minute(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    # jupyter_client starts a spec whose argv[0] is 'python' with this interpreter (sys.executable)
    assert spec.argv[0] in ("python", "python3", sys.executable), f"the python3 kernel runs {spec.argv[0]}"
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend (headless) renders the figures
    monkeypatch.setenv("XFADS_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=120,
                                     resources={"metadata": {"path": str(tmp_path)}})
    started = time.monotonic()
    client.execute()
    elapsed = time.monotonic() - started
    print(f"examples/quickstart.ipynb: {elapsed:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "the training curve, the smoothed rates and the forecast are plotted"
    assert elapsed < LIMIT_S, f"the notebook took {elapsed:.0f} s (limit {LIMIT_S} s)"
    assert not list(tmp_path.iterdir()), "the notebook writes only to its own temporary folder"
