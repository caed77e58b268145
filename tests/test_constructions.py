"Unit tests for diffnb.constructions against exact answers: closed-form densities, exact oracles, enumeration."
import math
import pytest
import torch
from scipy import stats
import diffnb as dn
from diffnb.constructions import *

def g(seed=0): return torch.Generator().manual_seed(seed)

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
