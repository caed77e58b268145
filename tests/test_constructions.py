"Unit tests for diffnb.constructions against exact answers: closed-form densities, exact oracles, enumeration."
import math
import pytest
import torch
from scipy import stats
import diffnb as dn
from diffnb.constructions import *

def g(seed=0): return torch.Generator().manual_seed(seed)

@pytest.fixture(autouse=True)
def one_thread():
    "Small nets train faster on one thread, and the machine is shared: oversubscribed threads slow these tests tenfold."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

# priors
@pytest.mark.parametrize('name', PRIORS)
def test_prior_normalised_1d(name):
    "Each prior's log density integrates to 1 in one dimension."
    h = 1e-3
    z = (torch.arange(-60_000, 60_000, dtype=torch.float64)[:, None] + 0.5) * h
    mass = (KernelPrior(name).log_prob(z).exp().sum() * h).item()
    assert abs(mass - 1) < (0.02 if name == 'cauchy' else 1e-3)   # the Cauchy's tails beyond |z| = 60 hold 1%

@pytest.mark.parametrize('name', ['gaussian', 'laplace', 'uniform'])
def test_prior_unit_variance(name):
    z = KernelPrior(name).sample(200_000, 3, g(), torch.float64)
    assert (z.var(0) - 1).abs().max() < 0.02 and z.mean(0).abs().max() < 0.02

def test_cauchy_is_f_distributed():
    "|z|^2 / d ~ F(d, 1) for the multivariate Cauchy."
    for d in (1, 2, 3):
        z = KernelPrior('cauchy').sample(20_000, d, g(d), torch.float64)
        assert stats.kstest(((z**2).sum(1) / d).numpy(), stats.f(d, 1).cdf).pvalue > 1e-3

@pytest.mark.parametrize('name', ['tanh', 'exp'])
def test_radial_cdf(name):
    "The radius of a radial family has CDF psi(r)."
    r = KernelPrior(name).sample(20_000, 3, g(), torch.float64).norm(dim=1).numpy()
    cdf = (lambda x: torch.tanh(torch.as_tensor(x)).numpy()) if name == 'tanh' else (lambda x: 1 - torch.exp(-torch.as_tensor(x)).numpy())
    assert stats.kstest(r, cdf).pvalue > 1e-3

def test_prior_bad_name():
    with pytest.raises(ValueError, match='name'): KernelPrior('student')
    assert as_prior('cauchy').name == 'cauchy'

# kernel flows
def test_flow_checks_arguments():
    with pytest.raises(ValueError, match='construction'): KernelFlow(construction='curved')
    with pytest.raises(ValueError, match='T='): KernelFlow(construction='linear', T=2.)
    with pytest.raises(ValueError, match='t_min'): KernelFlow(construction='green', T=5., t_min=6.)

def test_gaussian_linear_flow_is_the_linear_path():
    "Gaussian prior on the linear kind: the conditional density is N((1-t) x0, t^2 I) and D equals the empirical oracle on dn's linear path."
    fl = KernelFlow('gaussian', 'linear')
    data = torch.randn(30, 2, generator=g(), dtype=torch.float64)
    x = 1.5 * torch.randn(50, 2, generator=g(1), dtype=torch.float64)
    t, x0 = 0.37, data[:1].expand(50, 2)
    exact = torch.distributions.MultivariateNormal((1 - t) * x0, t**2 * torch.eye(2, dtype=torch.float64)).log_prob(x)
    assert torch.allclose(fl.cond_log_prob(x, t, x0), exact, atol=1e-10)
    oracle = dn.EmpiricalOracle(data).x0(x, torch.full((50,), t, dtype=torch.float64), dn.get_path('linear'))
    assert torch.allclose(fl.x0(x, t, data), oracle, atol=1e-10)
    assert torch.allclose(fl.velocity(x, t, data), (x - oracle) / t, atol=1e-10)
    assert torch.allclose(fl.cond_velocity(x, t, x0), (x - x0) / t)

def test_cond_sample_matches_density():
    "x_t = mu_t(x0) + t z: the Green kind at t is x0 + t z."
    fl = KernelFlow('laplace', 'green', T=3.)
    x0 = torch.full((100_000, 1), 2., dtype=torch.float64)
    xt = fl.cond_sample(x0, 0.5, g())
    assert abs(xt.mean().item() - 2) < 0.01 and abs(xt.std().item() - 0.5) < 0.01
    # the shape, not only two moments: (x_t - 2) / 0.5 is the unit-variance Laplace (scale 1/sqrt 2); a Gaussian fails this
    z = ((xt - 2) / 0.5).flatten().numpy()
    assert stats.kstest(z, 'laplace', args=(0, 2**-0.5)).pvalue > 1e-3
    assert stats.kstest(z, 'norm').pvalue < 1e-6

@pytest.mark.parametrize('name', ['gaussian', 'laplace', 'cauchy', 'tanh', 'exp'])
@pytest.mark.parametrize('kind', ['linear', 'green'])
def test_continuity_equation(name, kind):
    "Every conditional path with its velocity (x - x0)/t solves the continuity equation."
    x0, x = torch.randn(50, 3, generator=g()), 2 * torch.randn(50, 3, generator=g(1))
    assert continuity_residual(KernelFlow(name, kind), x, 0.6, x0).max() < 1e-10

def test_sample_prior():
    fl = KernelFlow('gaussian', 'green', T=10.)
    data = torch.full((5, 2), 100.)
    assert fl.sample_prior(20_000, 2, g()).mean(0).abs().max() < 0.3
    assert (fl.sample_prior(20_000, 2, g(), data=data).mean(0) - 100).abs().max() < 0.3

def test_kernel_sample_single_point():
    "With one data point D = y, so x - y scales exactly with t: the sampler lands at y + (x_T - y) t_min / T."
    y = torch.tensor([[1., -2.]], dtype=torch.float64)
    fl = KernelFlow('cauchy', 'green', T=10., t_min=1e-3)
    xT = fl.sample_prior(100, 2, g(), dtype=torch.float64)
    out = kernel_sample(fl.oracle(y), xT, fl.T, fl.t_min, steps=200)
    assert torch.allclose(out, y + (xT - y) * fl.t_min / fl.T, rtol=1e-3, atol=1e-3)
    traj = kernel_sample(fl.oracle(y), xT, fl.T, fl.t_min, steps=5, return_traj=True)
    assert traj.shape == (6, 100, 2)
    with pytest.raises(ValueError, match='method'): kernel_sample(fl.oracle(y), xT, 10., 1e-3, method='rk9')

def test_exact_oracle_lands_on_points():
    "The exact field of a finite set sends the exact prior onto the points with frequencies = weights."
    pts = torch.tensor([[-1., 0.], [1., 0.], [0., 2.]], dtype=torch.float64)
    fl = KernelFlow('cauchy', 'green', T=20., t_min=1e-5)
    xs = kernel_sample(fl.oracle(pts), fl.sample_prior(3000, 2, g(), data=pts, dtype=torch.float64), fl.T, fl.t_min, steps=40)
    d, idx = torch.cdist(xs, pts).min(1)
    assert (d < 0.01).double().mean() > 0.995   # the Cauchy tail: a draw at |z| ~ 1e4 only arrives near t ~ T/|z|
    assert stats.chisquare(torch.bincount(idx, minlength=3).numpy()).pvalue > 1e-3

# PFGM
def test_poisson_field_is_the_cauchy_posterior():
    "t F_x / F_t = x - D with D the Cauchy kernel flow's posterior mean."
    data = torch.randn(40, 2, generator=g(), dtype=torch.float64)
    x = 3 * torch.randn(10, 2, generator=g(1), dtype=torch.float64)
    F = poisson_field(x, 0.8, data)
    assert F.shape == (10, 3) and bool((F[:, 2] < 0).all())
    assert torch.allclose(x - 0.8 * F[:, :2] / F[:, 2:], pfgm().x0(x, 0.8, data), atol=1e-10)

def test_poisson_field_point_charge():
    "One charge at the origin: F = -(x, t) / (S_d r^(d+1)) with S_d the area of the unit sphere in R^(d+1)."
    x = torch.tensor([[3., 4.]], dtype=torch.float64)
    F = poisson_field(x, 12., torch.zeros(1, 2, dtype=torch.float64))
    r = 13.
    assert torch.allclose(F, -torch.tensor([[3., 4., 12.]], dtype=torch.float64) / (4 * math.pi * r**3))

def test_pfgm_prior_radius():
    "In d = 2 the plane prior's radius has CDF 1 - T / sqrt(T^2 + r^2)."
    T = 40.
    r = pfgm_prior(20_000, 2, T, g(), torch.float64).norm(dim=1).numpy()
    assert stats.kstest(r, lambda x: 1 - T / (T**2 + x**2)**0.5).pvalue > 1e-3
    assert pfgm(T=7.).T == 7. and pfgm().prior.name == 'cauchy'

def test_kernel_denoiser_and_training():
    torch.manual_seed(0)
    model = KernelDenoiser(dn.MLP(2, hidden=32, depth=1, log_time=True))
    x = torch.randn(7, 2) * 1e4
    assert model(x, torch.ones(7)).shape == (7, 2)
    fl = KernelFlow('gaussian', 'linear')
    data = torch.randn(200, 2, generator=g()) * 0.1 + 1
    tr = KernelFlowTrainer(model.net, fl, data, 'conditional', batch_size=64).fit(150, progress=False)
    losses = tr.losses
    assert len(losses) == 150 and sum(losses[-20:]) < 0.3 * sum(losses[:20]) and isinstance(tr.model(), KernelDenoiser)
    with pytest.raises(ValueError, match="target='score'"): KernelFlowTrainer(model.net, fl, data, target='score')
    with pytest.raises(ValueError, match='flow: expected a KernelFlow'): KernelFlowTrainer(model.net, 'vp', data)

# rectified flow
def _point_den(y): return dn.EmpiricalOracle(y).denoiser(dn.get_path('linear'))

def test_flow_euler_single_point_exact():
    "One data point: straight lines, so one Euler step is exact and straightness is 0."
    y = torch.tensor([[1., -2.]])
    den, P = _point_den(y), dn.get_path('linear')
    z = P.prior(50, (2,), generator=g(), dtype=torch.float64)   # float64: the oracle re-checks t in x's dtype
    x1 = flow_euler(den, z, 1)
    xs = flow_euler(den, z, 50)
    assert torch.allclose(x1, xs, atol=1e-4)
    assert straightness(den, z) < 1e-8
    assert flow_euler(den, z, 4, return_traj=True).shape == (5, 50, 2)

def test_straightness_positive_for_two_points():
    den = _point_den(torch.tensor([[-1., 0.], [1., 0.]]))
    z = dn.get_path('linear').prior(200, (2,), generator=g(), dtype=torch.float64)
    assert straightness(den, z) > 0.1

def test_reflow_pairs_and_steps():
    y = torch.tensor([[1., -2.], [-1., 0.5]])
    den, P = _point_den(y), dn.get_path('linear')
    x0, eps = reflow_pairs(den, 64, steps=200, generator=g(), dtype=torch.float64)
    z = P.prior(64, (2,), generator=g(), dtype=torch.float64)   # same generator seed: the same prior draw
    assert torch.allclose(P.alpha(P.t_max).item() * x0 + P.sigma(P.t_max).item() * eps, z, atol=1e-5)
    assert torch.cdist(x0, y.double()).min(1).values.max() < 0.05
    x0, eps = x0.float(), eps.float()
    def first_losses(noise):   # identical nets and draws: only the coupling's noise differs
        torch.manual_seed(0)
        tr = ReflowTrainer(dn.MLP(2, hidden=16, depth=1), P, (x0, noise), param='velocity', batch_size=16, device='cpu')
        steps = list(tr.steps(3))
        assert len(steps) == 3 and tr.step == 3
        return [s.loss for s in steps]
    # the steps train on the given pairs: the same coupling repeats exactly, another noise gives other losses
    assert first_losses(eps) == first_losses(eps.clone()) != first_losses(-eps)

# cold diffusion
def test_blur_matrix():
    B = blur_matrix(8, 1.5)
    assert torch.allclose(B.sum(1), torch.ones(64, dtype=torch.float64))
    assert torch.equal(blur_matrix(8, 0.), torch.eye(64, dtype=torch.float64))
    x = torch.randn(3, 1, 8, 8, generator=g())
    b = Blur(levels=4, sigma_max=2.)
    assert torch.allclose(b(x, 0), x) and b(x, 4).shape == x.shape
    assert b(x, 4).flatten(1).var(1).max() < x.flatten(1).var(1).min()

def test_mask_and_additive():
    m = Mask(levels=64, fill=0.)
    x = torch.ones(2, 1, 8, 8)
    for t in (0, 5, 64): assert (m(x, t) == 0).flatten(1).sum(1).tolist() == [t, t]
    a = Additive(torch.tensor([1., 2.]), levels=3)
    assert torch.allclose(a(torch.zeros(2, 2), 3), torch.tensor([[3., 6.], [3., 6.]]))

@pytest.mark.parametrize('method', ['naive', 'improved'])
def test_cold_sample_exact_restorer(method):
    "With the exact restorer both samplers return x0 (the naive one re-degrades to level 0; the improved one telescopes)."
    x0 = torch.randn(4, 1, 8, 8, generator=g())
    for deg in (Blur(levels=5), Mask(levels=20)):
        out = cold_sample(lambda x, t: x0, deg, deg(x0, deg.levels), method=method)
        assert torch.allclose(out, x0, atol=1e-5)

def test_cold_sample_additive_any_restorer():
    x0 = torch.randn(6, 3, generator=g())
    a = Additive(torch.tensor([1., -2., 0.5]), levels=8)
    assert torch.allclose(cold_sample(lambda x, t: x, a, a(x0, 8), method='improved'), x0, atol=1e-5)
    assert not torch.allclose(cold_sample(lambda x, t: x, a, a(x0, 8), method='naive'), x0, atol=1e-1)
    with pytest.raises(ValueError, match='method'): cold_sample(lambda x, t: x, a, x0, method='hot')

def test_restorer_steps_learns():
    torch.manual_seed(0)
    data = torch.randn(256, 1, 8, 8, generator=g()) * 0.1
    net = dn.MLP(64, hidden=64, depth=1)
    losses = RestorerTrainer(net, Blur(levels=4), data, batch_size=32).fit(100, progress=False).losses
    assert sum(losses[-10:]) < sum(losses[:10])
    with pytest.raises(ValueError, match='degrade: expected'): RestorerTrainer(net, lambda x, t: x, data)

# masking model
def _table(L=3, V=3, seed=0):
    p = torch.rand(*[V] * L, generator=g(seed), dtype=torch.float64)**3
    return p / p.sum()

def test_mask_marginals_brute_force():
    p = _table()
    xt = (MASK, 2, MASK)
    m = mask_marginals(p, xt)
    sub = p[:, 2, :] / p[:, 2, :].sum()
    assert torch.allclose(m[0], sub.sum(1)) and torch.allclose(m[2], sub.sum(0))
    assert torch.allclose(m[1], torch.tensor([0., 0., 1.], dtype=torch.float64))

def test_unmask_exact():
    "One at a time with exact marginals reproduces p; all at once gives the product of the marginals."
    p = _table()
    assert torch.allclose(unmask_exact(p, 1), p, atol=1e-14)
    marg = [p.sum(dim=tuple(j for j in range(3) if j != i)) for i in range(3)]
    prod = marg[0][:, None, None] * marg[1][None, :, None] * marg[2][None, None, :]
    assert torch.allclose(unmask_exact(p, 3), prod, atol=1e-14)

def test_unmask_sample_chi2():
    p = _table(L=2, V=3)
    s = unmask_sample(p, 2000, k=1, generator=g())
    counts = torch.bincount(s[:, 0] * 3 + s[:, 1], minlength=9).double()
    keep = p.flatten() > 1e-3
    exp = p.flatten()[keep] / p.flatten()[keep].sum() * counts[keep].sum()
    assert stats.chisquare(counts[keep].numpy(), exp.numpy()).pvalue > 1e-3

# theory
def test_sm_csm_gap_is_the_constant():
    "For one Gaussian N(0, c^2 I): the gap is d/sigma^2 - d/(alpha^2 c^2 + sigma^2), whatever the model."
    c, d, P, t = 0.5, 2, dn.get_path('vp'), 0.4
    gm = dn.GaussianMixture(torch.zeros(1, d), torch.eye(d)[None] * c**2, torch.ones(1))
    a, s = P.alpha(t).item(), P.sigma(t).item()
    const = d / s**2 - d / (a**2 * c**2 + s**2)
    for f in (lambda x, tt: torch.zeros_like(x), lambda x, tt: -x + 1, lambda x, tt: gm.score(x, tt, P)):
        sm, csm, gap = sm_csm(f, gm, P, t, n=200_000, generator=g())
        assert abs(gap - const) < 0.02 * const and csm >= sm

def test_w2_bound_gaussian():
    w2, bound = w2_bound_gaussian([1.], 0., 0.)
    assert w2 < 1e-7 and bound == 0
    s0, delta, T = 0.8, 0.3, 5.
    w2, bound = w2_bound_gaussian([s0], [delta], 0., T=T)
    sd = math.sqrt(s0**2 + T**2) * (s0**2 / (s0**2 + T**2))**((1 + delta) / 2)
    assert abs(w2 - abs(sd - s0)) < 1e-6
    assert abs(w2 - bound) < 1e-4 * bound            # attained in one dimension
    w2, bound = w2_bound_gaussian([0.3, 1.], [0.2, -0.3], 0.)
    assert w2 < 0.95 * bound                          # strict with two contraction rates
    w2, bound = w2_bound_gaussian([1.], 0., [0.1])
    assert 0 < w2 <= bound * (1 + 1e-6)

def test_logistic_log_ratio():
    "p = N(0, 1), q = N(1, 1): log p/q = 1/2 - x."
    w = logistic_log_ratio(torch.randn(100_000, generator=g()), torch.randn(100_000, generator=g(1)) + 1)
    assert torch.allclose(w, torch.tensor([0.5, -1., 0.], dtype=torch.float64), atol=0.05)

def test_monoflow_moves_toward_p():
    x = torch.randn(20_000, generator=g(), dtype=torch.float64) * 0.5 + 2
    (t, x1), = list(monoflow(x, lambda k, gen: torch.randn(k, generator=gen, dtype=torch.float64), steps=1, lr=0.1, generator=g(1)))
    # dx/dt = d/dx log(p/q) = -x + 4 (x - 2): mean moves by -0.1 * 2, variance scales by (1 + 0.1 * 3)^2
    assert abs(t - 0.1) < 1e-12 and abs(x1.mean().item() - 1.8) < 0.02 and abs(x1.var().item() / x.var().item() - 1.69) < 0.03

# general conditional paths: any diffnb path as the construction, any prior
@pytest.mark.parametrize('name', ['gaussian', 'laplace', 'uniform', 'cauchy', 'tanh'])
@pytest.mark.parametrize('path', ['trig', 'vp', 'linear', 'ou'])
def test_path_construction_continuity(name, path):
    "x_t = alpha x0 + sigma z with velocity alpha' x0 + (sigma'/sigma)(x - alpha x0) solves the continuity equation (eq. 15.22, 15.24)."
    x0, x = torch.randn(50, 2, generator=g(), dtype=torch.float64), 2 * torch.randn(50, 2, generator=g(1), dtype=torch.float64)
    P = dn.get_path(path)
    assert continuity_residual(KernelFlow(name, P), x, 0.3 * P.t_max, x0).max() < 1e-10

@pytest.mark.parametrize('path', ['trig', 'vp', 'edm'])
def test_path_construction_gaussian_is_the_empirical_oracle(path):
    "With the Gaussian prior, D and the marginal field of a path construction are dn.EmpiricalOracle's on that path."
    P = dn.get_path(path)
    data = torch.randn(20, 2, generator=g(), dtype=torch.float64)
    x = 2 * torch.randn(30, 2, generator=g(1), dtype=torch.float64)
    t = 0.4 * P.t_max
    den = dn.EmpiricalOracle(data).denoiser(P)
    tt = torch.full((30,), t, dtype=torch.float64)
    fl = KernelFlow('gaussian', P)
    assert torch.allclose(fl.x0(x, t, data), den.x0(x, tt), atol=1e-10)
    assert torch.allclose(fl.velocity(x, t, data), den.velocity(x, tt), atol=1e-9)
    assert (fl.T, fl.t_min) == (P.t_max, P.t_min)

def test_path_construction_lands_on_points():
    "A uniform prior on the trigonometric path: the exact field sends the exact prior onto the points with frequencies 1/n."
    pts = torch.tensor([[-1., 0.], [1., 0.], [0., 2.]], dtype=torch.float64)
    fl = KernelFlow('uniform', dn.get_path('trig', t_min=1e-4))
    xs = kernel_sample(fl.oracle(pts), fl.sample_prior(3000, 2, g(), data=pts, dtype=torch.float64), steps=60, flow=fl)
    d, idx = torch.cdist(xs, pts).min(1)
    assert (d < 0.01).double().mean() > 0.99
    assert stats.chisquare(torch.bincount(idx, minlength=3).numpy()).pvalue > 1e-3

def test_kernel_sample_flow_equals_both_kinds():
    "For the linear and Green kinds the general drift t f_t equals x - D: kernel_sample with and without flow= agree."
    pts = torch.tensor([[1., -1.], [0., 2.]], dtype=torch.float64)
    for fl in (KernelFlow('laplace', 'linear'), KernelFlow('cauchy', 'green', T=5.)):
        xT = fl.sample_prior(40, 2, g(), dtype=torch.float64)
        assert torch.allclose(kernel_sample(fl.oracle(pts), xT, fl.T, fl.t_min, steps=10), kernel_sample(fl.oracle(pts), xT, steps=10, flow=fl), atol=1e-12)

def test_path_construction_arguments():
    P = dn.get_path('trig')
    with pytest.raises(ValueError, match='construction'): KernelFlow('gaussian', 'trig')
    with pytest.raises(ValueError, match='t_min=1e-05'): KernelFlow('gaussian', P, t_min=1e-5)
    with pytest.raises(ValueError, match='T, t_min'): kernel_sample(lambda x, t: x, torch.zeros(2, 2))

def test_kernel_flow_trainer_saves_a_path_construction(tmp_path):
    fl = KernelFlow('laplace', dn.get_path('vp', beta_max=15.))
    data = torch.randn(64, 2, generator=g())
    tr = KernelFlowTrainer(dn.MLP(2, hidden=16, depth=1, log_time=True), fl, data, 'conditional', batch_size=32)
    for _ in tr.steps(2): pass
    tr.save(tmp_path)
    fl2 = KernelFlowTrainer.load(tmp_path, data=data).path
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    assert fl2.prior.name == 'laplace' and all(torch.allclose(a, b) for a, b in zip(fl.coefs(t), fl2.coefs(t)))

# the gravitational field: shell theorem, and the 1-D Poisson push-forward
def _sphere_nodes(m=96):
    import numpy as np
    u, wu = (torch.tensor(v) for v in np.polynomial.legendre.leggauss(m // 2))
    phi = torch.arange(2 * m, dtype=torch.float64) * math.pi / m
    U, P = torch.meshgrid(u, phi, indexing='ij')
    nodes = torch.stack([(1 - U**2).sqrt() * P.cos(), (1 - U**2).sqrt() * P.sin(), U], -1).reshape(-1, 3)
    return nodes, (wu[:, None] / (4 * m)).expand(m // 2, 2 * m).reshape(-1)

def test_shell_theorem():
    "A uniform shell pulls nothing inside and like a point mass at its centre outside, in R^2 and R^3."
    phi = torch.arange(128, dtype=torch.float64) * 2 * math.pi / 128
    ring = 2 * torch.stack([phi.cos(), phi.sin()], 1)
    for nodes, w, D in ((ring, None, 2), (*_sphere_nodes(), 3)):
        R = nodes[0].norm().item()
        u = torch.nn.functional.normalize(torch.randn(10, D, generator=g(D), dtype=torch.float64), dim=1)
        inside, outside = 0.7 * R * u, 2.5 * R * u
        assert gravity_field(inside, nodes, w).abs().max() < 1e-10
        point = gravity_field(outside, torch.zeros(1, D, dtype=torch.float64))
        assert torch.allclose(gravity_field(outside, nodes, w), point, atol=1e-14)
        assert torch.allclose(point.norm(dim=1), torch.full((10,), 1 / (2 * math.pi * 2.5 * R) if D == 2 else 1 / (4 * math.pi * (2.5 * R)**2), dtype=torch.float64))

def test_poisson_field_is_gravity_one_dimension_up():
    data = torch.randn(7, 2, generator=g(), dtype=torch.float64)
    x = torch.randn(5, 2, generator=g(1), dtype=torch.float64)
    up = gravity_field(torch.cat([x, torch.full((5, 1), 0.3, dtype=torch.float64)], 1), torch.cat([data, torch.zeros(7, 1, dtype=torch.float64)], 1))
    assert torch.allclose(poisson_field(x, 0.3, data), up)
    w = torch.tensor([0.5, 0.5, 0, 0, 0, 0, 0], dtype=torch.float64)
    assert torch.allclose(gravity_field(x, data, w), gravity_field(x, data[:2]))

@pytest.mark.parametrize('d', [1, 2, 3])
def test_poisson_kernel_normalised(d):
    "C_d t (t^2 + |x|^2)^(-(d+1)/2) integrates to 1 in R^d (radial quadrature with r = t tan(theta))."
    import numpy as np
    u, w = (torch.tensor(v) for v in np.polynomial.legendre.leggauss(200))
    th = (u + 1) * math.pi / 4                                  # (0, pi/2)
    t = 0.7
    r = t * torch.tan(th)
    z = torch.zeros(len(r), d, dtype=torch.float64); z[:, 0] = r
    dens = KernelFlow('cauchy', 'green', T=2.).cond_log_prob(z, t, torch.zeros_like(z)).exp()
    area = 2 * math.pi**(d / 2) / math.gamma(d / 2)
    mass = (w * math.pi / 4 * dens * area * r**(d - 1) * t / torch.cos(th)**2).sum().item()
    assert abs(mass - 1) < 1e-8

def test_poisson_pushforward_1d_is_the_quantile_map():
    "Forward along the exact 1-D PFGM field from t0 to t1: each particle lands on F_t1^-1(F_t0(x)), p_t = data * Cauchy(t)."
    from diffnb.samplers import odeint
    y = torch.tensor([[-1.], [0.5], [2.]], dtype=torch.float64)
    fl = pfgm(T=2., t_min=0.1)
    x = fl.cond_sample(y[torch.randint(0, 3, (300,), generator=g())], 0.1, g(1))
    cdf = lambda v, t: (0.5 + torch.atan((v - y[:, 0]) / t) / math.pi).mean(-1)
    x1 = odeint(lambda t, s: (fl.velocity(s[0], t, y),), (x,), 0.1, 2., rtol=1e-9, atol=1e-9)[0][0]
    u = cdf(x, 0.1)
    lo, hi = torch.full_like(u, -1e6), torch.full_like(u, 1e6)
    for _ in range(200):
        mid = (lo + hi) / 2
        below = cdf(mid[:, None], 2.) < u
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    assert (x1[:, 0] - (lo + hi) / 2).abs().max() < 1e-5

# minibatch optimal-transport couplings
def test_ot_pairs_exact():
    import itertools
    a, b = torch.randn(40, 1, generator=g()), torch.randn(40, 1, generator=g(1))
    assert torch.equal(b[ot_pairs(a, b)].argsort(0), a.argsort(0))            # 1-D: the monotone coupling
    a, b = torch.randn(6, 3, generator=g(2), dtype=torch.float64), torch.randn(6, 3, generator=g(3), dtype=torch.float64)
    best = min(((a - b[list(q)])**2).sum().item() for q in itertools.permutations(range(6)))
    assert abs(((a - b[ot_pairs(a, b)])**2).sum().item() - best) < 1e-12
    assert sorted(ot_pairs(a, b).tolist()) == list(range(6))
    with pytest.raises(ValueError, match='eps: shape'): ot_pairs(a, b[:5])

def test_minibatch_ot_trainer_batches_are_optimal_couplings():
    data = torch.randn(500, 2, generator=g())
    tr = MinibatchOTTrainer(dn.MLP(2, hidden=16, depth=1), 'linear', data, param='velocity', batch_size=64, seed=3)
    ref = dn.Trainer(dn.MLP(2, hidden=16, depth=1), 'linear', data, param='velocity', batch_size=64, seed=3)
    x0, _, t, eps = tr._batch()
    x0r, _, tr_, epsr = ref._batch()
    assert torch.equal(x0, x0r) and torch.equal(t, tr_) and torch.equal(eps.sort(0).values, epsr.sort(0).values)   # the same draws, re-paired
    assert torch.equal(ot_pairs(x0, eps), torch.arange(64))              # already optimal
    assert ((x0 - eps)**2).sum() < 0.5 * ((x0r - epsr)**2).sum()

def test_minibatch_ot_straightens():
    "Same net, data and budget: the OT-coupled flow is straighter and its one-step Euler error smaller."
    data = dn.ring_mixture(k=4, radius=2., stds=(0.3, 0.3)).sample(1000, generator=g())
    P = dn.get_path('linear')
    z = P.prior(400, (2,), generator=g(1))
    out = {}
    for cls in (dn.Trainer, MinibatchOTTrainer):
        torch.manual_seed(0)
        tr = cls(dn.MLP(2, hidden=32, depth=2), P, data, param='velocity', batch_size=128, lr=3e-3, seed=1)
        for _ in tr.steps(250): pass
        den = tr.denoiser()
        with torch.no_grad(): out[cls.__name__] = (straightness(den, z), ((flow_euler(den, z, 1) - flow_euler(den, z, 50))**2).sum(1).mean().item())
    assert out['MinibatchOTTrainer'][0] < 0.3 * out['Trainer'][0] and out['MinibatchOTTrainer'][1] < 0.3 * out['Trainer'][1]

# Monoflow: the generator distils the particle flow
def test_generator_trainer_follows_the_flow():
    "A linear generator trained by distillation follows b <- b - lr b, a <- a + lr (1/a - a) (the exact log ratio's step)."
    gen = torch.nn.Linear(1, 1)
    with torch.no_grad(): gen.weight.fill_(0.8); gen.bias.fill_(1.)
    tr = GeneratorTrainer(gen, 'identity', torch.randn(20_000, 1, generator=g()), batch_size=4096, lr=0.05, seed=1)
    m, a = 1., 0.8
    for _ in tr.steps(20): m, a = m - 0.05 * m, a + 0.05 * (1 / a - a)
    assert abs(gen.bias.item() - m) < 0.03 and abs(gen.weight.item()**2 - a**2) < 0.03
    assert isinstance(tr.opt, torch.optim.SGD) and tr.model() is tr.ema.net

@pytest.mark.parametrize('h', MONOFLOW_H)
def test_generator_gradient_identity(h):
    "Eq. 19.10: the distillation loss and E[-h(D(g(z)))] have the same gradient at the current parameters."
    torch.manual_seed(0)
    gen = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    tr = GeneratorTrainer(gen, h, torch.randn(100, 1, generator=g()))
    z, real = torch.randn(32, 1, generator=g(1)), torch.randn(32, 1, generator=g(2)) + 0.5
    g1 = torch.autograd.grad(tr.loss((z, None, torch.zeros(32), real)), list(gen.parameters()))
    x = gen(z)
    w = logistic_log_ratio(real.flatten().double(), x.detach().flatten().double())
    D = w[0] + w[1] * x.double() + w[2] * x.double()**2
    g2 = torch.autograd.grad((-D if h == 'identity' else torch.nn.functional.logsigmoid(D).neg()).mean(), list(gen.parameters()))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2))

def test_generator_trainer_arguments():
    gen = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="h='wgan'"): GeneratorTrainer(gen, 'wgan', torch.randn(10, 1))
    with pytest.raises(ValueError, match='needs \\(n, 1\\)'): GeneratorTrainer(torch.nn.Linear(2, 2), 'identity', torch.randn(10, 2))

# the unified framework: corruptions with noise, admissible bridges, estimate and correct
def test_gaussian_noise_corruption():
    C = GaussianNoise('vp', levels=8)
    x0 = torch.randn(100_000, 2, generator=g(), dtype=torch.float64)
    assert torch.equal(C(x0, 0, torch.randn_like(x0)), x0)                      # level 0 is the data
    xt, eps = C.noise(x0, 5, g(1))
    assert torch.allclose(C.inverse(x0, xt, 5), eps) and torch.allclose(C.a[5]**2 + C.s[5]**2, torch.tensor(1., dtype=torch.float64))
    P = dn.get_path('vp')
    assert torch.allclose(C.a[5], P.alpha(C.times[5])) and abs(C.times[-1].item() - P.t_max) < 1e-12
    lv = torch.randint(0, 9, (100_000,), generator=g(2))
    z = (C.noise(x0, lv, g(3))[0] - C.a[lv][:, None] * x0)[lv > 0] / C.s[lv][lv > 0][:, None]   # per-row levels
    assert abs(z.std().item() - 1) < 0.01
    with pytest.raises(ValueError, match='levels'): GaussianNoise('vp', levels=0)
    with pytest.raises(ValueError, match='t=0'): C.inverse(x0, xt, 0)

def test_degraded_corruption():
    x0 = torch.randn(20_000, 1, 8, 8, generator=g())
    C = Degraded(Blur(levels=4), noise=0.3)
    xt, e = C.noise(x0, 3, g(1))
    assert torch.allclose(C.inverse(x0, xt, 3), e, atol=1e-6) and abs(e.std().item() - 0.3) < 0.005
    assert torch.allclose(Degraded(Blur(levels=4))(x0, 2, 0.), Blur(levels=4)(x0, 2))
    with pytest.raises(ValueError, match='noise=-1'): Degraded(Blur(), noise=-1)
    with pytest.raises(ValueError, match='degrade: expected'): Degraded(lambda x, t: x)

def test_substitution_forward():
    S = Substitution(4, 5)
    x0 = torch.randint(0, 4, (50_000, 5), generator=g())
    xt, eps = S.noise(x0, 3, g(1))
    assert eps.shape == (50_000, 2, 5) and bool(((xt != x0).sum(1) == 3).all())          # exactly t changes, each to another token
    assert stats.chisquare((xt != x0).sum(0).numpy()).pvalue > 1e-3                     # at uniformly random positions
    shift = ((xt - x0) % 4)[xt != x0]
    assert stats.chisquare(torch.bincount(shift, minlength=4)[1:].numpy()).pvalue > 1e-3  # and uniformly among the other tokens
    assert torch.equal(S(x0, 0, eps), x0) and bool((S(x0, 5, eps) != x0).all())
    with pytest.raises(ValueError, match='vocab=1'): Substitution(1, 3)

def test_substitution_log_prob_normalised():
    S = Substitution(3, 3)
    seqs = sequences(3, 3)
    for t in range(4):
        q = S.log_prob(seqs[None], seqs[:, None], t).exp()          # [x0, x_t]
        assert torch.allclose(q.sum(1), torch.ones(27, dtype=torch.float64))

@pytest.mark.parametrize('kind', BRIDGES)
def test_bridge_marginal_condition_gaussian(kind):
    "x_t ~ q(x_t | x0), then the bridge to s: x_s ~ N(a_s x0, s_s^2) for each admissible kernel (eq. 10.7)."
    C = GaussianNoise('vp', levels=10)
    x0 = torch.tensor([[1.5, -0.5]], dtype=torch.float64).expand(100_000, 2)
    xt, _ = C.noise(x0, 8, g())
    z = ((bridge(C, x0, xt, 8, 2, kind, eta=0.4, generator=g(1)) - C.a[2] * x0) / C.s[2]).flatten()
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01 and stats.kstest(z[:20_000].numpy(), 'norm').pvalue > 1e-3

def test_partial_bridge_is_ddim():
    "On GaussianNoise, the partial bridge with eta is DDIM's kernel (Song et al. 2021) with sigma = eta * sigma_s."
    C = GaussianNoise('trig', levels=6)
    x0, xt = torch.randn(8, 3, generator=g(), dtype=torch.float64), torch.randn(8, 3, generator=g(1), dtype=torch.float64)
    a_t, s_t, a_s, s_s = (v.item() for v in (C.a[5], C.s[5], C.a[2], C.s[2]))
    for eta in (0., 0.3, 1.):
        xs = bridge(C, x0, xt, 5, 2, 'partial', eta=eta, generator=g(2))
        sig = eta * s_s
        ddim = a_s * x0 + math.sqrt(s_s**2 - sig**2) * (xt - a_t * x0) / s_t + sig * torch.randn(8, 3, generator=g(2), dtype=torch.float64)
        assert torch.allclose(xs, ddim, atol=1e-12)
    assert torch.allclose(bridge(C, x0, xt, 5, 2, 'inverse'), bridge(C, x0, xt, 5, 2, 'partial', eta=0.))

def test_bridge_arguments():
    S = Substitution(3, 3)
    x = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="kind='partial'"): bridge(S, x, x, 2, 1, 'partial')
    with pytest.raises(ValueError, match='t=2, s=2'): bridge(S, x, x, 2, 2)
    with pytest.raises(ValueError, match='eta=2'): bridge(GaussianNoise('vp', 3), x.double(), x.double(), 2, 1, 'partial', eta=2)
    with pytest.raises(ValueError, match="kind='ddim'"): bridge(S, x, x, 2, 1, 'ddim')

@pytest.mark.parametrize('kind', ['fresh', 'inverse'])
def test_substitution_bridge_law(kind):
    "The bridges' tables match their draws, for an (x0, x_t) pair the forward process makes and for one it cannot; the marginal condition holds exactly."
    S = Substitution(3, 3)
    seqs = sequences(3, 3)
    for b in (26, 2):                      # x0 = (0, 0, 0): x_t = (2, 2, 2) differs in 3 places, (0, 0, 2) in 1
        K = S.bridge_law(3, 1, kind)[0, b]
        xs = bridge(S, seqs[0].expand(100_000, 3), seqs[b].expand(100_000, 3), 3, 1, kind, generator=g(b))
        counts = torch.bincount((xs * torch.tensor([9, 3, 1])).sum(1), minlength=27).double()
        keep = K > 0
        assert counts[~keep].sum() == 0 and (K.sum() - 1).abs() < 1e-12
        if keep.sum() > 1: assert stats.chisquare(counts[keep].numpy(), (K[keep] * 100_000).numpy()).pvalue > 1e-3
    for t in range(1, 4):
        q = lambda s: S.log_prob(seqs[None], seqs[:, None], s).exp()
        assert torch.allclose(torch.einsum('ab,abc->ac', q(t), S.bridge_law(t, t - 1, kind)), q(t - 1), atol=1e-12)

def _mixture_posterior(mu, v, pi, C, draw=True):
    "p(x0 | x_t) of a 1-D Gaussian mixture under GaussianNoise: a draw or the mean."
    def post(x, t, generator=None):
        a, s = C.a[t].item(), C.s[t].item()
        c = 1 / (1 / v + a**2 / s**2); m = c * (mu / v + a * x / s**2)
        r = torch.softmax(pi.log() - 0.5 * (x - a * mu)**2 / (a**2 * v + s**2) - 0.5 * torch.log(a**2 * v + s**2), -1)
        if not draw: return (r * m).sum(-1, keepdim=True)
        k = torch.multinomial(r, 1, generator=generator)
        return m.gather(1, k) + c[k[:, 0]][:, None].sqrt() * torch.randn(len(x), 1, generator=generator, dtype=x.dtype)
    return post

@pytest.mark.parametrize('kind', BRIDGES)
def test_udm_sample_exact_with_exact_posterior(kind):
    "Estimate and correct with exact posterior draws samples p0 exactly, whatever the admissible bridge, at 4 levels."
    mu, v, pi = torch.tensor([-1., 1.5], dtype=torch.float64), torch.tensor([0.04, 0.25], dtype=torch.float64), torch.tensor([0.4, 0.6], dtype=torch.float64)
    C = GaussianNoise('vp', levels=4)
    k = torch.multinomial(pi, 20_000, replacement=True, generator=g())
    xT = C.noise((mu[k] + v[k].sqrt() * torch.randn(20_000, generator=g(1), dtype=torch.float64))[:, None], 4, g(2))[0]
    out = udm_sample(_mixture_posterior(mu, v, pi, C), C, xT, kind=kind, eta=0.5, generator=g(3))[:, 0].numpy()
    cdf = lambda x: (pi * torch.special.ndtr((torch.as_tensor(x)[:, None] - mu) / v.sqrt())).sum(-1).numpy()
    assert stats.kstest(out, cdf).pvalue > 1e-3

def test_udm_iter_steps_and_arguments():
    C = GaussianNoise('vp', levels=3)
    post = lambda x, t, generator: torch.zeros_like(x)
    steps = list(udm_iter(post, C, torch.ones(4, 2), kind='inverse'))
    assert [s[0] for s in steps] == [2, 1, 0] and torch.equal(steps[-1][1], torch.zeros(4, 2))
    assert torch.equal(udm_sample(post, C, torch.ones(4, 2), t_start=0), torch.ones(4, 2))
    with pytest.raises(ValueError, match='t_start=0'): udm_sample(post, C, torch.ones(4, 2), t_start=0, output='estimate')
    with pytest.raises(ValueError, match='t_start=5'): udm_sample(post, C, torch.ones(4, 2), t_start=5)
    with pytest.raises(ValueError, match="output='x'"): udm_sample(post, C, torch.ones(4, 2), output='x')

def test_cold_sample_is_udm_sample():
    "Bansal et al.'s two samplers are the fresh and inverse bridges of Degraded (noise 0)."
    x0 = torch.randn(4, 1, 8, 8, generator=g())
    b = Blur(levels=5)
    restore = lambda x, t: 0.9 * x + 0.01 * t[:, None, None, None]
    post = lambda x, t, generator: restore(x, torch.full((len(x),), float(t)))
    for method, kind in (('naive', 'fresh'), ('improved', 'inverse')):
        assert torch.allclose(cold_sample(restore, b, b(x0, 5), method=method), udm_sample(post, Degraded(b), b(x0, 5), kind=kind), atol=1e-6)

# the editing model, exact by enumeration
def _ptab(V=3, L=3, seed=1):
    p = torch.rand(*[V] * L, generator=g(seed), dtype=torch.float64)**4
    return p / p.sum()

def test_exact_posterior_and_factorised():
    S, p = Substitution(3, 3), _ptab()
    seqs = sequences(3, 3)
    Q = exact_posterior(p, S, 2)
    xt = 7
    w = p.flatten() * S.log_prob(seqs[xt][None], seqs, 2).exp()
    assert torch.allclose(Q[xt], w / w.sum())
    F = factorised(Q, 3, 3)
    assert torch.allclose(F.sum(1), torch.ones(27, dtype=torch.float64))
    for i in range(3):                                             # the same per-position marginals as Q
        oh = torch.nn.functional.one_hot(seqs[:, i], 3).double()
        assert torch.allclose(F @ oh, Q @ oh)
    prod = torch.full((27,), 1 / 27, dtype=torch.float64)[None].expand(27, 27)
    assert torch.allclose(factorised(prod, 3, 3), prod)            # a product already: unchanged

def test_udm_exact_editing():
    "Exact posterior: both samplers exact. The best per-token posterior: the improved sampler has the smaller error (J. Su, chapter 11.4)."
    S, p = Substitution(3, 3), _ptab()
    tv = lambda q: 0.5 * (q - p).abs().sum().item()
    for kind in ('fresh', 'inverse'): assert tv(udm_exact(p, S, kind=kind)) < 1e-12
    Qf = lambda t: factorised(exact_posterior(p, S, t), 3, 3)
    assert tv(udm_exact(p, S, Qf, 'inverse')) < 0.75 * tv(udm_exact(p, S, Qf, 'fresh'))
    assert tv(udm_exact(p, S, kind='inverse', start='uniform')) > 1e-3       # random start tokens are not q(x_L)

def test_udm_sample_matches_udm_exact():
    "The sampler with a tabulated (factorised) posterior draws from udm_exact's law."
    S, p = Substitution(3, 3), _ptab()
    seqs = sequences(3, 3)
    idx = lambda x: (x * torch.tensor([9, 3, 1])).sum(1)
    tables = {t: factorised(exact_posterior(p, S, t), 3, 3) for t in (1, 2, 3)}
    post = lambda x, t, generator: seqs[torch.multinomial(tables[t][idx(x)], 1, generator=generator)[:, 0]]
    x0 = seqs[torch.multinomial(p.flatten(), 20_000, replacement=True, generator=g())]
    out = udm_sample(post, S, S.noise(x0, 3, g(1))[0], kind='inverse', generator=g(2))
    law = udm_exact(p, S, lambda t: tables[t], 'inverse').flatten()
    counts = torch.bincount(idx(out), minlength=27).double()
    keep = law > 1e-3
    assert stats.chisquare(counts[keep].numpy(), (law[keep] / law[keep].sum() * counts[keep].sum()).numpy()).pvalue > 1e-3

# the cross-entropy posterior model
def test_posterior_log_prob_formulas():
    net = lambda x, t: torch.cat([x, torch.zeros_like(x)], 1) + t[:, None]          # mean x + t, log variance t
    P = Posterior(net, 'gaussian', (1,))
    x0, xt = torch.tensor([[0.5]]), torch.tensor([[1.]])
    assert torch.allclose(P.log_prob(x0, xt, 1), torch.tensor(-0.5 * (1.5**2 / math.e + 1 + math.log(2 * math.pi))))
    Pc = Posterior(lambda x, t: torch.log(torch.tensor([[0.2, 0.8, 0.5, 0.5]])).expand(len(x), 4), 'categorical', (2,), vocab=2)
    assert torch.allclose(Pc.log_prob(torch.tensor([[1, 0]]), torch.tensor([[0, 0]]), 1), torch.tensor(math.log(0.8 * 0.5)))
    assert torch.equal(Pc.mean(torch.tensor([[0, 1]]), 1), torch.tensor([[1, 0]]))
    with pytest.raises(ValueError, match='vocab'): Posterior(net, 'categorical', (2,))
    with pytest.raises(ValueError, match="family='poisson'"): Posterior(net, 'poisson', (2,))

def test_posterior_trainer_gaussian_reaches_the_exact_posterior():
    "On N(mu, s^2) data the trained Gaussian posterior's cross-entropy exceeds the exact posterior's by under 0.05 nats (the KL)."
    mu, sd = 0.5, 0.8
    C = GaussianNoise('vp', levels=4)
    torch.manual_seed(0)
    tr = PosteriorTrainer(dn.MLP(1, hidden=32, depth=2, out_dim=2), C, mu + sd * torch.randn(20_000, 1, generator=g()), seed=1)
    for _ in tr.steps(300): pass
    x0 = mu + sd * torch.randn(20_000, 1, generator=g(1))
    t = torch.randint(1, 5, (20_000,), generator=g(2))
    xt = C.noise(x0, t, g(3))[0]
    a, s = C.a[t].float(), C.s[t].float()
    c = 1 / (1 / sd**2 + a**2 / s**2)
    exact = (0.5 * (x0[:, 0] - c * (mu / sd**2 + a * xt[:, 0] / s**2))**2 / c + 0.5 * torch.log(2 * math.pi * c)).mean().item()
    with torch.no_grad(): model = -tr.posterior().log_prob(x0, xt, t).mean().item()
    assert 0 < model - exact < 0.05

def test_posterior_trainer_categorical_and_checkpoint(tmp_path):
    S, p = Substitution(3, 3), _ptab()
    seqs = sequences(3, 3)
    data = seqs[torch.multinomial(p.flatten(), 5000, replacement=True, generator=g())]
    torch.manual_seed(0)
    tr = PosteriorTrainer(dn.MLP(9, hidden=32, depth=1, out_dim=9), S, data, 'categorical', batch_size=128, seed=1)
    for _ in tr.steps(150): pass
    assert sum(tr.losses[-20:]) < 0.8 * sum(tr.losses[:20])
    tr.save(tmp_path)
    tr2 = PosteriorTrainer.load(tmp_path, data=data)
    assert repr(tr2.path) == repr(S) and tr2.family == 'categorical'
    xt = S.noise(data[:50], 2, g(1))[0]
    assert torch.allclose(tr2.posterior()(xt, 2), tr.posterior()(xt, 2))
    with pytest.raises(ValueError, match='corruption: expected'): PosteriorTrainer(dn.MLP(9), 'vp', data)
    with pytest.raises(ValueError, match='vocab'): PosteriorTrainer(dn.MLP(9), GaussianNoise(), data, 'categorical')

# the encoding model
def test_encoded_linear_gaussian_is_closed_form():
    "Linear encoder, Gaussian data: with the exact Gaussian posterior the sampler's estimate is N(0, Sigma)."
    A = torch.tensor([[1.2, 0.3], [-0.4, 0.9]], dtype=torch.float64)
    Sig = torch.tensor([[1., -0.4], [-0.4, 0.6]], dtype=torch.float64)
    lin = torch.nn.Linear(2, 2, bias=False).double()
    with torch.no_grad(): lin.weight.copy_(A)
    C = Encoded(lin, 'vp', levels=5)
    def post(x, t, generator=None):
        a, s = C.a[t].item(), C.s[t].item()
        cov = torch.linalg.inv(torch.linalg.inv(Sig) + a**2 / s**2 * A.T @ A)
        return x @ (cov @ A.T * a / s**2).T + torch.randn(len(x), 2, generator=generator, dtype=x.dtype) @ torch.linalg.cholesky(cov).T
    x0 = torch.randn(40_000, 2, generator=g(), dtype=torch.float64) @ torch.linalg.cholesky(Sig).T
    with torch.no_grad():
        xT, eps = C.noise(x0, 5, g(1))
        assert torch.allclose(xT, C.a[5] * x0 @ A.T + C.s[5] * eps) and torch.allclose(C.inverse(x0, xT, 5), eps)
        out = udm_sample(post, C, xT, generator=g(2), output='estimate')
    assert (torch.cov(out.T) - Sig).abs().max() < 0.03 and out.mean(0).abs().max() < 0.02

def test_encoded_tokens_train_the_encoder():
    emb = TokenEmbedding(3, 2)
    x = torch.tensor([[0, 2, 1]])
    assert emb(x).shape == (1, 6) and torch.allclose(emb(x).reshape(3, 2).pow(2).mean(1), torch.ones(3))   # unit RMS codes
    C = Encoded(emb, 'vp', levels=5)
    assert C.tokens and C.draw(x).shape == (1, 6)
    S, p = Substitution(3, 3), _ptab()
    data = sequences(3, 3)[torch.multinomial(p.flatten(), 4000, replacement=True, generator=g())]
    before = emb.table.detach().clone()
    torch.manual_seed(0)
    tr = PosteriorTrainer(dn.MLP(6, hidden=32, depth=1, out_dim=9), C, data, 'categorical', vocab=3, batch_size=128, seed=1)
    for _ in tr.steps(100): pass
    assert not torch.allclose(emb.table, before) and sum(tr.losses[-20:]) < sum(tr.losses[:20])
    with torch.no_grad(): out = udm_sample(tr.posterior().sample, C, C.noise(data[:10], 5, g(1))[0], generator=g(2), output='estimate')
    assert out.shape == (10, 3) and out.dtype == torch.long
    with pytest.raises(ValueError, match='encoder: expected'): Encoded(lambda x: x)

def test_udm_inverse_bridge_is_the_ddim_sampler():
    "Hot diffusion with the posterior mean and the inverse bridge is DDIM: udm_sample equals dn.sample(method='ddim') on the same grid."
    gm = dn.ring_mixture(k=3, radius=2., stds=(0.3, 0.3))
    C = GaussianNoise('vp', levels=12)
    den = gm.denoiser(C.path)
    post = lambda x, t, generator: den.x0(x, torch.full((len(x),), C.times[t].item(), dtype=x.dtype))
    xT = C.path.prior(64, (2,), generator=g(), dtype=torch.float64)
    ref = dn.sample(den, xT, 'ddim', grid=C.times.flip(0), dtype=torch.float64)
    assert torch.allclose(udm_sample(post, C, xT, output='estimate'), ref, atol=1e-6)
    steps = list(udm_iter(post, C, xT, kind='partial', eta=lambda t: 0.))          # eta per level
    assert torch.allclose(steps[-1][2], ref, atol=1e-6)

def test_restorer_finds_the_conditional_median_of_a_masked_gaussian():
    "Under the l1 loss the best restorer of a masked Gaussian pixel is its conditional mean (the median) given the visible ones; a linear restorer finds it."
    from torch import nn
    class LinearRestorer(nn.Module):
        def __init__(self, d): super().__init__(); self.W = nn.Linear(d, d, bias=False)
        def forward(self, x, t): return self.W(x.flatten(1)).reshape(x.shape)
    L = torch.tensor([[1., 0, 0, 0], [0.8, 0.6, 0, 0], [0.5, 0.3, 0.7, 0], [0.2, -0.4, 0.3, 0.8]])
    C, mask = L @ L.T, Mask(levels=1, size=2, seed=0)
    k = int(mask.masks[1].nonzero()[0]); V = [j for j in range(4) if j != k]
    W_opt = torch.eye(4); W_opt[k, k] = 0; W_opt[k, V] = C[k, V] @ torch.linalg.inv(C[V][:, V])
    tr = RestorerTrainer(LinearRestorer(4), mask, torch.randn(20_000, 4, generator=torch.Generator().manual_seed(0)) @ L.T, batch_size=512, lr=1e-2, seed=0)
    for _ in tr.steps(1500): pass
    assert (tr.model().W.weight.detach() - W_opt)[:, V].abs().max() < 0.03
