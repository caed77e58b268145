"""Training objectives against answers derived independently of their code: the irreducible loss of every weighting, the
least-squares optimum, and EDM's preconditioning by the properties it was designed for."""
import math
import pytest
import torch
import diffnb as dn
from diffnb.train import dsm_loss, WEIGHTINGS

MU, V = 0.7, 0.3                       # 1-D Gaussian data N(MU, V): every posterior is closed form
GAUSS = dn.GaussianMixture([[MU]], [V])
N = 200_000

def draws(path, t, seed=0):
    "x0, eps and t (float64) at one time t."
    g = torch.Generator().manual_seed(seed)
    x0 = GAUSS.sample(N, generator=g, dtype=torch.float64)
    return x0, torch.randn(N, 1, generator=g, dtype=torch.float64), torch.full((N,), t, dtype=torch.float64)

def lam_independent(weighting, path, t, sigma_data=0.5, gamma=5.):
    "Each weighting of |x0-hat - x0|^2 from its definition: SNR = exp(log-SNR), the likelihood weighting g^2 / sigma^2 in score units, EDM's loss weight."
    a, s = path.alpha(t).item(), path.sigma(t).item()
    snr = math.exp(path.log_snr(t).item())
    return {'x0': 1., 'snr': snr, 'min_snr': min(snr, gamma), 'likelihood': path.g2(t).item() * a**2 / s**4,
            'edm': ((s / a)**2 + sigma_data**2) / ((s / a)**2 * sigma_data**2)}[weighting]

@pytest.mark.parametrize('weighting', [w for w in WEIGHTINGS if w != 'native'])
@pytest.mark.parametrize('t', [0.1, 0.5])
def test_exact_denoisers_loss_is_the_irreducible_loss(weighting, t):
    "E[loss] of the exact denoiser = lambda(t) Var[x0 | x_t], Var[x0 | x_t] = V sigma^2 / (alpha^2 V + sigma^2): the floor no network goes below."
    p = dn.get_path('vp')
    x0, eps, tt = draws(p, t)
    loss = dsm_loss(GAUSS.denoiser(p), x0, tt, eps, weighting=weighting).mean().item()
    a, s = p.alpha(t).item(), p.sigma(t).item()
    assert loss == pytest.approx(lam_independent(weighting, p, t) * V * s**2 / (a**2 * V + s**2), rel=0.01)

def test_native_eps_loss_is_the_plain_noise_mse():
    "'native' for an eps-net is the plain |eps-hat - eps|^2 (Ho et al.'s simple loss), computed here from eps directly."
    p = dn.get_path('vp')
    x0, eps, tt = draws(p, 0.3)
    den = dn.Denoiser(lambda x, t: GAUSS.denoiser(p).eps(x, t), p, param='eps')
    xt = p.alpha(tt)[:, None] * x0 + p.sigma(tt)[:, None] * eps
    assert torch.allclose(dsm_loss(den, x0, tt, eps), ((den.eps(xt, tt) - eps)**2).flatten(1).mean(1), rtol=1e-9, atol=1e-12)

@pytest.mark.parametrize('weighting', ['x0', 'snr', 'likelihood'])
def test_least_squares_optimum_is_the_posterior_mean(weighting):
    "At a time t, the weighted loss's minimiser among x0-hat = c x_t + b is Tweedie's posterior mean (the weighting cannot move it)."
    p = dn.get_path('vp'); t = 0.4
    x0, eps, tt = draws(p, t, seed=1)
    a, s = p.alpha(t).item(), p.sigma(t).item()
    xt = a * x0 + s * eps
    w = lam_independent(weighting, p, t)
    X = torch.cat([xt, torch.ones_like(xt)], 1) * math.sqrt(w)
    c, b = torch.linalg.lstsq(X, x0 * math.sqrt(w)).solution.flatten().tolist()
    k = a * V / (a**2 * V + s**2)
    assert c == pytest.approx(k, abs=5e-3) and b == pytest.approx(MU * (1 - a * k), abs=5e-3)

@pytest.mark.parametrize('sigma', [0.05, 0.5, 2., 20.])
def test_edm_preconditioning_gives_the_network_unit_input_and_target(sigma):
    """Karras et al. 2022 choose c_in, c_skip, c_out so that for data of standard deviation sigma_data the network's input c_in x~ and its
    training target (x0 - c_skip x~) / c_out have unit variance. Read off a spy network (its input; its output 0 gives c_skip, 1 gives c_out)."""
    sd = 0.5
    p = dn.get_path('edm')
    g = torch.Generator().manual_seed(2)
    x0 = sd * torch.randn(N, 1, generator=g, dtype=torch.float64)
    xt = x0 + sigma * torch.randn(N, 1, generator=g, dtype=torch.float64)
    seen = {}
    def spy(out):
        def net(x, c_noise): seen['in'] = x; return torch.full_like(x, out)
        return dn.Denoiser(net, p, param='edm', sigma_data=sd)
    t = torch.full((N,), sigma, dtype=torch.float64)
    skip = spy(0.).x0(xt, t)                   # c_skip x~
    c_out = (spy(1.).x0(xt, t) - skip)[0].item()
    assert seen['in'].var().item() == pytest.approx(1., rel=0.01)
    assert ((x0 - skip) / c_out).var().item() == pytest.approx(1., rel=0.01)
