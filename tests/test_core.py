"Unit tests of the foundation rooms: each checks a property that a wrong implementation would break."
import math
import pytest
import torch
import diffnb as dn

PATH_NAMES = list(dn.PATHS)

@pytest.mark.parametrize('name', PATH_NAMES)
def test_moment_odes_reproduce_alpha_sigma(name):
    "Integrating d alpha/dt = f alpha and d sigma^2/dt = 2 f sigma^2 + g^2 from t_min reproduces the closed forms (Su, Topics on Diffusion Generative Models, §5.4)."
    p = dn.get_path(name)
    t_end = p.t_min + 0.6 * (p.t_max - p.t_min)
    ts = torch.linspace(p.t_min, t_end, 4001, dtype=torch.float64)
    a, v = p.alpha(p.t_min).item(), p.sigma(p.t_min).item()**2
    at = lambda t: list(zip(p.f(t).tolist(), p.g2(t).tolist()))          # (f, g^2) at each time, from one call each
    start, mid, end = at(ts[:-1]), at((ts[:-1] + ts[1:]) / 2), at(ts[1:])
    rhs = lambda fg, a, v: (fg[0] * a, 2 * fg[0] * v + fg[1])
    for i, h in enumerate((ts[1:] - ts[:-1]).tolist()):   # RK4
        k1 = rhs(start[i], a, v); k2 = rhs(mid[i], a + h / 2 * k1[0], v + h / 2 * k1[1])
        k3 = rhs(mid[i], a + h / 2 * k2[0], v + h / 2 * k2[1]); k4 = rhs(end[i], a + h * k3[0], v + h * k3[1])
        a += h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0]); v += h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    assert a == pytest.approx(p.alpha(t_end).item(), rel=1e-6, abs=1e-9)
    assert v == pytest.approx(p.sigma(t_end).item()**2, rel=1e-6, abs=1e-9)

@pytest.mark.parametrize('kind', dn.TIME_GRIDS)
@pytest.mark.parametrize('name', ['vp', 'vp_cosine', 've', 'edm', 'ddpm', 'linear', 'trig', 'ou'])
def test_time_grids_strictly_decreasing_at_every_step_count(name, kind):
    "No duplicate time in any grid up to the training resolution (the trap that gave diffusers all-NaN samples)."
    p = dn.get_path(name)
    for steps in (1, 2, 3, 7, 50, 999, 1000):
        g = dn.time_grid(p, steps, kind, data_scale=3.)
        assert len(g) == steps + 1 and g[0].item() == p.t_max and g[-1].item() == p.t_min
        assert bool((g[1:] < g[:-1]).all()), (name, kind, steps)

def test_gaussian_mixture_score_is_gradient_in_8d():
    gm = dn.random_mixture(d=8, k=4, seed=3)
    p = dn.get_path('edm')
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    for t in (0.01, 1., 20.):
        xg = x.clone().requires_grad_(True)
        g, = torch.autograd.grad(gm.marginal(p, t).log_prob(xg).sum(), xg)
        torch.testing.assert_close(gm.score(x, t, p), g, rtol=1e-8, atol=1e-10)

def test_oracle_posterior_mean_for_gaussian_data_is_linear():
    "Single Gaussian N(mu, S): E[x0|xt] = mu + a S (a^2 S + s^2 I)^-1 (xt - a mu) (Gaussian conditioning)."
    S = torch.tensor([[1., .3], [.3, .5]], dtype=torch.float64); mu = torch.tensor([1., -2.], dtype=torch.float64)
    gm, p = dn.GaussianMixture(mu[None], S[None]), dn.get_path('vp')
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, s = p.alpha(0.4).item(), p.sigma(0.4).item()
    want = mu + (a * S @ torch.linalg.inv(a * a * S + s * s * torch.eye(2, dtype=torch.float64)) @ (x - a * mu).T).T
    torch.testing.assert_close(gm.x0(x, 0.4, p), want, rtol=1e-10, atol=1e-12)

def test_same_generator_same_draws():
    gm = dn.ring_mixture()
    a = gm.sample(100, generator=torch.Generator().manual_seed(5)); b = gm.sample(100, generator=torch.Generator().manual_seed(5))
    c = gm.sample(100, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    p = dn.get_path('vp')
    assert torch.equal(p.prior(4, (2,), generator=torch.Generator().manual_seed(1)), p.prior(4, (2,), generator=torch.Generator().manual_seed(1)))

def test_sliced_w2_matches_gaussian_w2_in_1d():
    g = torch.Generator().manual_seed(0)
    x, y = 2 * torch.randn(100_000, 1, generator=g), 3 + 0.5 * torch.randn(100_000, 1, generator=g)
    assert dn.sliced_wasserstein(x, y, n_proj=4, generator=g) == pytest.approx(math.sqrt(9 + 2.25), rel=0.01)

@pytest.mark.parametrize('call, needle', [
    (lambda: dn.get_path('vp', beta_max=-3), 'beta_max=-3'),
    (lambda: dn.get_path('ve', sigma_min=0), 'sigma_min=0'),
    (lambda: dn.get_path('vp_cosine', t_max=1.0), 't_max=1.0'),
    (lambda: dn.get_path('nope'), 'known: vp, vp_cosine, subvp, ve, edm, ou, linear, trig, ddpm'),
    (lambda: dn.get_path('edm').sigma(100.), "outside path 'edm''s range"),
    (lambda: dn.time_grid(dn.get_path('vp'), 2.5), 'steps=2.5'),
    (lambda: dn.Denoiser(lambda x, t: x, 'vp', param='nose'), "param='nose' is unknown; known: eps"),
    (lambda: dn.GaussianMixture([[0.]], [[[-1.]]]), 'not positive definite'),
    (lambda: dn.GaussianMixture([[0.], [1.]], 1., [0.2, 0.2]), 'sum to 1'),
    (lambda: dn.GaussianMixture([[0.], [1.]], torch.ones(3)), 'covs: shape'),
    (lambda: dn.toy('moons', 1), 'n=1'),
    (lambda: dn.mmd(torch.zeros(5, 2), torch.zeros(5, 3)), 'dimensions differ'),
    (lambda: dn.noise_floor(dn.mmd, dn.ring_mixture(), 1), 'n=1'),
])
def test_bad_input_names_the_argument(call, needle):
    with pytest.raises(ValueError, match=None) as e: call()
    assert needle in str(e.value), str(e.value)

def test_sample_scale_is_cfg_with_the_null_label():
    "sample(..., y=, scale=) equals sampling dn.CFG(den, None, scale, y_null=net.null_label); scale 1 is the conditional model."
    p = dn.get_path('vp'); torch.manual_seed(0)
    den = dn.Denoiser(dn.randomize_(dn.MLP(2, hidden=32, depth=2, n_classes=3)), p, event_shape=(2,))
    y = torch.tensor([0, 1, 2, 0, 1])
    run = lambda d, **kw: dn.sample(d, 5, steps=4, y=y, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(run(den, scale=2.), run(dn.CFG(den, None, 2., y_null=3)))
    torch.testing.assert_close(run(den, scale=1.), run(den), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(run(den, scale=3.), run(den))
    with pytest.raises(ValueError, match='scale'): dn.sample(dn.Denoiser(dn.MLP(2), p, event_shape=(2,)), 3, scale=2.)

def test_float32_t_max_is_inside_the_range():
    "A float32 tensor holding t_max (0.999 rounds to 0.99900001) is t_max, not out of range; a time truly outside still raises."
    p = dn.get_path('linear')
    t32 = torch.tensor([p.t_max], dtype=torch.float32)
    assert float(t32) > p.t_max
    torch.testing.assert_close(p.alpha(t32), p.alpha(p.t_max).reshape(1))
    den = dn.EmpiricalOracle(torch.randn(10, 2, generator=torch.Generator().manual_seed(0))).denoiser(p)
    assert torch.isfinite(den.x0(torch.randn(3, 2), p.t_max)).all()
    with pytest.raises(ValueError, match='outside'): p.alpha(torch.tensor([0.9995]))

def test_abandoned_sampling_run_leaves_grad_mode_alone():
    "Interleaved and abandoned sample_iter generators never switch gradients off for the caller."
    p = dn.get_path('vp'); den = dn.ring_mixture().denoiser(p)
    a, b = dn.sample_iter(den, 4, 'ddim', 5), dn.sample_iter(den, 4, 'sde', 5)
    next(a); next(b); next(a)
    assert torch.is_grad_enabled()
    del a, b
    assert torch.is_grad_enabled()
    s = next(dn.sample_iter(den, 4, 'ddim', 5))
    assert not s.x.requires_grad

@pytest.mark.parametrize('method', list(dn.SAMPLERS))
def test_float64_sampling_of_a_float32_net(method):
    "Every sampler runs a float32 network on a float64 state: the Denoiser hands the net its own dtype and returns the state's."
    torch.manual_seed(0)
    net = dn.MLP(2, hidden=16, depth=1)
    den = dn.Denoiser(net, 'vp', 'edm', event_shape=(2,))
    kw = {'analytic_dpm': dict(data=torch.randn(64, 2, dtype=torch.float64)),
          'npr_dpm': dict(head=dn.VarianceHead(dn.MLP(2, hidden=8, depth=1), den, 'npr')),
          'sn_dpm': dict(head=dn.VarianceHead(dn.MLP(2, hidden=8, depth=1), den, 'sn'))}.get(method, {})
    opts = dict(kw, **({} if dn.SAMPLERS[method].evals == 0 else {'steps': 4}))
    xT = den.path.prior(32, (2,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = dn.sample(den, xT, method, generator=torch.Generator().manual_seed(2), **opts)
    assert x.dtype == torch.float64 and bool(torch.isfinite(x).all())
    assert net.inp.weight.dtype == torch.float32                  # the net was not converted
    if not dn.SAMPLERS[method].stochastic:                        # the same model from the same state: only rounding differs
        x32 = dn.sample(den, xT.float(), method, **opts)
        assert x32.dtype == torch.float32 and (x - x32.double()).abs().max().item() < 1e-3


def test_an_edm_net_takes_one_time_for_a_batch():
    "A single time (a float or a 0-d tensor) on an EDM-preconditioned net is broadcast to the batch, as for every other parametrization."
    torch.manual_seed(0)
    den = dn.Denoiser(dn.randomize_(dn.MLP(2, hidden=16, depth=1)), 'vp', 'edm')
    x = torch.randn(3, 2)
    per_sample = den.x0(x, torch.full((3,), 0.4))
    for t in (0.4, torch.tensor(0.4)):
        torch.testing.assert_close(den.x0(x, t), per_sample)
        assert den.velocity(x, t).shape == (3, 2)


def test_fit_grid_works_on_a_trained_float32_net():
    "fit_grid's float64 pilot runs through a float32 trained net, and its grid is no worse on the pilot than the grid it starts from."
    torch.manual_seed(0)
    data = dn.ring_mixture().sample(2000, generator=torch.Generator().manual_seed(0))
    tr = dn.Trainer(dn.MLP(2, hidden=32, depth=1), 'vp', data, batch_size=256, warmup=10, device='cpu')
    list(tr.steps(60))
    den = tr.denoiser()
    grid = dn.fit_grid(den, 6, pilot=64, start='log_snr', max_evals=60, generator=torch.Generator().manual_seed(1), rtol=1e-4)
    assert grid.dtype == torch.float64 and grid.shape == (7,) and bool((grid[1:] < grid[:-1]).all())
    xT = den.path.prior(64, (2,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = dn.sample(den, xT, 'dopri5', rtol=1e-6, atol=1e-6)
    err = lambda g: (dn.sample(den, xT, 'dpmpp_2m', grid=g) - ref).pow(2).sum(1).mean().item()
    assert err(grid) <= err(dn.time_grid(den.path, 6, 'log_snr')) * 1.01

def test_nfe_is_counted_per_run():
    "Two sampling runs interleaved on one Denoiser each report their own calls."
    import itertools
    den = dn.ring_mixture().denoiser('vp')
    a = dn.sample_iter(den, 64, 'ddim', steps=12, generator=0)
    b = dn.sample_iter(den, 64, 'heun', steps=6, generator=1)
    pairs = list(itertools.zip_longest(a, b))
    assert [s.nfe for s, _ in pairs] == list(range(1, 13))
    assert [s.nfe for _, s in pairs if s is not None] == [2, 4, 6, 8, 10, 12] and den.nfe == 24

def test_every_generator_argument_takes_an_int_seed():
    "generator= is a torch.Generator, an int seed or None everywhere: an int gives what a Generator seeded with it gives."
    from diffnb.flows import inpaint, sdedit
    gm = dn.ring_mixture(); p = dn.get_path('vp'); den = gm.denoiser(p); x = gm.sample(16, generator=0)
    G = lambda: torch.Generator().manual_seed(7)
    calls = {'GaussianMixture.sample': lambda g: gm.sample(8, generator=g), 'Path.prior': lambda g: p.prior(8, (2,), generator=g),
             'Path.noise': lambda g: p.noise(x, 0.5, generator=g)[0], 'sample_t': lambda g: dn.sample_t(p, 8, generator=g),
             'sample': lambda g: dn.sample(den, 8, 'ddpm', steps=4, generator=g),
             'sliced_wasserstein': lambda g: torch.tensor(dn.sliced_wasserstein(x, x + 1, generator=g)),
             'inpaint': lambda g: inpaint(den, x, torch.tensor([True, False]), steps=4, generator=g),
             'sdedit': lambda g: sdedit(den, x, 0.5, steps=4, generator=g)}
    for name, f in calls.items(): assert torch.equal(f(7), f(G())), name
    with pytest.raises(ValueError, match="generator='7': a torch.Generator, an int seed, or None"): gm.sample(8, generator='7')

@pytest.mark.parametrize('path', ['vp', 'inflationary'])
def test_the_integrators_euler_hook_equals_the_tableau_step(path, monkeypatch):
    "The probability-flow drift takes a whole Euler step as one combination (one pass fewer): the same states as the tableau's Euler step, to 1e-13, on a scalar and a diagonal path."
    import diffnb.samplers as S
    from diffnb.inflationary import inflationary_path
    P = dn.get_path('vp') if path == 'vp' else inflationary_path(dn.toy('moons', 500, seed=0), 'prr', keep=1)
    gm = dn.GaussianMixture(torch.tensor([[0., 0.], [1., .5]]), torch.tensor([[[.2, 0.], [0., .1]], [[.1, 0.], [0., .3]]]), torch.tensor([.5, .5]))
    xT = P.prior(64, (2,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hooked = dn.sample(gm.denoiser(P), xT, 'euler', steps=30)
    fixed = S._fixed
    def without_hook(fn, *a, **k):
        plain = lambda t, y: fn(t, y)
        plain.prepare = fn.prepare
        return fixed(plain, *a, **k)
    monkeypatch.setattr(S, '_fixed', without_hook)
    plain = dn.sample(gm.denoiser(P), xT, 'euler', steps=30)
    assert not torch.equal(hooked, xT) and (hooked - plain).abs().max().item() < 1e-13

@pytest.mark.parametrize('name', ['vp', 'edm', 'linear', 'inflationary'])
def test_mixture_oracle_at_one_shared_time_equals_per_sample_times(name):
    "The oracle's route for a batch at one time (variances once, as samplers call it) gives bitwise the per-sample route's values; an empty batch gets an empty answer."
    from diffnb.inflationary import inflationary_path
    gm = dn.random_mixture(3, 4, seed=1)
    p = inflationary_path(gm.sample(500, generator=torch.Generator().manual_seed(0)), 'prp') if name == 'inflationary' else dn.get_path(name)
    x = gm.sample(64, generator=torch.Generator().manual_seed(2)) * 1.3
    t = 0.3 * p.t_max
    shared, per_sample = torch.tensor(t).expand(64), torch.full((64,), t)   # a stride-0 batch time, and the same times one per sample
    for f in (gm.x0, gm.score, gm.responsibilities, gm.class_logits):
        assert torch.equal(f(x, shared, p), f(x, per_sample, p)), f.__name__
    assert gm.denoiser(p).x0(torch.zeros(0, 3), t).shape == (0, 3)
