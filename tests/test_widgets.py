"""Kernel-less tests of the widgets: a recording comm stands in for the browser, an injected clock for time."""
import math, time
import numpy as np, pytest, torch
import diffnb as dn
from diffnb.data import density_map, image_grid
from PIL import Image
from diffnb.widgets import (SamplerPreview, TrajectoryExplorer, PathExplorer, TrainingMonitor, integrate_paths, paths_figure, points2d,
                            encode_panel, load_ipython_extension, view_limit, ticks, frame_image, draw_panel, path_times, robust_range, COLORS)
from diffnb.train import mismatches

class Clock:
    "A fake clock: advanced explicitly (here by the Denoiser, per call)."
    def __init__(self): self.t = 0.
    def __call__(self): return self.t

class Browser:
    "A recording comm: keeps every message, acknowledges frames (at once, every k-th cumulatively, or never) and can press Stop."
    comm_id = 'recording'
    def __init__(self, w, ack='now', stop_at=None):
        self.w, self.ack, self.stop_at, self.msgs = w, ack, stop_at, []
        w.comm = self
        w._on_msg(w, {'type': 'hello'}, [])
    def send(self, data=None, metadata=None, buffers=None):
        self.msgs.append((data, [bytes(b) for b in (buffers or [])]))
        if data.get('method') == 'custom' and data['content'].get('type') == 'frame':
            seq = data['content']['seq']
            if self.ack == 'now' or (isinstance(self.ack, int) and (seq % self.ack == 0 or data['content']['final'])):
                self.w._on_msg(self.w, {'type': 'ack', 'seq': seq}, [])   # an int k: one cumulative ack per k frames, as the browser does
            if self.stop_at is not None and len(self.frames) == self.stop_at: self.w._on_msg(self.w, {'type': 'stop'}, [])
    def close(self, *a, **k): pass
    def on_msg(self, *a, **k): pass
    @property
    def frames(self): return [(d['content'], b) for d, b in self.msgs if d.get('method') == 'custom' and d['content'].get('type') == 'frame']

def preview(den, clock, final_wait=None, **kw) -> SamplerPreview:
    "A SamplerPreview on the fake clock (and a shorter final wait), as a test sets them: they are not constructor arguments."
    w = SamplerPreview(den, **kw)
    w.clock = clock
    if final_wait is not None: w.final_wait = final_wait
    return w

def ring_den(clock=None, dt=0.01, sleep=0.):
    "The exact ring-mixture Denoiser; each call advances the fake clock by dt (and really sleeps `sleep`)."
    gm = dn.ring_mixture()
    den = gm.denoiser('vp')
    inner = den.net
    def net(x, t, y=None):
        if clock is not None: clock.t += dt
        if sleep: time.sleep(sleep)
        return inner(x, t)
    den.net = net
    return den

def prior(n, seed, d=2): return dn.get_path('vp').prior(n, (d,), generator=torch.Generator().manual_seed(seed))

def test_frames_throttled_ordered_sized_and_final():
    clock = Clock()
    den = ring_den(clock, dt=0.01)   # 10 ms a step: 30 frames a second allows every 4th step
    w = preview(den, clock, n=500, method='euler', steps=50)
    b = Browser(w)
    w.run(wait=True)
    fr = b.frames
    seqs = [c['seq'] for c, _ in fr]
    assert seqs == list(range(1, len(fr) + 1))
    assert [c['final'] for c, _ in fr] == [False] * (len(fr) - 1) + [True]
    gaps = [b_['elapsed'] - a['elapsed'] for (a, _), (b_, _) in zip(fr[:-2], fr[1:-1])]
    assert min(gaps) >= 1 / 30 - 1e-9, gaps
    total = fr[-1][0]['elapsed']
    assert len(fr) - 1 <= math.floor(total * 30) + 1 and len(fr) >= 10
    for c, bufs in fr:
        assert [p['label'].split()[0] for p in c['panels']] == ['x_t', 'x0-hat'] and [p['group'] for p in c['panels']] == [0, 0]
        assert [len(x) for x in bufs] == [500 * 2 * 4] * 2
    last, bufs = fr[-1]
    assert last['step'] == 50 and last['status'] == 'done' and last['nfe'] == 50
    ref = dn.sample(dn.ring_mixture().denoiser('vp'), prior(500, 0), 'euler', 50, generator=torch.Generator().manual_seed(1))
    got = torch.frombuffer(bytearray(bufs[0]), dtype=torch.float32).reshape(500, 2)
    assert torch.equal(got, ref) and torch.equal(w.result[0], ref)
    assert w.last_run['frames'] == len(fr) and w.last_run['bytes'] == sum(len(x) for _, bs in fr for x in bs)
    ups = [d for d, _ in b.msgs if d.get('method') == 'update']
    assert len(ups) <= 6, "step, t and NFE travel in frames, not as trait updates"

def test_unacknowledged_frames_hold_the_stream_and_the_final_frame_still_goes():
    clock = Clock()
    w = preview(ring_den(clock), clock, n=100, method='euler', steps=60, max_inflight=2, ack_timeout=1e9, final_wait=0.05)
    b = Browser(w, ack='never')
    w.run(wait=True)
    fr = b.frames
    assert len(fr) == 3 and fr[-1][0]['final'] and fr[-1][0]['step'] == 60
    assert w.last_run['held'] >= 45 and w.last_run['throttled'] > 0   # after two frames every step waits for acknowledgements

def test_cumulative_acknowledgements():
    clock = Clock()
    w = preview(ring_den(clock, dt=0.05), clock, n=100, method='euler', steps=60, max_inflight=4, ack_timeout=1e9, final_wait=0.05)
    b = Browser(w, ack=3)
    w.run(wait=True)
    r = w.last_run
    # one message per 3 frames acknowledges them all: the stream is never held, and every frame counts as acknowledged
    assert r['held'] == 0 and r['throttled'] == 0 and r['acked'] == r['frames'] == len(b.frames) == 61, r
    assert w._acks == 21 and w._acked == w._seq
    # max_inflight must exceed the frames between acknowledgements: with room for 2, a browser that acknowledges every 3rd
    # frame gets two frames, then every later step is held until the final frame goes (which it acknowledges)
    w2 = preview(ring_den(clock, dt=0.05), clock, n=100, method='euler', steps=60, max_inflight=2, ack_timeout=1e9, final_wait=0.05)
    b2 = Browser(w2, ack=3)
    w2.run(wait=True)
    r2 = w2.last_run
    assert [f[0]['seq'] for f in b2.frames] == [1, 2, 3] and b2.frames[-1][0]['final'], r2
    assert r2['held'] == 58 and r2['acked'] == r2['frames'] == 3, r2

def test_lost_acknowledgements_time_out():
    clock = Clock()
    w = preview(ring_den(clock), clock, n=100, method='euler', steps=60, max_inflight=2, ack_timeout=0.1, final_wait=0.05)
    b = Browser(w, ack='never')
    w.run(wait=True)
    # 0.6 s of fake time: a new frame only when the oldest unacknowledged one is given up on, well under 30 a second
    assert 4 <= len(b.frames) < 0.6 * 30 and w._lost >= 3 and w._lost >= len(b.frames) - 3

def test_stop_ends_the_stream():
    clock = Clock()
    w = preview(ring_den(clock), clock, n=200, method='euler', steps=100)
    b = Browser(w, stop_at=3)
    w.run(wait=True)
    fr = b.frames
    assert len(fr) == 4 and fr[-1][0]['final'] and fr[-1][0]['status'] == 'stopped'
    assert fr[-1][0]['step'] < 100 and w.last_run['stopped'] and w.status == 'stopped' and not w.running

def test_run_and_stop_messages_in_a_background_thread():
    w = SamplerPreview(ring_den(sleep=0.01), n=100, method='euler', steps=400)
    b = Browser(w)
    w._on_msg(w, {'type': 'run'}, [])
    assert w._thread is not None and w._thread.is_alive()
    time.sleep(0.3)
    w._on_msg(w, {'type': 'stop'}, [])
    w.join(10)
    assert not w._thread.is_alive() and w.last_run['stopped'] and w.last_run['steps'] < 400
    assert b.frames[-1][0]['final'] and b.frames[-1][0]['status'] == 'stopped'

def test_compare_mode_same_noise():
    w = SamplerPreview(ring_den(), n=300, method='euler', steps=12, compare=True, method2='heun', steps2=6)
    b = Browser(w)
    w.run(wait=True)
    c, bufs = b.frames[-1]
    assert len(c['panels']) == 4 and [p['group'] for p in c['panels']] == [0, 0, 1, 1] and len(bufs) == 4
    assert [r['method'] for r in c['runs']] == ['euler', 'heun'] and [r['step'] for r in c['runs']] == [12, 6]
    assert c['runs'][1]['text'].startswith('heun: step 6/6 · NFE ') and w.last_run['nfe'][0] == 12 and w.last_run['nfe'][1] in (11, 12)
    den = dn.ring_mixture().denoiser('vp')
    for m, s, x in (('euler', 12, w.result[0]), ('heun', 6, w.result[1])):
        ref = dn.sample(den, prior(300, 0), m, s, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(x, ref, atol=1e-6)

def test_noise_option_and_explicit_grid():
    w = SamplerPreview(ring_den(), n=200, method='sde', steps=20)
    assert w.noise_name == 'gamma' and w.noise == 1.
    w.method = 'ddim'
    assert w.noise_name == 'eta' and w.noise == 0.
    w.noise = 0.5
    g = dn.time_grid(dn.get_path('vp'), 7, 'log_snr')
    w.use_grid(g)
    b = Browser(w)
    w.run(wait=True)
    assert w.grid_kind == 'fitted' and b.frames[-1][0]['step'] == 7
    ref = dn.sample(dn.ring_mixture().denoiser('vp'), prior(200, 0), 'ddim', grid=g, eta=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(w.result[0], ref, atol=1e-6)

def test_fitted_grid_from_the_preview():
    w = SamplerPreview(ring_den(), n=64, method='dpmpp_2m', steps=4, grid_kind='fitted', fit_kw=dict(pilot=64, max_evals=8))
    w.run(wait=True)
    g = w.grids[('dpmpp_2m', 4)]
    assert len(g) == 5 and bool((g[1:] < g[:-1]).all())
    ref = dn.sample(dn.ring_mixture().denoiser('vp'), prior(64, 0), 'dpmpp_2m', grid=g)
    assert torch.allclose(w.result[0], ref, atol=1e-6)

def test_guidance_scale_for_a_conditional_net():
    torch.manual_seed(0)
    net = dn.MLP(2, hidden=16, depth=1, n_classes=3)
    den = dn.Denoiser(net, 'vp', 'eps', event_shape=(2,))
    w = SamplerPreview(den, n=50, method='euler', steps=5, label=2, scale=3.)
    assert w.conditional
    w.run(wait=True)
    ref = dn.sample(den, prior(50, 0), 'euler', 5, y=torch.full((50,), 2), scale=3.)
    assert torch.allclose(w.result[0], ref, atol=1e-5)
    assert not SamplerPreview(ring_den()).conditional

def test_images():
    x, _ = dn.digits()
    w = SamplerPreview(dn.EmpiricalOracle(x[:200]).denoiser('vp'), n=16, method='ddim', steps=5)
    b = Browser(w)
    w.run(wait=True)
    c, bufs = b.frames[-1]
    assert c['panels'][0]['kind'] == 'image' and (c['panels'][0]['h'], c['panels'][0]['w']) == (37, 37) and len(bufs[0]) == 37 * 37 * 4
    g = image_grid(-torch.ones(4, 1, 2, 2))
    assert g.shape == (7, 7, 3) and g[1, 1, 0] == 0 and g[0, 0, 0] == 255
    w9 = SamplerPreview(dn.EmpiricalOracle(x[:200]).denoiser('vp'), n=16, method='ddim', steps=5, images=9)
    b9 = Browser(w9); w9.run(wait=True)
    c9, bufs9 = b9.frames[-1]
    assert (c9['panels'][0]['h'], c9['panels'][0]['w']) == (28, 28) and len(bufs9[0]) == 28 * 28 * 4     # a 3x3 grid of 8x8 images
    with pytest.raises(ValueError, match='images=0: must be an integer >= 1'): SamplerPreview(w9.den, n=16, images=0)

def test_points2d_and_panels():
    x = torch.randn(100, 3)
    p = points2d(x)
    assert p.shape == (100, 2)
    P = torch.tensor([[2., -1., 0.], [1., 2., 4.]]); P = P / P.norm(dim=1, keepdim=True)
    assert torch.allclose(P @ P.T, torch.eye(2), atol=1e-6) and torch.allclose(p, x @ P.T, atol=1e-6)
    assert points2d(torch.randn(10, 1)).shape == (10, 2)
    x = torch.randn(7, 2)
    spec, b = encode_panel(x, 'a')
    lim = view_limit(x)
    assert spec == dict(label='a', kind='points', n=7, lim=lim, ticks=ticks(lim)) and len(b) == 56

def test_bad_inputs():
    den = ring_den()
    with pytest.raises(TypeError, match='den'): SamplerPreview('nope')
    with pytest.raises(ValueError, match='method'): SamplerPreview(den, method='nope')
    with pytest.raises(ValueError, match='n=0'): SamplerPreview(den, n=0)
    with pytest.raises(ValueError, match='max_fps'): SamplerPreview(den, max_fps=0)
    with pytest.raises(ValueError, match='steps=0'): SamplerPreview(den, steps=0)
    w = SamplerPreview(den, steps=3); w.steps = 0                     # set later, from the browser's controls: the run says why
    with pytest.raises(ValueError, match='steps=0'): w.run(wait=True)
    with pytest.raises(ValueError, match='direction'): integrate_paths(den, torch.zeros(2, 2), 'sideways')
    with pytest.raises(TypeError, match='model'): TrajectoryExplorer('x')
    with pytest.raises(ValueError, match='axis'): TrajectoryExplorer(dn.ring_mixture(), axis=2)
    with pytest.raises(TypeError, match='trainer'): TrainingMonitor(None)

# ---- status, shared scales, the kept frame, exports and the static copy

def test_view_limit_and_ticks_exact():
    p = torch.stack([torch.arange(101.), -torch.arange(101.)], 1)
    assert view_limit(p) == pytest.approx(1.2 * 98)                 # the 98th percentile of max(|x|, |y|) = 0..100
    assert view_limit(p, prev=1000.) == 800. and view_limit(torch.zeros(5, 2)) == 1.
    assert view_limit(torch.tensor([[float('nan'), 0.], [1., 1.]])) == pytest.approx(1.2)   # non-finite points do not blow up the view
    for lim in (0.05, 0.7, 3.1, 11., 80., 1234.):
        t = ticks(lim)
        step = t[1] - t[0]
        assert t == sorted(t) and 0 in t and max(t) <= 0.92 * lim + 1e-9 and max(t) + step > 0.92 * lim and 1 <= len(t) // 2 <= 3, (lim, t)
        assert f'{step / 10 ** math.floor(math.log10(step)):.6f}' in ('1.000000', '2.000000', '5.000000'), (lim, t)

def test_status_reports_errors_and_fitting_and_run_is_busy_meanwhile():
    w = SamplerPreview(ring_den(), n=64, method='dpmpp_2m', steps=4, grid_kind='fitted', fit_kw=dict(pilot=32, max_evals=4))
    seen = []
    w.observe(lambda ch: seen.append((ch.new, w.running)), 'status')
    w.run(wait=True)
    assert seen[0] == ('fitting a 4-step grid for dpmpp_2m (dn.fit_grid)', True), seen   # Run stays disabled while fitting
    assert [s for s, _ in seen[1:]] == ['ready', 'running', 'done'] and all(r for _, r in seen) and not w.running, seen
    w.steps = 0                                                   # the browser's steps box can set 0
    b = Browser(w)
    w._on_msg(w, {'type': 'run'}, [])                             # the Run button: the error goes to the status line, not the log
    w.join(10)
    assert w.status == 'error: ValueError: steps=0: must be an integer >= 1' and not w.running
    states = [d['state'] for d, _ in b.msgs if d.get('method') == 'update']
    assert {'running': True} in states and {'status': w.status} in states and {'running': False} in states, states
    w.steps = 3; w.grid_kind = 'auto'
    w.den = dn.Denoiser(lambda x, t: x * float('nan'), 'vp', 'x0', event_shape=(2,))
    with pytest.raises(Exception) as e: w.run(wait=True)             # a Denoiser that turns NaN mid-run: the sampler's own error, shown
    assert w.status == f'error: {e.type.__name__}: {e.value}' and w.error is e.value and not w.running, w.status

def test_compare_mode_panels_share_one_scale():
    "x_t panels of both samplers share one view, and x0-hat panels another: the larger of their own (final frame: no smoothing)."
    w = SamplerPreview(ring_den(), n=400, method='euler', steps=2, compare=True, method2='heun', steps2=8)
    b = Browser(w)
    w.run(wait=True)
    c, _ = b.frames[-1]
    own = [[view_limit(points2d(x)) for x in (s.x, s.x0)] for s in w._latest]
    assert own[0][0] != pytest.approx(own[1][0], rel=1e-3), own    # the two samplers' clouds differ in spread
    for r in range(2):
        assert c['panels'][r]['lim'] == c['panels'][2 + r]['lim'] == max(own[0][r], own[1][r])
        assert c['panels'][r]['ticks'] == ticks(c['panels'][r]['lim'])
    for f, _ in b.frames[:-1]:                                    # and in every frame of the run
        assert f['panels'][0]['lim'] == f['panels'][2]['lim'] and f['panels'][1]['lim'] == f['panels'][3]['lim']
    fig = w.figure()                                              # the final frame's view
    assert fig.layout.xaxis.range == fig.layout.xaxis3.range == (-c['panels'][0]['lim'], c['panels'][0]['lim'])

def test_prior_view_before_the_first_run():
    w = SamplerPreview(ring_den(), n=300, method='euler', steps=5, seed=3)
    f = w.frame
    assert [p['kind'] for p in f['msg']['panels']] == ['points', 'empty'] and f['msg']['status'] == 'ready'
    xT = torch.frombuffer(bytearray(f['buffers'][0]), dtype=torch.float32).reshape(300, 2)
    assert torch.equal(xT, prior(300, 3))                         # the very x_T a run starts from
    w.seed = 4
    assert torch.equal(torch.frombuffer(bytearray(w.frame['buffers'][0]), dtype=torch.float32).reshape(300, 2), prior(300, 4))
    w.run(wait=True)
    kept = w.frame
    w.seed = 5
    assert w.frame is kept and kept['msg']['final']               # after a run the last frame stays

def test_kept_frame_gif_and_png(tmp_path):
    "The GIF has one frame per frame sent (at their pace), the PNG is the final frame as sent, the kept frame holds at most `keep` points."
    clock = Clock()
    w = preview(ring_den(clock, dt=0.02), clock, n=500, method='euler', steps=30, keep=200)
    b = Browser(w)
    with pytest.raises(ValueError, match='no run recorded'): w.save_gif(tmp_path / 'none.gif')
    w.run(wait=True)
    fr = b.frames
    assert w.recorded == len(fr) == w.last_run['frames'] and len(w.frame['buffers'][0]) == 200 * 8
    assert w.frame['msg'] == fr[-1][0] and w.frame['buffers'][0] == fr[-1][1][0][:1600]
    with Image.open(w.save_gif(tmp_path / 'run.gif')) as g:
        assert g.n_frames == len(fr)
        durations = []
        for k in range(g.n_frames): g.seek(k); durations.append(g.info['duration'])
    gaps = [round(1000 * (b_['elapsed'] - a['elapsed']), -1) for (a, _), (b_, _) in zip(fr, fr[1:])]
    assert durations == [max(20, d) for d in gaps] + [1500], (durations, gaps)
    with Image.open(w.save_png(tmp_path / 'last.png')) as png:
        assert np.array_equal(np.asarray(png.convert('RGB')), np.asarray(frame_image(fr[-1][0], [x[:1600] for x in fr[-1][1]], w.canvas_size)))
    with Image.open(w.save_gif(tmp_path / 'fast.gif', fps=50)) as g:
        g.seek(1); assert g.n_frames == len(fr) and g.info['duration'] == 20

def test_the_record_is_bounded_and_ends_on_the_final_frame(monkeypatch):
    import diffnb.widgets as wm
    monkeypatch.setattr(wm, 'RECORD_BYTES', 3 * 2 * 100 * 8)        # room for three frames of two 100-point panels
    w = SamplerPreview(ring_den(), n=100, method='euler', steps=30, max_fps=1e9)
    b = Browser(w)
    w.run(wait=True)
    assert len(b.frames) == 31 and w.recorded == 4 and [m['seq'] for m, _ in w._record] == [1, 2, 3, 31]

def test_export_buttons_write_files_and_say_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = SamplerPreview(ring_den(), n=100, method='euler', steps=4, compare=True, method2='heun', steps2=2)
    w._on_msg(w, {'type': 'export', 'format': 'gif'}, [])
    assert w.status == 'error: ValueError: save_gif: no run recorded yet (press Run, or call run() first)'
    w.run(wait=True)
    w._on_msg(w, {'type': 'export', 'format': 'gif'}, [])
    assert w.status == f'wrote euler-vs-heun-preview.gif ({w.recorded} frames)' and (tmp_path / 'euler-vs-heun-preview.gif').exists()
    w._on_msg(w, {'type': 'export', 'format': 'png'}, [])
    assert w.status == 'wrote euler-vs-heun-preview.png' and Image.open(tmp_path / 'euler-vs-heun-preview.png').size == w.image().size
    w._on_msg(w, {'type': 'export', 'format': 'mp4'}, [])
    assert w.status == "error: ValueError: format='mp4': 'gif' or 'png'"

def test_values_set_from_the_browser_are_checked_in_the_status_line():
    w = SamplerPreview(ring_den(), n=50, method='euler', steps=3)
    w.n = 0                                                       # typed into the widget before any run
    assert w.status == 'error: ValueError: n=0: must be an integer >= 1'
    w.n = 40
    assert w.status == 'ready' and len(w.frame['buffers'][0]) == 40 * 8
    w.images = 0
    with pytest.raises(ValueError, match='images=0'): w.run(wait=True)
    assert w.status == 'error: ValueError: images=0: must be an integer >= 1'

def test_use_grid_for_the_second_sampler():
    w = SamplerPreview(ring_den(), n=50, method='euler', steps=3, compare=True, method2='heun')
    g = dn.time_grid(dn.get_path('vp'), 5, 'karras')
    w.use_grid(g, method='heun')
    assert (w.steps, w.steps2, w.grid_kind) == (3, 5, 'fitted') and w.grids[('heun', 5)] is not None
    w.use_grid(dn.time_grid(dn.get_path('vp'), 3, 'log_snr'))
    w.run(wait=True)
    ref = dn.sample(dn.ring_mixture().denoiser('vp'), prior(50, 0), 'heun', grid=g)
    assert torch.allclose(w.result[1], ref, atol=1e-6) and w.last_run['nfe'][0] == 3

def test_views_come_and_go():
    w = SamplerPreview(ring_den(), n=10, steps=2)
    for m in ('hello', 'hello', 'bye'): w._on_msg(w, {'type': m}, [])
    assert w.views == 1
    for m in ('bye', 'bye'): w._on_msg(w, {'type': m}, [])
    assert w.views == 0

def test_draw_panel_puts_points_where_the_browser_does():
    spec, b = encode_panel(torch.tensor([[1., -1.], [0., 0.]]), 'x', lim=2.)
    im = np.asarray(draw_panel(spec, b, 100))
    sc = (100 / 2 - 4) / 2.
    u, v = math.floor(50 + 1 * sc), math.floor(50 + 1 * sc)        # (1, -1): right of and below the centre
    assert tuple(im[v, u]) == tuple(im[v + 1, u + 1]) == COLORS[0] and tuple(im[5, 95]) == (255, 255, 255)
    img_spec, img_b = encode_panel(torch.ones(4, 1, 2, 2), 'x0', image=True, k=4)   # white 2x2 images with white gutters
    assert np.asarray(draw_panel(img_spec, img_b, 50)).min() == 255

def _shell():
    from IPython.core.interactiveshell import InteractiveShell
    return InteractiveShell.instance()

def test_static_copy_is_displayed_after_the_widget_and_refreshed_when_a_run_ends():
    from IPython.display import display
    from IPython.utils.capture import capture_output
    import base64, io
    _shell()
    w = SamplerPreview(ring_den(), n=200, method='euler', steps=5)
    with capture_output() as cap:
        display(w)
        w.run(wait=True)
    outs = cap.outputs
    assert len(outs) == 4, [sorted(o.data) for o in outs]
    live, marker, copy, update = outs
    assert sorted(live.data) == ['application/vnd.jupyter.widget-view+json', 'text/plain'] and live.data['text/plain'] == "SamplerPreview(method='euler', steps=5, n=200)"
    assert 'diffnb-static' in marker.data['text/html'] and ':has(' in marker.data['text/html'] and 'script' not in marker.data['text/html']
    did = copy.transient['display_id']
    assert not copy.update and update.update and update.transient['display_id'] == did
    first = Image.open(io.BytesIO(base64.b64decode(copy.data['image/png'])))
    last = Image.open(io.BytesIO(base64.b64decode(update.data['image/png'])))
    assert np.array_equal(np.asarray(first.convert('RGB')), np.asarray(frame_image(*_prior_of(w), w.canvas_size)))
    assert np.array_equal(np.asarray(last.convert('RGB')), np.asarray(w.image())) and w.frame['msg']['final']

def _prior_of(w):
    w2 = SamplerPreview(w.den, n=w.n, method=w.method, steps=w.steps, seed=w.seed)
    return w2.frame['msg'], w2.frame['buffers']

def test_images_trait_sets_the_grid():
    x, _ = dn.digits()
    w = SamplerPreview(dn.EmpiricalOracle(x[:100]).denoiser('vp'), n=16, method='ddim', steps=3)
    assert w.is_image and w.frame['msg']['panels'][0]['kind'] == 'image' and w.frame['msg']['panels'][0]['h'] == 37   # 4x4 prior grid
    w.images = 4
    assert w.frame['msg']['panels'][0]['h'] == 19                  # the prior view follows the control before a run
    w.run(wait=True)
    assert w.frame['msg']['panels'][1]['h'] == 19 and w.image().size[0] == 2 * w.canvas_size + 20

# ---- trajectory explorer

GM1 = dn.GaussianMixture(torch.tensor([[-2.], [1.5]]), torch.tensor([[[0.09]], [[0.25]]]), torch.tensor([0.4, 0.6]))

def test_ode_paths_are_invertible_and_sde_keeps_marginals():
    den = GM1.denoiser('vp')
    x0 = GM1.sample(32, generator=torch.Generator().manual_seed(0)).double()
    _, fw = integrate_paths(den, x0, 'forward', steps=200)
    _, back = integrate_paths(den, fw[-1], 'reverse', steps=200)
    assert (back[-1] - x0).abs().max() < 2e-2
    xT = dn.get_path('vp').prior(3000, (1,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, sde = integrate_paths(den, xT, 'reverse', gamma=1., steps=100, generator=torch.Generator().manual_seed(2))
    frac = (sde[-1] < 0).double().mean().item()
    assert abs(frac - 0.4) < 0.04, frac   # the left mode's weight (binomial sd 0.009)

def test_density_map_is_exact_and_normalised():
    P = dn.get_path('vp')
    xs = torch.linspace(-6, 6, 600, dtype=torch.float64); ts = torch.tensor([1e-3, 0.5, 1.], dtype=torch.float64)
    lp = density_map(GM1, P, ts, xs)
    assert torch.allclose(lp.exp().sum(0) * (xs[1] - xs[0]), torch.ones(3, dtype=torch.float64), atol=1e-3)
    for k, t in enumerate(ts.tolist()): assert torch.allclose(lp[:, k], GM1.marginal(P, t).log_prob(xs[:, None]), atol=1e-8)
    kde = density_map(GM1.sample(5000, generator=torch.Generator().manual_seed(0)), P, ts, xs)
    l1 = (kde.exp() - lp.exp()).abs().sum(0) * (xs[1] - xs[0])
    assert l1[0] < 0.35 and (l1[1:] < 0.01).all(), l1   # a kernel estimate: modes blurred by the bandwidth at small t, close once noise dominates

def test_trajectory_explorer_controls_update_the_figure():
    te = TrajectoryExplorer(GM1, 'vp', n_paths=5, steps=50, nx=40, nt=30)
    assert [t.type for t in te.fig.data] == ['heatmap', 'scatter', 'scatter']
    assert len(te.fig.data[2].x) == 5 * 52 and te.fig.data[2].line.color == 'white'
    rec = Browser.__new__(Browser); rec.msgs = []; rec.ack = None; rec.stop_at = None; rec.w = None
    te.fig.comm = rec
    te.w_n.value = 3
    assert len(te.fig.data[2].x) == 3 * 52 and len(rec.msgs) >= 1
    z0 = te.fig.data[0].z
    te.w_path.value = 've'
    assert not np.array_equal(np.asarray(te.fig.data[0].z), np.asarray(z0)) and "on ve" in te.fig.layout.title.text
    ends = [y for y in te.fig.data[2].y[50::52]]
    te.w_gamma.value = 0.
    sde_end = te.fig.data[1].y[50]
    assert abs(sde_end - ends[0]) < 0.1   # gamma 0: the SDE family is the ODE (EM against Heun)
    te.w_dir.value = 'forward'
    assert te.fig.data[2].name == 'ODE (forward)'

def test_trajectory_explorer_trained_2d_model():
    tr = dn.Trainer(dn.MLP(2, hidden=16, depth=1), 'vp', dn.toy('ring8', 256), batch_size=64)
    te = TrajectoryExplorer(tr.denoiser(), data=tr.x, axis=1, n_paths=3, steps=20, nx=30, nt=20)
    assert te.w_path.disabled and te.fig.layout.yaxis.title.text == 'x[1]'

def test_path_times():
    P = dn.get_path('edm')
    t = path_times(P, 9, 'log')
    assert t[0] == pytest.approx(80e-4) and t[-1] == pytest.approx(80.) and torch.allclose(torch.diff(t.log()), torch.diff(t.log())[0].expand(8))
    u = path_times(dn.get_path('ve'), 5)
    assert u.tolist() == pytest.approx([0., 0.25, 0.5, 0.75, 1.])
    l = dn.get_path('linear').log_snr(path_times(dn.get_path('linear'), 7, 'log_snr'))
    assert torch.allclose(torch.diff(l), torch.diff(l)[0].expand(6), atol=1e-9)
    with pytest.raises(ValueError, match='spacing'): path_times(P, 3, 'cubic')

def test_trajectory_explorer_colour_bar_legend_and_log_t():
    te = TrajectoryExplorer(GM1, 'edm', n_paths=3, steps=30, nx=30, nt=20)
    hm = te.fig.data[0]
    assert hm.showscale is not False and hm.colorbar.title.text == 'p_t(x) / max'
    bg = te.fig.layout.legend.bgcolor
    assert bg == '#3b3b4f' and te.fig.layout.legend.font.color == 'white'     # the white ODE line shows in the legend
    te.set(log_t=True, direction='forward')
    assert te.fig.layout.xaxis.type == 'log' and te.fig.data[2].x[0] == pytest.approx(8e-3)
    t = np.array([v for v in te.fig.data[2].x[:31]])
    assert np.allclose(np.diff(np.log(t)), np.log(80 / 8e-3) / 30)   # a grid uniform in log t
    ends = np.array(te.fig.data[2].y[30::32])
    assert np.abs(ends).max() > 5                                     # forward paths reach the prior's scale (sigma 80)

def test_path_explorer_axes_and_robust_ranges():
    fig = paths_figure(('vp', 'linear'), steps=4)
    lo, hi = fig.layout.yaxis3.range
    assert -100 < lo < -10 and hi > 0, (lo, hi)                      # linear's f reaches -1000 near t_max; VP's stays above -10
    assert fig.layout.xaxis.autorange == 'reversed' and fig.layout.xaxis3.title.text.startswith('log-SNR')
    lam = dn.get_path('vp').log_snr(dn.time_grid(dn.get_path('vp'), 4, 'log_snr'))
    assert np.allclose(fig.data[5].x, lam.numpy())                    # the grid marked at its log-SNR
    fn = paths_figure(('vp', 've', 'edm'), kind=None, x='t_norm')
    assert fn.layout.yaxis.type == 'log' and all(np.asarray(d.x).min() == 0 and np.asarray(d.x).max() == pytest.approx(1) for d in fn.data)
    # 2%-98% of each curve: 0.02..0.98 and 0..0 (the two -1000s left out), so [0, 0.98] padded by 8%
    assert robust_range([np.linspace(0, 1, 101), np.r_[np.zeros(99), -1000, -1000]]) == pytest.approx([-0.0784, 0.98 + 0.0784])
    pe = PathExplorer(paths=('vp', 'edm'))
    pe.w_x.value = 't'
    assert pe.fig.layout.xaxis.autorange is None and max(pe.fig.data[6].x) == pytest.approx(80)
    with pytest.raises(ValueError, match="x='time'"): paths_figure(x='time')

# ---- path explorer, monitor, extension

def test_mismatches():
    tr = dn.Trainer(dn.MLP(2, hidden=16, depth=1), 'vp', dn.toy('ring8', 256), batch_size=64)
    assert mismatches(tr, den=tr.denoiser(), grid=dn.time_grid(tr.path, 5, 'karras')) == []
    got = mismatches(tr, path='ve', param='x0', grid=torch.linspace(0.01, 1, 5))
    assert [m.split(':')[0] for m in got] == ['path', 'parametrization', 'time direction']
    assert [m.split(':')[0] for m in mismatches(tr, path=dn.get_path('vp', beta_max=10.))] == ['path']
    assert [m.split(':')[0] for m in mismatches(tr, grid=torch.tensor([2., 1., 0.5]))] == ['time range']
    pe = PathExplorer(trainer=tr, sampler=dict(param='v'))
    assert 'mismatch' in pe.flags.value and len(pe.check()) == 1

def test_path_explorer_figure():
    fig = paths_figure(('vp', 've'), steps=5, x='t')
    assert len(fig.data) == 12 and list(fig.data[5].x) == dn.time_grid(dn.get_path('vp'), 5, 'log_snr').tolist()
    pe = PathExplorer(paths=('vp',))
    assert len(pe.fig.data) == 6
    pe.w_paths.value = ('vp', 'linear', 'edm')
    assert len(pe.fig.data) == 18
    pe.w_steps.value = 3
    assert len(pe.fig.data[5].x) == 4

def test_training_monitor_stop_leaves_a_checkpoint(tmp_path):
    tr = dn.Trainer(dn.MLP(2, hidden=16, depth=1), 'vp', dn.toy('ring8', 256), batch_size=32)
    mon = TrainingMonitor(tr, every=5, n_samples=50, steps=4, folder=str(tmp_path))
    mon.train(10, wait=True)
    assert [s for s, _ in mon.sample_log] == [5, 10] and mon.sample_log[-1][1].shape == (50, 2)
    assert len(mon.loss_fig.data[0].y) == 10 and mon.checkpoint.name == 'ckpt-00000010'
    mon.train(100_000)
    time.sleep(0.3); mon.stop(); mon.join(30)
    assert mon.stopped and 10 < tr.step < 100_010
    back = dn.Trainer.load(str(tmp_path), net=dn.MLP(2, hidden=16, depth=1))
    assert back.step == tr.step
    assert all(torch.equal(a, b) for a, b in zip(back.ema.net.state_dict().values(), tr.ema.net.state_dict().values()))

def test_training_monitor_shows_an_image_grid_of_the_size_asked(tmp_path):
    "An image trainer's monitor draws a grid of `images` samples (here 4 of 9: two by two 8x8 images with gutters)."
    x, _ = dn.digits()
    tr = dn.Trainer(dn.UNet.preset('tiny'), 'vp', x[:64], batch_size=16)
    mon = TrainingMonitor(tr, every=2, n_samples=9, steps=2, folder=str(tmp_path), images=4)
    mon.train(2, wait=True)
    z = np.asarray(mon.sample_fig.data[0].z)
    assert z.shape == (2 * 9 + 1, 2 * 9 + 1, 3) and mon.sample_log[-1][1].shape == (9, 1, 8, 8)
    with pytest.raises(ValueError, match='images=0: must be an integer >= 1'): TrainingMonitor(tr, images=0)

def test_explorers_and_monitor_leave_static_copies(tmp_path):
    from IPython.display import display
    from IPython.utils.capture import capture_output
    _shell()
    te = TrajectoryExplorer(GM1, 'vp', n_paths=2, steps=10, nx=20, nt=10)
    tr = dn.Trainer(dn.MLP(2, hidden=8, depth=1), 'vp', dn.toy('ring8', 64), batch_size=16)
    mon = TrainingMonitor(tr, every=100, folder=str(tmp_path))
    with capture_output() as cap:
        display(te); display(PathExplorer(paths=('vp',))); display(mon)
        te.set(n_paths=3); te.static._timer.join(5)
        mon.train(3, wait=True)
    outs = cap.outputs
    kinds = [sorted(o.data) for o in outs]
    assert len(outs) == 3 * 3 + 2, kinds
    for k in (0, 3, 6): assert 'application/vnd.jupyter.widget-view+json' in outs[k].data and 'diffnb-static' in outs[k + 1].data['text/html']
    assert all('application/vnd.plotly.v1+json' in outs[k].data for k in (2, 5, 8))
    te_update, mon_update = outs[9], outs[10]
    assert te_update.update and te_update.transient == outs[2].transient and len(te_update.data['application/vnd.plotly.v1+json']['data'][2]['x']) == 3 * 12
    assert mon_update.update and mon_update.transient == outs[8].transient

def test_load_ipython_extension():
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    load_ipython_extension(ip)
    for obj in (dn.get_path('ve'), dn.ring_mixture()):
        data, _ = ip.display_formatter.format(obj)
        assert 'application/vnd.plotly.v1+json' in data and data['text/plain'] == repr(obj)


def test_three_views_density_particles_and_slider():
    "The grid's Fokker-Planck density matches the closed form; ODE particles keep their order, SDE particles lose it; one slider step per time."
    from scipy import stats
    from diffnb.widgets import ThreeViews
    gm = dn.GaussianMixture([[-2.], [1.5]], [0.3**2, 0.5**2], [0.4, 0.6])
    tv = ThreeViews(gm, 'vp', n=150, nt=11, steps=100, nx=1500, seed=1)
    assert tv.density.shape == (11, 1500) and tv.ode.shape == tv.sde.shape == (11, 150)
    assert (tv.density - tv.exact).abs().max() < 1e-3
    assert (tv.ode.diff(dim=1) > 0).all() and not (tv.sde[-1].diff() > 0).all()
    assert abs(stats.spearmanr(tv.x0[:, 0].numpy(), tv.sde[-1].numpy()).statistic) < 0.3
    fig = tv.figure(k=3)
    assert len(fig.layout.sliders[0].steps) == 11 and fig.layout.sliders[0].active == 3 and len(fig.data) == 4
    last = fig.layout.sliders[0].steps[-1].args[0]
    assert np.allclose(last['x'][3], tv.ode[-1].numpy(), atol=1e-3) and np.allclose(last['y'][2], tv.density[-1, ::7].numpy(), atol=1e-3)
    assert 'application/vnd.plotly.v1+json' in tv._repr_mimebundle_()
    with pytest.raises(ValueError, match='steps=100'): ThreeViews(gm, nt=8, steps=100)
    with pytest.raises(TypeError, match='1-D'): ThreeViews(dn.ring_mixture())
