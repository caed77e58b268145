"Flows against exact answers: Gaussian-mixture log-densities, quantile maps, round trips, normalisation of a trained model's density."
import math
import numpy as np
import pytest
import torch
from scipy import stats
import diffnb as dn
from diffnb.flows import (odeint, encode, decode, log_prob, bits_per_dim, slerp, interpolate, sdedit, inpaint, ddim_invert,
                          ddim_reconstruct, prior_log_prob, flow, evolve_density, density_rhs, latent_agreement)
from diffnb.metrics import distance_correlation, latent_report, amari_distance, compare_ica

def opaque(gm, p):
    "A Denoiser that sees the mixture only through x0(x, t), as a trained network would."
    p = dn.get_path(p)
    return dn.Denoiser(lambda x, t: gm.x0(x, t, p), p, param='x0')

def gen(s=0): return torch.Generator().manual_seed(s)

@pytest.mark.parametrize('d', [2, 8])
def test_log_prob_matches_exact_mixture(d):
    gm = dn.random_mixture(d, 3, seed=d) if d > 2 else dn.GaussianMixture([[-1., 0.5], [1.5, -0.5]], [0.3, 0.5], [0.4, 0.6])
    den = opaque(gm, 'vp'); p = den.path
    x = gm.sample(16, generator=gen(1), dtype=torch.float64)
    lp = log_prob(den, x, prior=gm.marginal(p, p.t_max), rtol=1e-8, atol=1e-8)
    exact = gm.marginal(p, p.t_min).log_prob(x)
    assert (lp - exact).abs().max() < 1e-3, (lp - exact).abs().max()

def test_log_prob_at_t0_and_default_prior():
    "log p_t0 at an intermediate time; the default prior is the path's N(0, prior_std^2), close to the exact p_T on VP."
    gm = dn.GaussianMixture([[-1., 0.5], [1.5, -0.5]], [0.3, 0.5])
    den = opaque(gm, 'vp'); p = den.path
    x = gm.marginal(p, 0.3).sample(8, generator=gen(2), dtype=torch.float64)
    lp = log_prob(den, x, t0=0.3, prior=gm.marginal(p, p.t_max), rtol=1e-8, atol=1e-8)
    assert (lp - gm.marginal(p, 0.3).log_prob(x)).abs().max() < 1e-3
    lp_default = log_prob(den, x, t0=0.3, rtol=1e-8, atol=1e-8)
    assert (lp_default - lp).abs().max() < 1e-2                      # p_T is N(0, I) up to alpha(1) = 0.006
    xT = torch.randn(5, 2, dtype=torch.float64)
    assert torch.allclose(prior_log_prob(p, xT), torch.distributions.Normal(0., p.prior_std().item()).log_prob(xT).sum(1))

@pytest.mark.parametrize('probe', ['rademacher', 'gaussian'])
def test_hutchinson_unbiased_within_stderr(probe):
    gm = dn.random_mixture(4, 3, seed=3)
    den = opaque(gm, 'vp')
    x = gm.sample(6, generator=gen(4), dtype=torch.float64)
    exact = log_prob(den, x, rtol=1e-5, atol=1e-5)
    est, se = log_prob(den, x, div='hutchinson', n_probes=32, probe=probe, return_stderr=True, generator=gen(5), rtol=1e-5, atol=1e-5)
    z = (est - exact) / se
    assert z.abs().max() < 4 and abs(z.mean()) < 4 / math.sqrt(len(z)), z
    again = log_prob(den, x, div='hutchinson', n_probes=32, probe=probe, generator=gen(5), rtol=1e-5, atol=1e-5)
    assert torch.equal(again, est)                                   # same generator, same probes, same answer
    e, s = log_prob(den, x, return_stderr=True)
    assert torch.equal(s, torch.zeros_like(s))

def test_roundtrip_and_gaussian_latent():
    gm = dn.random_mixture(8, 4, seed=0)
    den = gm.denoiser('vp')
    x = gm.sample(400, generator=gen(0), dtype=torch.float64)
    z, info = encode(den, x, rtol=1e-6, atol=1e-6, return_info=True)
    xr = decode(den, z, rtol=1e-6, atol=1e-6)
    assert ((xr - x).norm(dim=1) / x.norm(dim=1)).max() < 1e-4
    assert info.nfe > 0 and info.steps > 0 and info.nfe <= 6 * (info.steps + info.rejected) + 2
    assert min(stats.kstest(z[:, i].numpy(), 'norm').pvalue for i in range(8)) > 1e-3 / 8

def test_encode_is_the_quantile_map_in_1d():
    gm = dn.GaussianMixture([[-2.], [1.5]], [0.3, 0.6], [0.3, 0.7]); p = dn.get_path('vp')
    norm = torch.distributions.Normal
    def cdf(g, v): return (g.weights * norm(g.means[:, 0], g.covs[:, 0, 0].sqrt()).cdf(v[:, None])).sum(1)
    x = torch.linspace(-3.5, 3.5, 21, dtype=torch.float64)[:, None]
    u, gT = cdf(gm.marginal(p, p.t_min), x[:, 0]), gm.marginal(p, p.t_max)
    lo, hi = torch.full_like(u, -20.), torch.full_like(u, 20.)
    for _ in range(80):
        m = (lo + hi) / 2; below = cdf(gT, m) < u
        lo, hi = torch.where(below, m, lo), torch.where(below, hi, m)
    z = encode(gm.denoiser(p), x, rtol=1e-8, atol=1e-8)[:, 0] * p.prior_std()
    assert (z - (lo + hi) / 2).abs().max() < 1e-5

def test_fixed_step_methods_converge_at_their_order():
    gm = dn.GaussianMixture([[-1., 0.], [1., 0.5]], [0.5, 0.4])
    den = gm.denoiser('vp')
    x = gm.sample(64, generator=gen(0), dtype=torch.float64)
    ref = encode(den, x, rtol=1e-9, atol=1e-9)
    for m, order in (('euler', 1), ('heun', 2), ('rk4', 4)):
        e = [(encode(den, x, m, steps=s) - ref).abs().max().item() for s in (40, 80)]
        assert math.log2(e[0] / e[1]) > order - 0.5, (m, e)

def test_odeint_both_directions():
    f = lambda t, y: (torch.cos(t * torch.ones_like(y[0])),)        # y(t) = y0 + sin t
    y1, info = odeint(f, (torch.zeros(3, dtype=torch.float64),), 0., 2., rtol=1e-9, atol=1e-9)
    assert torch.allclose(y1[0], torch.full((3,), math.sin(2.), dtype=torch.float64), atol=1e-8)
    assert info.ts[0] == 0. and info.ts[-1] == 2. and len(info.ts) == info.steps + 1 and all(a < b for a, b in zip(info.ts, info.ts[1:]))
    y0, back = odeint(f, y1, 2., 0., 'rk4', steps=200)
    assert y0[0].abs().max() < 1e-8
    assert back.steps == 200 and back.rejected == 0 and back.ts[-1] == 0. and all(a > b for a, b in zip(back.ts, back.ts[1:]))

def test_a_drift_given_in_parts_takes_the_same_steps():
    """A drift that gives itself as a y + b o (fn.linear_parts) is integrated to the same states as its value given whole, by every method, on a tuple
    state, without forming its value: fixed steps never call it, dopri5 once (its first step size)."""
    def whole(t, y): return tuple(-(1 + t) * v + math.cos(t) * torch.tanh(3 * v) for v in y)
    calls = []
    def split(t, y): calls.append(t); return whole(t, y)
    split.linear_parts = lambda t, y: tuple((-(1 + t), math.cos(t), torch.tanh(3 * v)) for v in y)
    y0 = (torch.linspace(-2, 2, 7, dtype=torch.float64), torch.linspace(0, 1, 5, dtype=torch.float64))
    for m in ('euler', 'heun', 'rk4', 'dopri5'):
        calls.clear()
        (a, b), info_a = odeint(whole, y0, 0., 1.5, m, steps=9, rtol=1e-10, atol=1e-10)
        (c, d), info_c = odeint(split, y0, 0., 1.5, m, steps=9, rtol=1e-10, atol=1e-10)
        assert (a - c).abs().max() < 1e-12 and (b - d).abs().max() < 1e-12 and info_a.steps == info_c.steps, m
        assert len(calls) == (1 if m == 'dopri5' else 0), (m, len(calls))

def test_float32_steps_keep_their_accuracy():
    """float32 keeps float64's steps and accuracy where a fold or an error estimate could lose it: dopri5 on a plain drift at tight
    tolerances (an error written as a difference of stage states took 60 steps at 1e-7), and a velocity net on the linear path, whose drift
    folded through 1/alpha cancels near t_max (heun then erred 2e-4 against 5e-6)."""
    f = lambda t, y: (math.sin(3 * t) * y[0],)
    for tol in (1e-7, 3e-8):
        steps = [odeint(f, (torch.linspace(0.5, 2, 1000, dtype=dt),), 0., 3., 'dopri5', rtol=tol, atol=tol)[1].steps for dt in (torch.float32, torch.float64)]
        assert steps[0] <= steps[1] + 2, (tol, steps)
    gm = dn.ring_mixture(); p = dn.get_path('linear'); orc = gm.denoiser(p)
    def vel(x, t):
        x0 = orc.x0(x, t); a, s, da, ds = (p.coef(c, x) for c in p.coefs(t))
        return (da * x0 + ds * (x - a * x0) / s).to(x.dtype)
    den = dn.Denoiser(vel, p, param='velocity')
    xT = torch.randn(1000, 2, generator=gen(0))
    assert (dn.sample(den, xT, 'heun', steps=10).double() - dn.sample(den, xT.double(), 'heun', steps=10)).abs().max() < 2e-5

def test_diagonal_path_encode_decode_log_prob():
    U = torch.linalg.qr(torch.randn(3, 3, generator=gen(1), dtype=torch.float64))[0]
    P = dn.StackedPath(['vp', 'subvp', 'vp'], basis=U)
    gm = dn.random_mixture(3, 2, seed=1)
    den = dn.Denoiser(lambda x, t: gm.x0(x, t, P), P, param='x0')
    x = gm.sample(50, generator=gen(2), dtype=torch.float64)
    z = encode(den, x, rtol=1e-7, atol=1e-7)
    assert ((decode(den, z, rtol=1e-7, atol=1e-7) - x).norm() / x.norm()) < 1e-5
    lp = log_prob(den, x[:8], prior=gm.marginal(P, P.t_max), rtol=1e-8, atol=1e-8)
    assert (lp - gm.marginal(P, P.t_min).log_prob(x[:8])).abs().max() < 1e-3

def test_trained_density_integrates_to_one():
    torch.manual_seed(0)
    gm = dn.GaussianMixture([[-1., 0.], [1., 0.]], [0.15, 0.15])
    # v-prediction: an eps-net's drift (sigma' eps with sigma' ~ t^-1/2) throws the odd latent far out, and the grid would miss that mass
    tr = dn.Trainer(dn.MLP(2, hidden=64, depth=2), 'vp', gm.sample(2000, generator=gen(0)), param='v', batch_size=256, lr=3e-3, device='cpu')
    for _ in tr.steps(300): pass
    den = tr.denoiser()
    g = torch.linspace(-4, 4, 41)
    X, Y = torch.meshgrid(g, g, indexing='xy')
    pts = torch.stack([X.flatten(), Y.flatten()], 1)
    mass = log_prob(den, pts, rtol=1e-4, atol=1e-4, dtype=torch.float64).exp().sum().item() * (g[1] - g[0]).item()**2
    assert abs(mass - 1) < 0.01, mass

def test_bits_per_dim_convention():
    "Against the closed-form mixture density: -log2 p(x) / D, and with dequantization -(log p(x + u) + D log w) / (D ln 2)."
    gm = dn.GaussianMixture([[-1., 0.5], [1.5, -0.5]], [0.3, 0.5]); den = gm.denoiser('vp'); p = den.path
    x = gm.sample(4, generator=gen(0), dtype=torch.float64)
    exact, kw = gm.marginal(p, p.t_min), dict(prior=gm.marginal(p, p.t_max), rtol=1e-8, atol=1e-8)
    assert (bits_per_dim(den, x, **kw) - -exact.log_prob(x) / (2 * math.log(2))).abs().max() < 1e-3
    w = 0.25
    u = (torch.rand(x.shape, generator=gen(3), dtype=x.dtype) - 0.5) * w      # the draw bits_per_dim makes from the same generator
    expect = -(exact.log_prob(x + u) + 2 * math.log(w)) / (2 * math.log(2))
    assert (bits_per_dim(den, x, bin_width=w, generator=gen(3), **kw) - expect).abs().max() < 1e-3

def test_slerp_and_interpolate():
    za, zb = torch.randn(3, 5, generator=gen(0)), torch.randn(3, 5, generator=gen(1))
    zb = zb / zb.norm(dim=1, keepdim=True) * za.norm(dim=1, keepdim=True)
    path = slerp(za, zb, torch.linspace(0, 1, 7))
    assert path.shape == (7, 3, 5) and torch.allclose(path[0], za, atol=1e-6) and torch.allclose(path[-1], zb, atol=1e-5)
    assert torch.allclose(path.norm(dim=-1), za.norm(dim=1).expand(7, 3), rtol=1e-5)
    gm = dn.GaussianMixture([[-1., 0.5], [1.5, -0.5]], [0.3, 0.5]); den = gm.denoiser('vp')
    x = gm.sample(4, generator=gen(0), dtype=torch.float64)
    out = interpolate(den, x[:2], x[2:], n=5, rtol=1e-7, atol=1e-7)
    assert out.shape == (5, 2, 2) and torch.allclose(out[0], x[:2], atol=1e-4) and torch.allclose(out[-1], x[2:], atol=1e-4)

def test_editing():
    gm = dn.GaussianMixture([[-1., 0.5, 0.], [1.5, -0.5, 1.]], [0.3, 0.5]); den = gm.denoiser('vp')
    x = gm.sample(200, generator=gen(0), dtype=torch.float64)
    mask = torch.tensor([True, True, False])
    out = inpaint(den, x, mask, steps=50, generator=gen(1))
    assert torch.equal(out[:, :2], x[:, :2]) and out.shape == x.shape and torch.isfinite(out).all()
    near = sdedit(den, x, 0.1, steps=20, generator=gen(2)); far = sdedit(den, x, 0.9, steps=20, generator=gen(2))
    assert (near - x).pow(2).mean() < (far - x).pow(2).mean()
    errs = [(ddim_reconstruct(den, ddim_invert(den, x, s), s) - x).pow(2).mean().sqrt().item() for s in (10, 80)]
    assert errs[1] < errs[0] / 2, errs

def test_latent_diagnostics():
    g = gen(0)
    a = torch.randn(400, generator=g, dtype=torch.float64)
    assert distance_correlation(a, a**2) > 0.3 > distance_correlation(a, torch.randn(400, generator=g, dtype=torch.float64))
    rep = latent_report(torch.randn(400, 3, generator=g, dtype=torch.float64))
    s = rep.summary()
    assert s['max_abs_corr'] < 0.2 and s['min_ks_p'] > 1e-3 and rep.corr.shape == (3, 3)
    assert amari_distance(torch.eye(3).numpy(), torch.eye(3).numpy()) == 0 and amari_distance([[1, 1], [1, -1]], [[1, 0], [0, 1]]) > 0.5
    u = torch.rand(1000, 2, generator=g, dtype=torch.float64) - 0.5
    S = -torch.sign(u) * torch.log1p(-2 * u.abs())                # Laplace sources
    A = torch.tensor([[1., 0.6], [0.3, 1.]], dtype=torch.float64)
    tab, ica = compare_ica(S @ A.T, torch.randn(1000, 2, generator=g, dtype=torch.float64))
    assert amari_distance(ica.components_, A.numpy()) < 0.1 and set(tab.index) == {'pfODE latent', 'FastICA sources', 'PCA-whitened data'}

def test_bad_input():
    gm = dn.GaussianMixture([[-1., 0.5], [1.5, -0.5]], [0.3, 0.5]); den = gm.denoiser('vp')
    x = gm.sample(4, generator=gen(0))
    with pytest.raises(ValueError, match='NaN'): encode(den, torch.full((2, 2), float('nan')))
    with pytest.raises(ValueError, match='event shape'): encode(den, torch.zeros(2, 3))
    with pytest.raises(ValueError, match='batch'): decode(den, torch.zeros(2))
    with pytest.raises(TypeError, match='Tensor'): encode(den, [[0., 1.]])
    with pytest.raises(ValueError, match='rtol'): encode(den, x, rtol=0)
    with pytest.raises(ValueError, match='atol'): decode(den, x, atol=-1e-6)
    with pytest.raises(ValueError, match='method'): encode(den, x, method='rk45')
    with pytest.raises(ValueError, match='steps'): encode(den, x, method='heun', steps=0)
    with pytest.raises(ValueError, match='n_probes'): log_prob(den, x, div='hutchinson', n_probes=0)
    with pytest.raises(ValueError, match='n_probes'): log_prob(den, x, div='hutchinson', n_probes=1, return_stderr=True)
    with pytest.raises(ValueError, match='div'): log_prob(den, x, div='trace')
    with pytest.raises(ValueError, match='mask'): inpaint(den, x, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match='t0'): encode(den, x, t0=5.)
    with pytest.raises(ValueError, match='bin_width'): bits_per_dim(den, x, bin_width=0.)
    with pytest.raises(ValueError, match='xb'): interpolate(den, x[:2], x[:3])

def test_sampler_dopri5_and_decode_are_one_integrator():
    "From one x_T, sample(..., 'dopri5') and decode at rtol 1e-5 agree to 1e-4 on the ring oracle: one Dormand-Prince controller."
    gm = dn.ring_mixture(8)
    den = opaque(gm, 'vp'); p = den.path
    xT = p.prior(256, (2,), generator=gen(3), dtype=torch.float64)
    den.reset_nfe(); xs = dn.sample(den, xT, 'dopri5', rtol=1e-5, atol=1e-5); nfe_sample = den.nfe
    den.reset_nfe(); xd = decode(den, xT / p.prior_std(), rtol=1e-5, atol=1e-5, denoise=True); nfe_decode = den.nfe
    assert (xs - xd).abs().max().item() < 1e-4 * max(1., xs.abs().max().item())
    assert abs(nfe_sample - nfe_decode) <= 2, (nfe_sample, nfe_decode)

def test_inversion_and_encoding_run_through_the_sampler():
    "DDIM inversion is the sampler's ddim on an ascending grid (equal to hand-written upward DDIM steps); encode(method='heun') is sampler heun."
    gm = dn.ring_mixture(8); den = opaque(gm, 'vp'); p = den.path
    x = gm.sample(128, generator=gen(4), dtype=torch.float64)
    grid = dn.time_grid(p, 20, 'uniform', ascending=True)
    xh = x.clone()
    for t, tn in zip(grid[:-1].tolist(), grid[1:].tolist()):   # Song et al. 2021, eq. 12 at sigma_t = 0, run upward
        (a, s, _, _), (an, sn, _, _) = (map(float, p.coefs(u)) for u in (t, tn))
        x0 = den.x0(xh, t); eps = (xh - a * x0) / s
        xh = an * x0 + sn * eps
    xi = ddim_invert(den, x, 20, kind='uniform')
    assert (xi - xh).abs().max().item() < 1e-10
    steps = list(dn.sample_iter(den, x, 'ddim', grid=grid))
    assert len(steps) == 20 and steps[-1].t == p.t_max and torch.equal(steps[-1].x, xi)
    ze = encode(den, x, 'heun', steps=20)
    zs = dn.sample(den, x, 'heun', grid=grid) / p.prior_std()
    assert (ze - zs).abs().max().item() < 1e-10
    with pytest.raises(ValueError, match="dpmpp_2m runs only that way"): dn.sample(den, x, 'dpmpp_2m', grid=grid)
    with pytest.raises(ValueError, match="eta=0.5: an ascending grid"): dn.sample(den, x, 'ddim', grid=grid, eta=0.5)


def test_time_variable_does_not_change_the_map():
    "Integrating the pfODE in t, in u = log(sigma/alpha) or in log t gives one map (Su's Topics, eqs. (4.16)-(4.20)); equal steps in u are equal log-SNR steps."
    gm = dn.ring_mixture(8)
    x = gm.sample(32, generator=gen(7), dtype=torch.float64)
    for name in ('vp', 'edm', 'linear'):
        den = opaque(gm, name); p = den.path
        z = {k: encode(den, x, rtol=1e-8, atol=1e-8, kind=k) for k in ('uniform', 'log_snr', 'log_t')}
        assert (z['uniform'] - z['log_snr']).abs().max() < 1e-5 and (z['uniform'] - z['log_t']).abs().max() < 1e-5, name
        _, info = encode(den, x, 'rk4', steps=10, kind='log_snr', return_info=True)
        lam = p.log_snr(torch.tensor(info.ts, dtype=torch.float64)).flatten()
        assert torch.allclose(lam.diff(), lam.diff()[:1].expand(10), rtol=1e-6), name
        _, info = encode(den, x, 'rk4', steps=10, kind='log_t', return_info=True)
        lt = torch.tensor(info.ts, dtype=torch.float64).log()
        assert torch.allclose(lt.diff(), lt.diff()[:1].expand(10), rtol=1e-6) and abs(info.ts[-1] - p.t_max) < 1e-9, name
    with pytest.raises(ValueError, match="kind='log_t': needs times > 0"): encode(gm.denoiser('ve'), x, kind='log_t')
    with pytest.raises(ValueError, match='kind'): encode(gm.denoiser('vp'), x, kind='log')


def test_flow_between_times_matches_the_gaussian_map_and_decode_differentiates():
    "For Gaussian data the pfODE map is affine: standardise at t0, unstandardise at t1; log-Jacobian 0.5 log(v1 / v0); decode's derivative in z is its slope."
    g = dn.GaussianMixture([[0.5]], [0.8]); p = dn.get_path('vp'); den = g.denoiser(p)
    x = torch.linspace(-2, 3, 9, dtype=torch.float64)[:, None]
    m = lambda t: (g.marginal(p, t).means[0, 0], g.marginal(p, t).covs[0, 0, 0])
    (m0, v0), (m1, v1) = m(0.05), m(0.9)
    x1, ld = flow(den, x, 0.05, 0.9, logdet=True, rtol=1e-9, atol=1e-9)
    assert torch.allclose(x1, m1 + (v1 / v0).sqrt() * (x - m0), atol=1e-7)
    assert torch.allclose(ld, torch.full((9,), 0.5 * math.log(v1 / v0), dtype=torch.float64), atol=1e-7)
    assert torch.allclose(flow(den, x1, 0.9, 0.05, rtol=1e-9, atol=1e-9), x, atol=1e-7)
    z = torch.linspace(-2, 2, 5, dtype=torch.float64)[:, None].requires_grad_(True)
    xd = decode(den, z, 'rk4', steps=40, grad=True)
    dz, = torch.autograd.grad(xd.sum(), z)
    (mT, vT), (ma, va) = m(p.t_max), m(p.t_min)
    assert torch.allclose(dz, (va / vT).sqrt() * p.prior_std() * torch.ones_like(dz), rtol=1e-6)
    assert not decode(den, z.detach(), 'rk4', steps=4).requires_grad
    with pytest.raises(ValueError, match='grad=True'): flow(den, x, 0.1, 0.5, logdet=True, grad=True)


def test_det_of_an_euler_step_is_exp_trace_to_second_order():
    "det(I + hJ) - exp(h tr J) = -h^2 tr(J^2) / 2 + O(h^3) for the pfODE Jacobian J (Su's Topics, eqs. (12.1)-(12.9))."
    gm = dn.random_mixture(3, 3, seed=2); den = gm.denoiser('vp')
    x = gm.sample(5, generator=gen(3), dtype=torch.float64)
    J = torch.stack([torch.autograd.functional.jacobian(lambda v: den.velocity(v[None], 0.4)[0], xi) for xi in x])
    tr, tr2 = J.diagonal(dim1=-2, dim2=-1).sum(-1), (J @ J).diagonal(dim1=-2, dim2=-1).sum(-1)
    for h in (1e-3, 5e-4):
        e = torch.linalg.det(torch.eye(3, dtype=J.dtype) + h * J) - torch.exp(h * tr)
        assert torch.allclose(e / h**2, -tr2 / 2, rtol=0.02 * h / 1e-3, atol=1e-9), (e / h**2, -tr2 / 2)


def two_gaussians_1d():
    return dn.GaussianMixture([[-2.], [1.5]], [0.3**2, 0.5**2], [0.4, 0.6])


def test_grid_fokker_planck_and_transport_forms_match_the_closed_form():
    "On 2000 cells both forms carry the exact p_t_min to within 1e-3 of the closed-form p_t; mass is conserved; transport also runs backward."
    gm, p = two_gaussians_1d(), dn.get_path('vp'); den = gm.denoiser(p)
    xs = torch.linspace(-6, 6, 2000, dtype=torch.float64)
    exact = lambda t: gm.marginal(p, t).log_prob(xs[:, None]).exp()
    ts = [p.t_min, 0.2, 0.5, p.t_max]
    truth = torch.stack([exact(t) for t in ts])
    fp = evolve_density(p, exact(p.t_min), xs, ts, 'fokker_planck', steps=400)
    tr = evolve_density(den, exact(p.t_min), xs, ts, 'transport', steps=600)
    assert (fp - truth).abs().max() < 1e-4 and (tr - truth).abs().max() < 1e-3, ((fp - truth).abs().max(), (tr - truth).abs().max())
    assert torch.allclose(tr.sum(1) * (xs[1] - xs[0]), torch.full((4,), tr[0].sum().item() * (xs[1] - xs[0]).item(), dtype=torch.float64), atol=1e-12)
    back = evolve_density(den, exact(p.t_max), xs, [p.t_max, 0.5, p.t_min], 'transport', steps=600)
    assert (back[-1] - truth[0]).abs().max() < 1e-3


def test_grid_heat_equation_for_uniform_data_on_ve():
    "Uniform data on [-1, 1] under VE: p_t = (Phi((x + 1) / s) - Phi((x - 1) / s)) / 2, s^2 = sigma_t^2 (a non-Gaussian start, exact at every t)."
    p = dn.get_path('ve')
    t0, t1 = float(p.t_of_log_snr(torch.tensor(2 * math.log(1 / 0.2)))), float(p.t_of_log_snr(torch.tensor(2 * math.log(1 / 1.))))
    xs = torch.linspace(-6, 6, 2000, dtype=torch.float64)
    Phi = torch.distributions.Normal(0., 1.).cdf
    exact = lambda t: (Phi((xs + 1) / p.sigma(t)) - Phi((xs - 1) / p.sigma(t))) / 2
    out = evolve_density(p, exact(t0), xs, [t0, (t0 + t1) / 2, t1], steps=300)
    assert max((out[i] - exact(t)).abs().max().item() for i, t in enumerate([t0, (t0 + t1) / 2, t1])) < 1e-3


def test_closed_form_density_solves_both_equations():
    "The residual of the exact mixture p_t in the Fokker-Planck and transport equations is at the grid's accuracy; another path's operator leaves O(1)."
    gm, p = two_gaussians_1d(), dn.get_path('vp'); den = gm.denoiser(p)
    xs = torch.linspace(-6, 6, 2000, dtype=torch.float64)
    exact = lambda t: gm.marginal(p, t).log_prob(xs[:, None]).exp()
    for t in (0.1, 0.4, 0.6):
        dpdt = (exact(t + 1e-5) - exact(t - 1e-5)) / 2e-5
        for model, form in ((p, 'fokker_planck'), (den, 'transport')):
            r = (density_rhs(model, exact(t), xs, t, form) - dpdt).abs().max() / dpdt.abs().max()
            assert r < 1e-3, (t, form, r)
        wrong = (density_rhs(dn.get_path('vp', beta_max=15.), exact(t), xs, t) - dpdt).abs().max() / dpdt.abs().max()
        assert wrong > 0.05, (t, wrong)


def test_characteristics_push_forward_matches_the_grid():
    "p_t1(x(t1)) = p_t0(x) exp(-logdet) along flow's paths equals the finite-volume transport solution at those points."
    gm, p = two_gaussians_1d(), dn.get_path('vp'); den = gm.denoiser(p)
    xs = torch.linspace(-6, 6, 2000, dtype=torch.float64)
    p0 = gm.marginal(p, 0.1).log_prob(xs[:, None]).exp()
    grid = evolve_density(den, p0, xs, [0.1, 0.4], 'transport', steps=400)[-1]
    X, ld = flow(den, xs[::25, None], 0.1, 0.4, logdet=True, rtol=1e-8, atol=1e-8)
    p_char = p0[::25] * torch.exp(-ld)
    p_grid = torch.from_numpy(np.interp(X[:, 0].numpy(), xs.numpy(), grid.numpy()))
    assert (p_char - p_grid).abs().max() < 1e-3 and (p_char - gm.marginal(p, 0.4).log_prob(X).exp()).abs().max() < 1e-5


def test_grid_solver_bad_input():
    gm, p = two_gaussians_1d(), dn.get_path('vp'); den = gm.denoiser(p)
    xs = torch.linspace(-6, 6, 200, dtype=torch.float64); p0 = gm.log_prob(xs[:, None]).exp()
    with pytest.raises(ValueError, match='ill-posed'): evolve_density(p, p0, xs, [1., 0.5])
    with pytest.raises(ValueError, match="form='transport': needs a Denoiser"): evolve_density(p, p0, xs, [0.1, 0.5], 'transport')
    with pytest.raises(ValueError, match='form'): evolve_density(p, p0, xs, [0.1, 0.5], 'heat')
    with pytest.raises(ValueError, match='xs'): evolve_density(p, p0, xs ** 3, [0.1, 0.5])
    with pytest.raises(ValueError, match='p0'): evolve_density(p, p0[:-1], xs, [0.1, 0.5])
    with pytest.raises(ValueError, match='ts'): evolve_density(p, p0, xs, [0.1, 0.1, 0.5])
    with pytest.raises(ValueError, match='ts'): evolve_density(p, p0, xs, [0.1, 5.])
    with pytest.raises(ValueError, match='steps'): evolve_density(p, p0, xs, [0.1, 0.5], steps=0)
    with pytest.raises(ValueError, match='one-dimensional'): evolve_density(dn.ring_mixture().denoiser('vp'), p0, xs, [0.1, 0.5], 'transport')
    with pytest.raises(ValueError, match='scalar path'): evolve_density(dn.StackedPath(['vp']), p0, xs, [0.1, 0.5])
    with pytest.raises(TypeError, match='model'): density_rhs('vp', p0, xs, 0.3)


def test_two_independently_trained_nets_give_the_same_latents():
    "Identifiability: nets with different seeds, widths and depths encode alike, far closer than different points' latents, and close to the exact latent."
    gm, p = dn.GaussianMixture([[-1., 0.], [1., 0.5]], [0.3, 0.4]), dn.get_path('vp')
    models, data = {'exact': gm.denoiser(p)}, gm.sample(2000, generator=gen(0))
    for name, seed, hidden, depth in (('A', 0, 64, 2), ('B', 1, 48, 3)):
        torch.manual_seed(seed)
        tr = dn.Trainer(dn.MLP(2, hidden=hidden, depth=depth), p, data, param='v', batch_size=256, lr=3e-3, device='cpu', seed=seed)
        for _ in tr.steps(300): pass
        models[name] = tr.denoiser()
    tab = latent_agreement(models, gm.sample(200, generator=gen(5), dtype=torch.float64))
    assert tab.loc[('A', 'B'), 'median'] < 0.15 and (tab.loc['exact', 'median'] < 0.2).all(), tab
    assert (tab['different_points'] > 1).all(), tab


def test_latent_agreement_of_exact_models():
    gm = dn.GaussianMixture([[-1., 0.5], [1.5, -0.5]], [0.3, 0.5])
    x = gm.sample(50, generator=gen(0), dtype=torch.float64)
    other = dn.GaussianMixture([[-1., 0.5], [1.5, -0.5]], [0.6, 0.5])    # the same modes, another weight
    tab = latent_agreement({'exact': gm.denoiser('vp'), 'x0 only': opaque(gm, 'vp'), 'sub-vp': gm.denoiser('subvp'), 'other': other.denoiser('vp')},
                           x, rtol=1e-7, atol=1e-7)
    unrelated = tab['different_points'].iloc[0]
    assert tab.loc[('exact', 'x0 only'), 'max'] < 1e-5                  # the same Denoiser seen through x0 alone
    assert tab.loc[('exact', 'sub-vp'), 'max'] < 1e-3 * unrelated       # another schedule: the same map up to its end SNRs
    assert tab.loc[('exact', 'other'), 'median'] > 0.03 * unrelated     # another distribution: another map
    with pytest.raises(ValueError, match='models'): latent_agreement({'a': gm.denoiser('vp')}, x)
