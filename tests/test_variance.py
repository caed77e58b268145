"Reverse variances (NPR-DPM, SN-DPM heads and their samplers) and the DDPM variational bound, against Gaussian closed forms."
import math
import pytest
import torch
import diffnb as dn
from diffnb.samplers import _ddpm_coefs
from diffnb.train import _variance_target, _variance_loss

P = dn.get_path('vp')

def gaussian_elbo(x0, mu, V, path, steps, variance, v0=None):
    "Closed-form ELBO (nats per point) for N(mu, V I) data with the exact denoiser, coordinates independent."
    g = dn.time_grid(path, steps - 1, 'uniform'); a, s = path._alpha(g), path._sigma(g)
    b2 = s[:-1]**2 - (a[:-1] / a[1:])**2 * s[1:]**2      # q(x_t | x_s) = N(alpha_t/alpha_s x_s, b2), t = g[i] > s = g[i+1]
    bt2 = s[1:]**2 * b2 / s[:-1]**2                       # Var q(x_s | x_t, x0)
    lam = a[1:] * b2 / s[:-1]**2                          # E q(x_s | x_t, x0)'s coefficient on x0: alpha_s b2 / sigma_t^2 (Ho et al. eq. 7)
    k = a * V / (a**2 * V + s**2)
    err = ((1 - k * a)[:, None, None]**2 * (x0 - mu)**2 + (k * s)[:, None, None]**2)       # (N, B, d)
    post = V * s**2 / (a**2 * V + s**2)
    ps2 = path.prior_std().item()**2
    prior = (0.5 * (math.log(ps2) - torch.log(s[0]**2) + (s[0]**2 + a[0]**2 * x0**2) / ps2 - 1)).sum(1)
    vp = {'beta_tilde': bt2, 'beta': b2, 'analytic': bt2 + lam**2 * post[:-1]}[variance]
    mid = (0.5 * (torch.log(vp / bt2) + bt2 / vp - 1))[:, None, None] + lam[:, None, None]**2 * err[:-1] / (2 * vp[:, None, None])
    if v0 is None: v0 = post[-1] if variance == 'analytic' else s[-1]**2 / a[-1]**2
    dec = (0.5 * torch.log(2 * math.pi * torch.as_tensor(v0)) + err[-1] / (2 * v0)).sum(1)
    return prior + mid.sum((0, 2)) + dec

def test_ddpm_coefs_match_ho_et_al():
    "On the DDPM chain, beta^2, beta-tilde^2 and lambda are Ho et al.'s beta_t, (1 - abar_{t-1}) / (1 - abar_t) beta_t and sqrt(abar_{t-1}) beta_t / (1 - abar_t)."
    p = dn.get_path('ddpm', T=50)
    beta = p.betas
    abar = torch.cumprod(1 - beta, 0)
    k = torch.arange(p.T - 1, -1, -1)                      # every step of the chain, noisiest first
    g = p.t_of_step(k)
    b2, bt2, lam = _ddpm_coefs(p._alpha(g), p._sigma(g))
    t = k[:-1]                                            # the noisier end of each step
    torch.testing.assert_close(b2, beta[t])
    torch.testing.assert_close(bt2, (1 - abar[t - 1]) / (1 - abar[t]) * beta[t])
    torch.testing.assert_close(lam, abar[t - 1].sqrt() * beta[t] / (1 - abar[t]))

@pytest.mark.parametrize('variance', ['beta_tilde', 'beta', 'analytic'])
@pytest.mark.parametrize('path', ['vp', 'ddpm'])
def test_elbo_matches_closed_form_on_gaussian_data(variance, path):
    "The Monte-Carlo bound equals the closed form for Gaussian data (2-D, mean 0.5, variance 0.25) and the exact denoiser."
    p = dn.get_path(path, **({'T': 40} if path == 'ddpm' else {}))
    gm = dn.GaussianMixture([[0.5, 0.5]], [0.25])
    x0 = gm.sample(4000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    data = gm.sample(4000, generator=torch.Generator().manual_seed(1))
    e = dn.ddpm_elbo(gm.denoiser(p), x0, 40, variance=variance, data=data, generator=torch.Generator().manual_seed(2))
    assert e.steps.shape == (4000, 39) and e.dim == 2
    exact = gaussian_elbo(x0, 0.5, 0.25, p, 40, variance).mean().item()
    assert e.nll.mean().item() == pytest.approx(exact, rel=0.03, abs=0.03)
    assert e.bits_per_dim.mean().item() == pytest.approx(e.nll.mean().item() / (2 * math.log(2)), rel=1e-9)

def test_elbo_bounds_the_likelihood_and_analytic_is_tight():
    "Every variance gives a bound above -log p(x0) on average; Analytic-DPM's makes the bound tight on Gaussian data."
    gm = dn.GaussianMixture([[0.]], [0.5])
    x0 = gm.sample(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    nll = -gm.log_prob(x0).mean().item()
    for variance in ('beta_tilde', 'beta'):
        assert gaussian_elbo(x0, 0., 0.5, P, 100, variance).mean().item() > nll + 1e-3
    assert gaussian_elbo(x0, 0., 0.5, P, 100, 'analytic').mean().item() == pytest.approx(nll, abs=1e-4)
    mc = dn.ddpm_elbo(gm.denoiser(P), x0, 100, variance='analytic', data=gm.sample(20000, generator=torch.Generator().manual_seed(1)),
                      generator=torch.Generator().manual_seed(2)).nll.mean().item()
    assert mc == pytest.approx(nll, abs=0.02)

def test_elbo_decoder_float_and_prior_term():
    "A fixed decoder variance enters L_0 in closed form; L_T is the KL of q(x_N | x0) from the path's prior."
    gm = dn.GaussianMixture([[1.]], [0.3])
    x0 = gm.sample(3000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    e = dn.ddpm_elbo(gm.denoiser(P), x0, 20, variance='beta', decoder_var=0.01, generator=torch.Generator().manual_seed(1))
    assert e.nll.mean().item() == pytest.approx(gaussian_elbo(x0, 1., 0.3, P, 20, 'beta', v0=0.01).mean().item(), rel=0.03)
    a, s = P.alpha(P.t_max).item(), P.sigma(P.t_max).item()
    kl = 0.5 * (-math.log(s**2) + s**2 + a**2 * x0[:, 0]**2 - 1)
    torch.testing.assert_close(e.prior, kl)

@pytest.fixture(scope='module')
def gaussian_heads():
    gm = dn.GaussianMixture([[0.]], [0.25])
    train = gm.sample(20000, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    return gm, train, {k: dn.fit_variance(gm.denoiser(P), train, dn.MLP(1, hidden=32, depth=1, emb_dim=32), k, n=400, seed=1)
                             for k in ('npr', 'sn')}

def test_heads_learn_the_gaussian_posterior_variance(gaussian_heads):
    "With the exact mean, NPR and SN learn Var[x0 | x_t] = V sigma^2 / (alpha^2 V + sigma^2) (NPR within 10%, SN within 25%)."
    gm, _, heads = gaussian_heads
    for t in (0.05, 0.2, 0.5):
        x = gm.marginal(P, t).sample(1000, generator=torch.Generator().manual_seed(2))
        a, s = P.alpha(t).item(), P.sigma(t).item()
        exact = 0.25 * s**2 / (a**2 * 0.25 + s**2)
        with torch.no_grad():
            assert heads['npr'](x, t).mean().item() == pytest.approx(exact, rel=0.1)
            assert heads['sn'](x, t).mean().item() == pytest.approx(exact, rel=0.25)
            assert bool((heads['npr'](x, t) <= 0.25 * 1.05).all())     # clipped to the data's variance

def test_npr_dpm_is_exact_in_two_steps_on_gaussian_data(gaussian_heads):
    "From an exact draw at t_max, two NPR-DPM steps reproduce the data variance 0.25 to the head's accuracy (10%); DDPM's beta-tilde is far below."
    gm, _, heads = gaussian_heads
    den = gm.denoiser(P)
    xT = gm.marginal(P, P.t_max).sample(50000, generator=torch.Generator().manual_seed(3))
    v = dn.sample(den, xT, 'npr_dpm', steps=2, head=heads['npr'], generator=torch.Generator().manual_seed(4)).var().item()
    assert v == pytest.approx(0.25, rel=0.1)          # the head's own accuracy at one time sets it
    assert dn.sample(den, xT, 'ddpm', steps=2, generator=torch.Generator().manual_seed(4)).var().item() < 0.2
    assert dn.SAMPLERS['npr_dpm'].stochastic and dn.SAMPLERS['sn_dpm'].options == {'head': None}

def test_npr_and_sn_differ_with_a_biased_mean():
    "With eps-hat = eps* + delta, NPR's target mean is Var[eps|x] + delta^2 and SN's is Var[eps|x] - 2 E[eps|x] delta - delta^2 (Bao et al. 2022; Su, Topics on Diffusion Generative Models, §8.3-8.4)."
    gm = dn.GaussianMixture([[0.]], [1.])
    exact = gm.denoiser(P)
    delta = 0.2
    biased = dn.Denoiser(lambda x, t: exact.eps(x, t) + delta, P, 'eps')
    head = dn.VarianceHead(dn.MLP(1, hidden=8, depth=1), biased, 'npr')
    t = torch.full((200000,), 0.3, dtype=torch.float64)
    x0 = gm.sample(200000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, s = P.alpha(0.3).item(), P.sigma(0.3).item()
    xt = a * x0 + s * eps
    var_eps = a**2 / (a**2 + s**2)                      # Var[eps | x_t] for N(0, 1) data
    eps_hat = biased.eps(xt, t)
    npr_target = _variance_target('npr', eps, eps_hat)
    torch.testing.assert_close(npr_target, (eps - eps_hat)**2)
    assert npr_target.mean().item() == pytest.approx(var_eps + delta**2, rel=0.02)
    sn_target = _variance_target('sn', eps, eps_hat)
    torch.testing.assert_close(sn_target, eps**2 - eps_hat**2)
    assert sn_target.mean().item() == pytest.approx(var_eps - delta**2, rel=0.03)   # E[eps | x] has mean zero over x
    assert head.data_var.item() == 1.
    head_sn = dn.VarianceHead(dn.MLP(1, hidden=8, depth=1), biased, 'sn')
    for h, target, w in ((head, npr_target, 1 / var_eps), (head_sn, sn_target, 1.)):   # NPR's error is relative to a^2 / (a^2 + s^2)
        with torch.no_grad():
            u = h.eps_var(xt[:1000], t[:1000])
            torch.testing.assert_close(_variance_loss(h, x0[:1000], t[:1000], eps[:1000]), (((target[:1000] - u) * w)**2).flatten(1).mean(1))

def test_variance_bad_input(gaussian_heads):
    gm, train, heads = gaussian_heads
    den = gm.denoiser(P)
    with pytest.raises(ValueError, match="estimator='x'"): dn.VarianceHead(dn.MLP(1), den, 'x')
    with pytest.raises(ValueError, match='scalar path'): dn.VarianceHead(dn.MLP(2), dn.GaussianMixture([[0., 0.]]).denoiser(dn.StackedPath(['vp', 'subvp'])))
    with pytest.raises(ValueError, match='needs head='): dn.sample(den, 4, 'npr_dpm')
    with pytest.raises(ValueError, match="'sn' head was given to npr_dpm"): dn.sample(den, 4, 'npr_dpm', head=heads['sn'])
    with pytest.raises(ValueError, match='n=-1'): dn.fit_variance(den, train, dn.MLP(1), n=-1)
    with pytest.raises(ValueError, match="variance='x'"): dn.ddpm_elbo(den, train[:4], 5, variance='x')
    with pytest.raises(ValueError, match='data: '): dn.ddpm_elbo(den, train[:4], 5, variance='analytic')
    with pytest.raises(ValueError, match='decoder_var=-1.0'): dn.ddpm_elbo(den, train[:4], 5, decoder_var=-1.)
    with pytest.raises(ValueError, match='strictly decreasing'): dn.ddpm_elbo(den, train[:4], grid=[0.1, 0.5])
    with pytest.raises(ValueError, match='steps=1'): dn.ddpm_elbo(den, train[:4], 1)
