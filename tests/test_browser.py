"""Real components in a real browser: JupyterLab showing diffnb's rich displays, in Debian chromium (the docs site: tests/test_docs.py).

Skipped with a one-line reason when no browser is found, unless DIFFNB_REQUIRE_BROWSER=1 (as in CI), where that is a failure.
Screenshots are kept in build/artifacts/: look at them.
"""
from pathlib import Path
import pytest
from browser import Lab, browser_or_skip, open_notebook, write_notebook

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / 'build' / 'artifacts'

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 with a token, serving a temporary folder; yields (url, token, folder)."
    browser_or_skip()
    root = tmp_path_factory.mktemp('lab')
    with Lab(root) as server: yield server.url, server.token, root

def test_jupyterlab_renders_rich_displays(page, lab):
    "A Path and a GaussianMixture display themselves as plotly figures in a real JupyterLab."
    url, token, root = lab
    write_notebook(root / 'displays.ipynb', ["import diffnb as dn\ndn.get_path('vp')", "dn.ring_mixture()"])
    open_notebook(page, url, token, 'displays.ipynb')
    page.wait_for_function("document.querySelectorAll('.jp-OutputArea .js-plotly-plot .main-svg').length >= 2", timeout=90_000)
    page.wait_for_timeout(500)
    out = page.locator('.jp-OutputArea-output').first
    out.screenshot(path=str(ARTIFACTS / 'lab_path_display.png'))
    lines = page.locator('.jp-OutputArea .js-plotly-plot').first.locator('path.js-line').count()
    assert lines >= 3, f"the Path figure draws {lines} lines, expected alpha, sigma and log-SNR"
    heat = page.locator('.jp-OutputArea .js-plotly-plot').nth(1).locator('.hm, image').count()
    assert heat >= 1, "the GaussianMixture figure has no heat map"
    page.screenshot(path=str(ARTIFACTS / 'lab_displays.png'))
