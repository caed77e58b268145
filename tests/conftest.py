"""Test session setup: the notebooks run in the background, JOBS at a time, while the other tests run in this process.

Every process gets one torch thread while the notebooks run beside the tests (two kernels and this process on two cores would
otherwise oversubscribe them, 5-20x slower); DIFFNB_NB_JOBS sets how many notebooks run at once (default: 2, 0 runs them in turn
inside their tests instead). Their kernels are forked from one process that imported torch and the other libraries they share once
(tools/kernelfork.py: about 3 s of CPU less per notebook, 5 s for one that trains); DIFFNB_FORK_KERNELS=0 starts each kernel afresh instead.
"""
import os, sys, time, threading
import pytest
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))

JOBS = max(0, int(os.environ.get('DIFFNB_NB_JOBS', min(2, os.cpu_count() or 1))))
if JOBS: os.environ.setdefault('OMP_NUM_THREADS', '1')   # before torch is imported here or in any kernel and subprocess
LONGEST = ('tutorials/inflationary_flows', 'tutorials/constructed_odes', '04_samplers', '10_constructions', 'tutorials/train_images',
           '06_train', 'tutorials/ode_vs_sde', '09_inflationary', '07_distributed', '12_cli', '08_flows', 'tutorials/reverse_variance',
           'index', 'tutorials/guidance', 'tutorials/unified_diffusion', '11_widgets', 'tutorials/pfode_latents', 'tutorials/ddpm_to_ode',
           '03_metrics', '00_paths', 'tutorials/samplers_compared', '05_nets')   # longest first (as measured), so the workers finish together
NOTEBOOK_TIMES = {}    # notebook -> (seconds, passed), for the summary
NOTEBOOK_RUNS = {}     # notebook path -> Future of (seconds, executed copy or None, failure or None)
DOCS = {}              # 'pool': the process that turns each executed notebook into its docs page (tools/docs.py stage_page), 'pages': its futures
FORK = {}              # the kernel fork server: 'proc', and 'kernel' (its kernelspec's name) once it serves
FORK_READY = threading.Event()

@pytest.fixture(scope='module')
def browser():
    "A headless Debian chromium for the module (skipped without one, failed under DIFFNB_REQUIRE_BROWSER=1); screenshots go to build/artifacts/."
    from browser import browser_or_skip, launch
    browser_or_skip()
    from playwright.sync_api import sync_playwright
    (Path(__file__).resolve().parents[1] / 'build' / 'artifacts').mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()

@pytest.fixture(scope='module')
def page(browser): return browser.new_page(viewport={'width': 1280, 'height': 900})

def start_fork_server():
    "Start tools/kernelfork.py's server in the background; FORK_READY is set when it serves (FORK['kernel']) or has failed."
    import subprocess, tempfile, kernelfork
    folder = tempfile.mkdtemp(prefix='diffnb-kernels-')    # short: a socket's path has at most 107 characters
    sock = os.path.join(folder, 'fork.sock')
    os.environ['JUPYTER_PATH'] = os.pathsep.join(filter(None, [folder, os.environ.get('JUPYTER_PATH')]))
    name = kernelfork.kernelspec(folder, sock)
    FORK['folder'] = folder
    FORK['proc'] = proc = subprocess.Popen([sys.executable, kernelfork.__file__, 'serve', sock], stdout=subprocess.PIPE, text=True)
    def wait_ready():
        if proc.stdout.readline().strip() == 'ready': FORK['kernel'] = name
        FORK_READY.set()
    threading.Thread(target=wait_ready, daemon=True).start()

def run_notebook(nb) -> tuple:
    "(seconds, executed copy or None, failure message or None) of one notebook, in a forked kernel when the server serves."
    from nbrun import execute, NotebookFailed
    if FORK: FORK_READY.wait(120)
    t0 = time.time()
    try: out, failure = execute(nb, kernel=FORK.get('kernel')), None
    except NotebookFailed as e: out, failure = None, str(e)
    if out is not None and DOCS:
        import docs
        try: DOCS['pages'].append(DOCS['pool'].submit(docs.stage_page, out))
        except RuntimeError: pass   # the session is ending (its pool shut down): the docs build makes the page if it runs
    return time.time() - t0, out, failure

@pytest.fixture(scope='session')
def staged_pages():
    "Wait until the docs pages of the notebooks run in the background are made (a failed one is made again by the docs build)."
    for f in DOCS.get('pages', []):
        try: f.result()
        except Exception: pass
    if DOCS: DOCS['pool'].shutdown()

def _rank(item) -> int:
    """Tests of this process first, then the browser tests (both beside the notebooks: the browser's waits for JupyterLab and its kernels
    cost little CPU), then the notebooks' results, then the docs (built from the executed notebooks)."""
    return 1 if 'test_browser' in item.nodeid else 2 if 'test_notebooks' in item.nodeid else 3 if 'test_docs' in item.nodeid else 0

def pytest_collection_modifyitems(session, config, items):
    items.sort(key=_rank)

def pytest_collection_finish(session):
    "Start the selected notebooks in the background, longest first."
    from nbrun import NBS, kernel_available
    wanted = [it.callspec.params['nb'] for it in session.items if getattr(it, 'originalname', '') == 'test_notebook']
    if not JOBS or not wanted or not kernel_available(): return
    if os.environ.get('DIFFNB_FORK_KERNELS', '1') != '0' and 'DIFFNB_KERNEL' not in os.environ: start_fork_server()
    if any('test_docs' in it.nodeid for it in session.items) and not os.environ.get('DIFFNB_DOCS_SITE'):   # each page made as its notebook ends
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        DOCS.update(pool=ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn')), pages=[])
    key = lambda p: next((i for i, s in enumerate(LONGEST) if p.relative_to(NBS).with_suffix('').as_posix() == s), len(LONGEST))
    pool = ThreadPoolExecutor(JOBS, thread_name_prefix='notebook')
    NOTEBOOK_RUNS.update({nb: pool.submit(run_notebook, nb) for nb in sorted(wanted, key=key)})
    pool.shutdown(wait=False)

def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not NOTEBOOK_TIMES: return
    from nbrun import EXECUTED
    tr = terminalreporter
    tr.section('notebook run times')
    tr.write_line(f"executed copies: {EXECUTED}; {JOBS or 1} at a time, beside the other tests")
    tr.write_line(f"{'notebook':<40} {'seconds':>8}  result")
    for name, (secs, ok) in NOTEBOOK_TIMES.items(): tr.write_line(f"{name:<40} {secs:8.1f}  {'ok' if ok else 'FAILED'}")
    tr.write_line(f"{'total':<40} {sum(s for s, _ in NOTEBOOK_TIMES.values()):8.1f}")

def pytest_sessionfinish(session, exitstatus):
    "A session that stops early (-x, Ctrl-C) does not start the notebooks still waiting."
    for f in NOTEBOOK_RUNS.values(): f.cancel()
    if FORK:
        import shutil
        FORK['proc'].terminate(); shutil.rmtree(FORK['folder'], ignore_errors=True)
    if DOCS: DOCS['pool'].shutdown(cancel_futures=True)
