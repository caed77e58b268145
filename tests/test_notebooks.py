"""Every notebook in nbs/, tutorials included, executed once by papermill with its small CPU parameters.

conftest.py starts the selected notebooks in the background when collection ends; each test here waits for its own notebook's run.
"""
import json
import pytest
from conftest import NOTEBOOK_TIMES, NOTEBOOK_RUNS, run_notebook
from nbrun import NBS, notebooks, kernel_available, KERNEL

NOTEBOOKS = notebooks()

def test_kernel_installed():
    assert kernel_available(), f"no Jupyter kernel '{KERNEL}': run `make install` (it installs one into the venv with --sys-prefix)"

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[str(p.relative_to(NBS)) for p in NOTEBOOKS])
def test_notebook(nb):
    if not kernel_available(): pytest.fail(f"no Jupyter kernel '{KERNEL}': run `make install`", pytrace=False)
    secs, out, failure = NOTEBOOK_RUNS[nb].result() if nb in NOTEBOOK_RUNS else run_notebook(nb)
    NOTEBOOK_TIMES[str(nb.relative_to(NBS))] = (secs, failure is None)
    if failure: pytest.fail(failure, pytrace=False)
    shown = [o.get('data', {}).get('text/plain', '') for c in json.loads(out.read_text())['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]
    bundles = [t for t in shown if ''.join(t).lstrip().startswith("{'application/vnd.plotly")]
    assert not bundles, f"{nb.name}: {len(bundles)} cell(s) display a figure bundle's dict instead of the figure (end the cell on dn.FigureDisplay(fig))"
