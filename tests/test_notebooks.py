"""Every notebook in nbs/, tutorials included, executed once by papermill with its small CPU parameters.

The notebooks are independent, so the selected ones run JOBS at a time (DIFFNB_NB_JOBS, default: up to 2, one per core), each kernel with
one torch thread so that two kernels do not oversubscribe two cores; each test then checks its own notebook's run.
"""
import json, os, time
from concurrent.futures import ThreadPoolExecutor
import pytest
from conftest import NOTEBOOK_TIMES
from nbrun import NBS, notebooks, execute, kernel_available, NotebookFailed, KERNEL

NOTEBOOKS = notebooks()
JOBS = max(1, int(os.environ.get('DIFFNB_NB_JOBS', min(2, os.cpu_count() or 1))))
LONGEST = ('04_samplers', '06_train', 'tutorials/inflationary_flows', 'tutorials/constructed_odes', '10_constructions')   # started first

def _run(nb):
    "(seconds, executed copy or None, failure message or None) of one notebook."
    t0 = time.time()
    try: out, failure = execute(nb), None
    except NotebookFailed as e: out, failure = None, str(e)
    return time.time() - t0, out, failure

@pytest.fixture(scope='session')
def runs(request) -> dict:
    "Every selected notebook executed, JOBS at a time, longest first: notebook -> (seconds, executed copy, failure)."
    wanted = [it.callspec.params['nb'] for it in request.session.items if getattr(it, 'originalname', '') == 'test_notebook']
    wanted.sort(key=lambda p: next((i for i, s in enumerate(LONGEST) if p.relative_to(NBS).with_suffix('').as_posix() == s), len(LONGEST)))
    if not kernel_available(): return {}
    saved = os.environ.get('OMP_NUM_THREADS')
    if JOBS > 1: os.environ['OMP_NUM_THREADS'] = '1'     # read by each kernel's torch at import
    try:
        with ThreadPoolExecutor(JOBS) as pool: return dict(zip(wanted, pool.map(_run, wanted)))
    finally:
        if JOBS > 1 and saved is None: del os.environ['OMP_NUM_THREADS']
        elif JOBS > 1: os.environ['OMP_NUM_THREADS'] = saved

def test_kernel_installed():
    assert kernel_available(), f"no Jupyter kernel '{KERNEL}': run `make install` (it installs one into the venv with --sys-prefix)"

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[str(p.relative_to(NBS)) for p in NOTEBOOKS])
def test_notebook(nb, runs):
    if not kernel_available(): pytest.fail(f"no Jupyter kernel '{KERNEL}': run `make install`", pytrace=False)
    secs, out, failure = runs[nb]
    NOTEBOOK_TIMES[str(nb.relative_to(NBS))] = (secs, failure is None)
    if failure: pytest.fail(failure, pytrace=False)
    shown = [o.get('data', {}).get('text/plain', '') for c in json.loads(out.read_text())['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]
    bundles = [t for t in shown if ''.join(t).lstrip().startswith("{'application/vnd.plotly")]
    assert not bundles, f"{nb.name}: {len(bundles)} cell(s) display a figure bundle's dict instead of the figure (end the cell on dn.FigureDisplay(fig))"
