"""Kernel-less tests of the widgets: a recording comm stands in for the browser, an injected clock for time."""
import math, threading, time
import numpy as np, pytest, torch
import diffnb as dn
from diffnb.data import density_map, image_grid
from diffnb.widgets import (SamplerPreview, TrajectoryExplorer, PathExplorer, TrainingMonitor, integrate_paths,
                            paths_figure, points2d, encode_panel, load_ipython_extension)
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
        assert [p['label'].split(':')[-1].strip() for p in c['panels']] == ['x_t', 'x0-hat']
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
    assert len(c['panels']) == 4 and c['panels'][2]['label'].startswith('heun') and len(bufs) == 4
    assert c['step'] == 12 and c['others'][0]['step'] == 6 and w.last_run['nfe'][0] == 12 and w.last_run['nfe'][1] in (11, 12)
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
    spec, b = encode_panel(torch.randn(7, 2), 'a')
    assert spec == dict(label='a', kind='points', n=7) and len(b) == 56

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

def test_snapshot_bundle():
    w = SamplerPreview(ring_den(), n=5000, method='euler', steps=3)
    w.run(wait=True)
    data, _ = w._repr_mimebundle_()
    h = data['text/html']
    assert 'diffnbSamplerRender' in h and 'static/sampler_preview.js' in h and '"n": 2000' in h   # subsampled
    assert 'application/vnd.jupyter.widget-view+json' in data

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
    fig = paths_figure(('vp', 've'), steps=5)
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

def test_load_ipython_extension():
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    load_ipython_extension(ip)
    for obj in (dn.get_path('ve'), dn.ring_mixture()):
        data, _ = ip.display_formatter.format(obj)
        assert 'application/vnd.plotly.v1+json' in data and data['text/plain'] == repr(obj)
