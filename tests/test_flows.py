"Flows against exact answers: Gaussian-mixture log-densities, quantile maps, round trips, normalisation of a trained model's density."
import math
import pytest
import torch
from scipy import stats
import diffnb as dn
from diffnb.flows import (odeint, encode, decode, log_prob, bits_per_dim, slerp, interpolate, sdedit, inpaint, ddim_invert,
                          ddim_reconstruct, prior_log_prob)
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
