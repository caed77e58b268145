"""Real components in a real browser: JupyterLab showing diffnb's rich displays, in Debian chromium (the docs site: tests/test_docs.py).

Skipped with a one-line reason when no browser is found, unless DIFFNB_REQUIRE_BROWSER=1 (as in CI), where that is a failure.
Screenshots are kept in build/artifacts/: look at them.
"""
import json, os, secrets, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from browser import browser_or_skip

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / 'build' / 'artifacts'

def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 with a token, serving a temporary folder; yields (url, folder)."
    browser_or_skip()
    root = tmp_path_factory.mktemp('lab')
    port, token = _free_port(), secrets.token_hex(16)
    log = open(root / 'lab.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyter', 'lab', '--no-browser', '--allow-root', '--expose-app-in-browser',
                             f'--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}', f'--IdentityProvider.token={token}',
                             f'--ServerApp.root_dir={root}', '--LabApp.news_url=', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    for _ in range(120):
        try:
            urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2); break
        except Exception: time.sleep(0.5)
    else:
        proc.kill(); pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}", pytrace=False)
    yield url, token, root
    proc.terminate()
    try: proc.wait(10)
    except subprocess.TimeoutExpired: proc.kill()

def _notebook(path:Path, sources:list):
    cells = [{'cell_type': 'code', 'execution_count': None, 'id': f'c{i}', 'metadata': {}, 'outputs': [], 'source': s} for i, s in enumerate(sources)]
    path.write_text(json.dumps({'cells': cells, 'metadata': {'kernelspec': {'name': 'diffnb', 'display_name': 'Python (diffnb)', 'language': 'python'}},
                                'nbformat': 4, 'nbformat_minor': 5}))

KERNEL_IDLE = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && k.connectionStatus === 'connected'; }"""

def _open_and_run(page, url, token, name):
    "Open a notebook in JupyterLab (?reset), accept the kernel dialog if one asks, wait for an idle kernel, run all cells."
    page.goto(f'{url}/lab/tree/{name}?reset&token={token}')
    page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=60_000)
    deadline = time.time() + 60
    while time.time() < deadline:
        accept = page.locator('.jp-Dialog .jp-mod-accept')
        if accept.count(): accept.first.click()
        if page.evaluate(KERNEL_IDLE): break
        page.wait_for_timeout(250)
    else: pytest.fail("the notebook's kernel never became idle", pytrace=False)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

def test_jupyterlab_renders_rich_displays(page, lab):
    "A Path and a GaussianMixture display themselves as plotly figures in a real JupyterLab."
    url, token, root = lab
    _notebook(root / 'displays.ipynb', ["import diffnb as dn\ndn.get_path('vp')", "dn.ring_mixture()"])
    _open_and_run(page, url, token, 'displays.ipynb')
    page.wait_for_function("document.querySelectorAll('.jp-OutputArea .js-plotly-plot .main-svg').length >= 2", timeout=90_000)
    page.wait_for_timeout(500)
    out = page.locator('.jp-OutputArea-output').first
    out.screenshot(path=str(ARTIFACTS / 'lab_path_display.png'))
    lines = page.locator('.jp-OutputArea .js-plotly-plot').first.locator('path.js-line').count()
    assert lines >= 3, f"the Path figure draws {lines} lines, expected alpha, sigma and log-SNR"
    heat = page.locator('.jp-OutputArea .js-plotly-plot').nth(1).locator('.hm, image').count()
    assert heat >= 1, "the GaussianMixture figure has no heat map"
    page.screenshot(path=str(ARTIFACTS / 'lab_displays.png'))
