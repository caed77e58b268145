"""diffnb's widgets in a real JupyterLab in Debian chromium: SamplerPreview streams, draws, acknowledges and stops;
a TrajectoryExplorer slider redraws its figure; the offline docs preview draws the widget snapshots.

Skipped with a one-line reason when no browser is found, unless DIFFNB_REQUIRE_BROWSER=1. Screenshots go to build/artifacts/.
"""
import sys, time
from pathlib import Path
import pytest
import test_browser as tb
from browser import Lab, write_notebook, open_notebook, wait_idle, KernelProbe

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / 'build' / 'artifacts'
page = tb.page   # the module's chromium page fixture

SETUP = """import time, torch, diffnb as dn
from diffnb.widgets import SamplerPreview, TrajectoryExplorer
gm = dn.ring_mixture(); base = gm.denoiser('vp')
def slow(x, t, y=None): time.sleep(0.05); return base.net(x, t)    # 50 ms a step: slower than 30 frames a second
den = dn.Denoiser(slow, 'vp', 'x0', data_scale=gm.rms_radius(), event_shape=(2,))
pv = SamplerPreview(den, n=10_000, method='euler', steps=40)
pv"""
TRAJ = """gm1 = dn.GaussianMixture(torch.tensor([[-2.], [1.5]]), torch.tensor([[[0.09]], [[0.25]]]), torch.tensor([0.4, 0.6]))
te = TrajectoryExplorer(gm1, 'vp', n_paths=6, steps=100, nx=80, nt=60)
te"""

@pytest.fixture(scope='module')
def lab_page(page, tmp_path_factory):
    root = tmp_path_factory.mktemp('wlab')
    write_notebook(root / 'widgets.ipynb', [SETUP, TRAJ])
    with Lab(root) as lab:
        open_notebook(page, lab.url, lab.token, 'widgets.ipynb')
        page.wait_for_selector('.diffnb-sp .diffnb-sp-run', timeout=120_000)
        page.wait_for_function("document.querySelectorAll('.jp-OutputArea .js-plotly-plot .main-svg').length >= 1", timeout=120_000)
        wait_idle(page)
        probe = KernelProbe(lab.url, lab.token)
        yield page, probe
        probe.close()

def _ds(page, key): return page.evaluate(f"document.querySelector('.diffnb-sp').dataset.{key} || ''")

def test_sampler_preview_streams_draws_and_acknowledges(lab_page):
    page, probe = lab_page
    canvas = page.locator('.diffnb-sp-panel canvas').first
    page.locator('.diffnb-sp').screenshot(path=str(ARTIFACTS / 'widget_preview_before.png'))
    page.click('.diffnb-sp-run')
    page.wait_for_function("(+document.querySelector('.diffnb-sp').dataset.frames || 0) >= 3", timeout=60_000)
    early = canvas.screenshot(path=str(ARTIFACTS / 'widget_preview_early.png'))
    page.wait_for_function("document.querySelector('.diffnb-sp').dataset.final === '1'", timeout=120_000)
    page.wait_for_timeout(300)
    late = canvas.screenshot(path=str(ARTIFACTS / 'widget_preview_final_canvas.png'))
    page.locator('.diffnb-sp').screenshot(path=str(ARTIFACTS / 'widget_preview_final.png'))
    assert early != late, "the x_t canvas did not change between two screenshots"
    k = probe("pv.join()", "dict(pv.last_run, acks=pv._acks, seq=pv._seq, acked_seq=pv._acked)")
    drawn = int(_ds(page, 'frames'))
    expected = min(40, 30 * k['elapsed'])
    assert k['frames'] >= expected and drawn >= expected, (k, drawn)   # every step goes (50 ms > 1/30 s), plus the final frame
    # every frame drawn and acknowledged (cumulatively: at most one acknowledgement message per ack_ms, the final one at once)
    assert k['acked'] == k['frames'] == drawn and k['acked_seq'] == k['seq'], (k, drawn)
    assert 1 <= k['acks'] <= min(k['frames'], 2 + 1000 * k['elapsed'] / 250), k
    assert _ds(page, 'status') == 'done' and not k['stopped']
    # the canvas drew points: many non-white pixels
    dark = page.evaluate("""() => { const c = document.querySelector('.diffnb-sp-panel canvas'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 200) n++; return n; }""")
    assert dark > 500, dark

def test_sampler_preview_stop(lab_page):
    page, probe = lab_page
    probe("pv.steps = 400", "pv.steps")
    page.click('.diffnb-sp-run')
    page.wait_for_function("document.querySelector('.diffnb-sp').dataset.status === 'running' && (+document.querySelector('.diffnb-sp').dataset.frames) >= 3", timeout=60_000)
    page.click('.diffnb-sp-stop')
    page.wait_for_function("document.querySelector('.diffnb-sp').dataset.final === '1' && document.querySelector('.diffnb-sp').dataset.status === 'stopped'", timeout=60_000)
    k = probe("pv.join()", "dict(pv.last_run, status=pv.status)")
    assert k['stopped'] and k['status'] == 'stopped' and k['steps'] < 400, k
    page.locator('.diffnb-sp').screenshot(path=str(ARTIFACTS / 'widget_preview_stopped.png'))

def test_trajectory_explorer_slider(lab_page):
    page, probe = lab_page
    plot = page.locator('.jp-OutputArea .js-plotly-plot').last
    plot.scroll_into_view_if_needed()
    before = plot.locator('.scatterlayer').inner_html()
    page.locator('.jp-OutputArea').last.screenshot(path=str(ARTIFACTS / 'widget_trajectory_before.png'))
    handle = page.locator('.widget-slider .noUi-handle, .widget-slider .slider-handle, .widget-slider [role=slider]').first
    handle.click()
    for _ in range(4): page.keyboard.press('ArrowRight')
    page.wait_for_function("(b) => { const p = [...document.querySelectorAll('.jp-OutputArea .js-plotly-plot')].pop(); return p && p.querySelector('.scatterlayer').innerHTML !== b; }",
                           arg=before, timeout=60_000)
    page.wait_for_timeout(500)
    page.locator('.jp-OutputArea').last.screenshot(path=str(ARTIFACTS / 'widget_trajectory_after.png'))
    k = probe("", "dict(n=te.w_n.value, x=len(te.fig.data[2].x))")
    assert k['n'] > 6 and k['x'] == k['n'] * 102, k

def test_docs_preview_draws_widget_snapshots(page, tmp_path):
    sys.path.insert(0, str(ROOT / 'tools'))
    from docs import build_preview
    from nbrun import NBS
    out = build_preview([NBS / 'index.ipynb', NBS / '11_widgets.ipynb'], out_dir=tmp_path / 'docs')
    assert (out / 'static' / 'sampler_preview.js').exists()
    page.goto((out / 'widgets.html').as_uri())
    page.wait_for_function("document.querySelectorAll('.diffnb-snapshot canvas').length >= 2", timeout=30_000)
    drawn = page.evaluate("""() => [...document.querySelectorAll('.diffnb-snapshot canvas')].map(c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 200) n++; return n; })""")
    assert all(n > 100 for n in drawn), drawn
    page.locator('.diffnb-snapshot').first.screenshot(path=str(ARTIFACTS / 'docs_widget_snapshot.png'))
    page.wait_for_function("document.querySelectorAll('.plotly-figure .main-svg').length >= 3", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / 'docs_widgets.png'), full_page=False)
