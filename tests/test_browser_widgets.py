"""diffnb's widgets in a real JupyterLab in Debian chromium: SamplerPreview shows the prior, streams, draws, acknowledges, stops,
reports errors and grid fits in its status line, compares two samplers on one scale and exports a GIF; a TrajectoryExplorer
slider and its log-t box redraw its figure; a saved notebook reopened after its kernel is shut down shows the widgets' last
frame and figure, and so does the notebook exported to HTML, offline.

Skipped with a one-line reason when no browser is found, unless DIFFNB_REQUIRE_BROWSER=1. Screenshots go to build/artifacts/.
"""
import base64, json, re
from pathlib import Path
import pytest
from browser import Lab, write_notebook, open_notebook, wait_idle, KernelProbe, save_notebook, shutdown_kernels

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / 'build' / 'artifacts'

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
SP = "document.querySelector('.diffnb-sp')"

@pytest.fixture(scope='module')
def lab_page(page, tmp_path_factory):
    root = tmp_path_factory.mktemp('wlab')
    write_notebook(root / 'widgets.ipynb', [SETUP, TRAJ])
    with Lab(root, settings={'@jupyter-widgets/jupyterlab-manager:plugin': {'saveState': True}}) as lab:   # checked both ways below
        open_notebook(page, lab.url, lab.token, 'widgets.ipynb')
        page.wait_for_selector('.diffnb-sp .diffnb-sp-run', timeout=120_000)
        page.wait_for_function("document.querySelectorAll('.jp-OutputArea .js-plotly-plot .main-svg').length >= 1", timeout=120_000)
        wait_idle(page)
        probe = KernelProbe(lab.url, lab.token)
        yield page, probe, lab
        probe.close()

def _ds(page, key): return page.evaluate(f"{SP}.dataset.{key} || ''")
def _status(page): return page.inner_text('.diffnb-sp-status')
def _dark(page, k=0):
    "Non-white pixels of the k-th canvas of the preview."
    return page.evaluate(f"""() => {{ const c = document.querySelectorAll('.diffnb-sp-panel canvas')[{k}]; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 200) n++; return n; }}""")
def _visible_outputs(page):
    "For each output of the notebook: (shown, mime type of its renderer, start of its text)."
    return page.evaluate("""() => [...document.querySelectorAll('.jp-OutputArea-child')].map(c => { const o = c.querySelector('.jp-OutputArea-output');
        return [getComputedStyle(c).display !== 'none', o.dataset.mimeType || (o.classList.contains('jp-RenderedPlotly') ? 'plotly' : 'widget'), c.innerText.slice(0, 60)]; })""")

def test_sampler_preview_prior_view_tooltips_and_static_copy_hidden(lab_page):
    "Before the first run: the prior draw on axes, 'ready', a tooltip on every control; the static copy stays hidden beside the live view."
    page, probe, _ = lab_page
    page.locator('.diffnb-sp').screenshot(path=str(ARTIFACTS / 'widget_preview_before.png'))
    assert _status(page).startswith('ready') and _dark(page, 0) > 500 and _dark(page, 1) < 2000   # x_T drawn, x0-hat empty (axes only)
    untitled = page.evaluate(f"""() => [...{SP}.querySelectorAll('.diffnb-sp-controls input, .diffnb-sp-controls select, .diffnb-sp-controls button')]
        .filter(e => !e.title || e.title.length < 10).map(e => e.dataset.trait || e.textContent)""")
    assert untitled == [], untitled
    assert page.is_disabled('.diffnb-sp-gif') and not page.is_disabled('.diffnb-sp-run')
    shown = _visible_outputs(page)
    assert [s for s, *_ in shown] == [True, False, False, True, False, False], shown   # widget, marker, copy; widget, marker, copy

def test_sampler_preview_streams_draws_and_acknowledges(lab_page):
    page, probe, _ = lab_page
    canvas = page.locator('.diffnb-sp-panel canvas').first
    page.click('.diffnb-sp-run')
    page.wait_for_function(f"(+{SP}.dataset.frames || 0) >= 3", timeout=60_000)
    assert page.is_disabled('.diffnb-sp-run') and _status(page).startswith('running')
    early = canvas.screenshot(path=str(ARTIFACTS / 'widget_preview_early.png'))
    page.wait_for_function(f"{SP}.dataset.final === '1' && !{SP}.querySelector('.diffnb-sp-run').disabled", timeout=120_000)
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
    assert re.fullmatch(r'done in \d+\.\d\d s', _status(page)), _status(page)
    assert page.inner_text('.diffnb-sp-head').startswith('euler: step 40/40 · NFE 40 · ')
    assert _dark(page) > 500 and not page.is_disabled('.diffnb-sp-gif')

def test_gif_export_button_writes_one_frame_per_frame_sent(lab_page):
    from PIL import Image
    page, probe, lab = lab_page
    page.click('.diffnb-sp-gif')
    page.wait_for_function(f"{SP}.dataset.status.startsWith('wrote')", timeout=60_000)
    frames = probe("", "pv.last_run['frames']")
    assert _status(page) == f'wrote euler-preview.gif ({frames} frames)', _status(page)
    with Image.open(lab.root / 'euler-preview.gif') as g:
        assert g.n_frames == frames
        g.seek(g.n_frames - 1); g.convert('RGB').save(ARTIFACTS / 'widget_preview_gif_last_frame.png')

def test_sampler_preview_stop(lab_page):
    page, probe, _ = lab_page
    probe("pv.steps = 400", "pv.steps")
    page.click('.diffnb-sp-run')
    page.wait_for_function(f"{SP}.dataset.status === 'running' && (+{SP}.dataset.frames) >= 3", timeout=60_000)
    page.click('.diffnb-sp-stop')
    page.wait_for_function(f"{SP}.dataset.final === '1' && {SP}.dataset.status === 'stopped'", timeout=60_000)
    k = probe("pv.join()", "dict(pv.last_run, status=pv.status)")
    assert k['stopped'] and k['status'] == 'stopped' and k['steps'] < 400, k
    page.locator('.diffnb-sp').screenshot(path=str(ARTIFACTS / 'widget_preview_stopped.png'))

def test_status_line_shows_an_error(lab_page):
    "steps=0 typed into the widget: Run says why in the status line, in red, and Run comes back."
    page, probe, _ = lab_page
    steps = page.locator('.diffnb-sp input[data-trait=steps]').first
    steps.fill('0'); steps.dispatch_event('change')
    for _ in range(100):                                          # until the new value has reached the kernel
        if probe("", "pv.steps") == 0: break
        page.wait_for_timeout(100)
    page.click('.diffnb-sp-run')
    page.wait_for_function(f"{SP}.dataset.status.startsWith('error')", timeout=30_000)
    assert _status(page) == 'error: ValueError: steps=0: must be an integer >= 1', _status(page)
    assert page.evaluate("getComputedStyle(document.querySelector('.diffnb-sp-status')).color") == 'rgb(176, 48, 48)'
    page.wait_for_function(f"!{SP}.querySelector('.diffnb-sp-run').disabled", timeout=10_000)
    page.locator('.diffnb-sp').screenshot(path=str(ARTIFACTS / 'widget_preview_error.png'))

def test_status_line_shows_a_grid_fit(lab_page):
    "A fitted grid takes seconds: the status line says 'fitting' meanwhile, Run is disabled, and the run follows."
    page, probe, _ = lab_page
    probe("pv.steps = 6; pv.grid_kind = 'fitted'; pv.fit_kw = dict(pilot=64, max_evals=6)", "pv.grid_kind")
    page.click('.diffnb-sp-run')
    page.wait_for_function(f"{SP}.dataset.status.startsWith('fitting')", timeout=30_000, polling=50)
    assert _status(page).startswith('fitting a 6-step grid for euler (dn.fit_grid)') and page.is_disabled('.diffnb-sp-run')
    page.locator('.diffnb-sp').screenshot(path=str(ARTIFACTS / 'widget_preview_fitting.png'))
    page.wait_for_function(f"{SP}.dataset.status === 'done' && {SP}.dataset.final === '1'", timeout=120_000)
    k = probe("pv.join()", "dict(grids=[list(k) for k in pv.grids], steps=pv.last_run['steps'])")
    assert k == dict(grids=[['euler', 6]], steps=6), k

def test_compare_mode_shares_one_scale(lab_page):
    "Two samplers from the same x_T: each row says its sampler's step and NFE; the x_t panels share a scale, and the x0-hat panels."
    page, probe, _ = lab_page
    probe("pv.grid_kind = 'auto'; pv.steps = 3; pv.compare = True; pv.method2 = 'heun'; pv.steps2 = 6", "pv.compare")
    page.click('.diffnb-sp-run')
    page.wait_for_function(f"{SP}.dataset.status === 'done' && {SP}.querySelectorAll('canvas').length === 4", timeout=120_000)
    page.wait_for_timeout(300)
    lims = page.evaluate(f"[...{SP}.querySelectorAll('canvas')].map(c => +c.dataset.lim)")
    assert lims[0] == lims[2] and lims[1] == lims[3] and min(lims) > 0, lims
    kernel = probe("pv.join()", "[p['lim'] for p in pv.frame['msg']['panels']]")
    assert [round(v, 9) for v in lims] == [round(v, 9) for v in kernel], (lims, kernel)
    heads = page.locator('.diffnb-sp-head').all_inner_texts()
    assert heads[0].startswith('euler: step 3/3 · NFE 3 · ') and re.match(r'heun: step 6/6 · NFE 1[12] · ', heads[1]), heads
    page.locator('.diffnb-sp').screenshot(path=str(ARTIFACTS / 'widget_preview_compare.png'))

def test_trajectory_explorer_slider_and_log_t(lab_page):
    page, probe, _ = lab_page
    plot = page.locator('.widget-vbox .js-plotly-plot').last   # the explorer's live figure, not its (hidden) static copy
    plot.scroll_into_view_if_needed()
    before = plot.locator('.scatterlayer').inner_html()
    page.locator('.jp-OutputArea').last.screenshot(path=str(ARTIFACTS / 'widget_trajectory_before.png'))
    assert page.evaluate("getComputedStyle(document.querySelector('.widget-vbox .legend .bg')).fill") == 'rgb(59, 59, 79)'   # white ODE line visible
    assert plot.locator('.colorbar').count() == 1
    handle = page.locator('.widget-slider .noUi-handle, .widget-slider .slider-handle, .widget-slider [role=slider]').first
    handle.click()
    for _ in range(4): page.keyboard.press('ArrowRight')
    page.wait_for_function("(b) => { const p = document.querySelector('.widget-vbox .js-plotly-plot'); return p && p.querySelector('.scatterlayer').innerHTML !== b; }",
                           arg=before, timeout=60_000)
    for _ in range(100):   # plotly's FigureWidget applies an edit in Python once the browser acknowledges the one before: poll
        k = probe("", "dict(n=te.w_n.value, x=len(te.fig.data[2].x))")
        if k['x'] == k['n'] * 102: break
        page.wait_for_timeout(200)
    assert k['n'] > 6 and k['x'] == k['n'] * 102, k
    page.get_by_label('log t').check()
    page.wait_for_function("() => document.querySelector('.widget-vbox .js-plotly-plot .xtitle').textContent === 't (log scale)'", timeout=60_000)
    page.wait_for_timeout(500)
    page.locator('.jp-OutputArea').last.screenshot(path=str(ARTIFACTS / 'widget_trajectory_log_t.png'))
    assert probe("", "te.fig.layout.xaxis.type") == 'log'

def test_saved_notebook_reopens_with_the_last_frame(lab_page, tmp_path):
    """Save, shut the kernel down, reopen. With JupyterLab's widget state saving on, the preview itself comes back from the saved
    state and draws its last frame; with it off (the default), its static copy shows instead of 'model not found'. Offline as HTML too."""
    page, probe, lab = lab_page
    wait_idle(page); page.wait_for_timeout(1000)                  # the explorer's copy refreshes half a second after its last change
    expected = probe("", "pv.static_bundle()['image/png']")
    save_notebook(page)
    path = lab.root / 'widgets.ipynb'
    nb = json.loads(path.read_text())
    outs = nb['cells'][0]['outputs']
    assert [sorted(o['data']) for o in outs] == [['application/vnd.jupyter.widget-view+json', 'text/plain'], ['text/html', 'text/plain'], ['image/png', 'text/plain']]
    assert ''.join(outs[2]['data']['image/png']).strip() == expected   # the copy was refreshed when the last run ended
    assert 'log' in json.dumps(nb['cells'][1]['outputs'][2]['data']['application/vnd.plotly.v1+json']['layout']['xaxis'])
    state = nb['metadata']['widgets']['application/vnd.jupyter.widget-state+json']['state']
    kept = state[outs[0]['data']['application/vnd.jupyter.widget-view+json']['model_id']]
    assert 'diffnbSamplerRender' in kept['state']['_esm'] and [b['path'] for b in kept['buffers']] == [['frame', 'buffers', k] for k in range(4)]
    assert shutdown_kernels(lab.url, lab.token) == 1              # the kernel that ran the widgets
    def reopen(name, wait_for, no_kernel):
        shutdown_kernels(lab.url, lab.token)
        page.goto('about:blank')
        page.goto(f'{lab.url}/lab/tree/widgets.ipynb?reset&token={lab.token}')   # no waiting for a kernel: none is needed
        page.wait_for_function(wait_for, timeout=60_000)
        if no_kernel: shutdown_kernels(lab.url, lab.token)        # the kernel the reopened notebook started knows no widget anyway
        page.wait_for_timeout(1000)
        page.locator('.jp-Notebook').screenshot(path=str(ARTIFACTS / name))
        return _visible_outputs(page)
    # 1. widget state saved with the notebook: the live view, drawn from the kept frame, with no kernel behind it
    shown = reopen('widget_reopened_with_widget_state.png', "document.querySelectorAll('.diffnb-sp canvas').length === 4", True)
    assert [s for s, *_ in shown[:3]] == [True, False, False], shown
    assert re.fullmatch(r'done in \d+\.\d\d s', _status(page)) and _dark(page, 0) > 500 and len(page.locator('.diffnb-sp canvas').all()) == 4
    # 2. JupyterLab's default: no widget state in the file. The static copies show, and no 'model not found'
    import nbformat
    from nbformat.sign import NotebookNotary
    del nb['metadata']['widgets']
    path.write_text(json.dumps(nb))
    NotebookNotary().sign(nbformat.read(path, 4))                 # still the user's own notebook (trusted), as JupyterLab would have saved it
    shown = reopen('widget_reopened_notebook.png', "[...document.querySelectorAll('.jp-OutputArea-output')].filter(o => o.textContent.includes('model not found')).length === 2", False)
    assert [m for s, m, _ in shown if s] == ['image/png', 'plotly'], shown
    assert [s for s, _, t in shown if 'Error displaying widget' in t] == [False, False], shown   # JupyterLab's error, there but hidden
    img = page.locator('.jp-OutputArea-output[data-mime-type="image/png"] img').first
    assert page.evaluate("(i) => i.naturalWidth", img.element_handle()) == 2 * 260 + 20
    # 3. the same saved notebook as a static HTML page (nbconvert's lab template, as nbviewer and mkdocs-jupyter make), with no network
    from nbconvert import HTMLExporter
    html, _ = HTMLExporter(template_name='lab').from_notebook_node(nbformat.reads(json.dumps(nb), 4))
    (tmp_path / 'saved.html').write_text(html)
    page.route(re.compile(r'^(?!file:).*'), lambda r: r.abort())
    try:
        page.goto((tmp_path / 'saved.html').as_uri())
        page.wait_for_timeout(500)
        shown = _visible_outputs(page)
        assert [s for s, *_ in shown] == [False, False, True, False, False, True], shown   # the copies only (a plotly copy shows its text here)
        img = page.locator('.jp-OutputArea-output img').first
        assert img.is_visible() and page.evaluate("(i) => i.complete && i.naturalWidth", img.element_handle()) == 2 * 260 + 20
        assert base64.b64decode(expected)[:8] == b'\x89PNG\r\n\x1a\n'
        page.screenshot(path=str(ARTIFACTS / 'widget_saved_as_html_offline.png'), full_page=True)
    finally: page.unroute(re.compile(r'^(?!file:).*'))
