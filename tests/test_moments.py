"""Samplers on Gaussian data, through the exact moment propagator `gaussian_moments`: it against Monte Carlo, every linear sampler's
output moments converging to the data's, and the fixed-variance exactness claims (Ho et al. 2020; Bao et al. 2022)."""
import pytest
import torch
import diffnb as dn
from diffnb.samplers import gaussian_moments

P = dn.get_path('vp')
G = dn.GaussianMixture([[1., -2.]], [[[0.5, 0.3], [0.3, 0.4]]])      # correlated 2-D Gaussian data
MT = G.marginal(P, P.t_max)
NOT_AFFINE = ('pc', 'dopri5')                                        # batch-dependent step control
NEEDS_DATA = ('analytic_dpm', 'estimate_correct', 'npr_dpm', 'sn_dpm')   # a variance estimate or a trained head

def moments(method, steps, den=None, **kw):
    return gaussian_moments(den or G.denoiser(P), MT.means[0], MT.covs[0], method, steps=steps, **kw)

@pytest.mark.parametrize('method', ['ddpm', 'unipc', 'dpmpp_2m_sde', 'euler_ancestral'])
def test_propagator_matches_monte_carlo(method):
    "The exact mean and covariance of 8 steps equal 100k sampled outputs' within Monte-Carlo error."
    exact = moments(method, 8)[-1]
    xs = dn.sample(G.denoiser(P), MT.sample(100_000, generator=torch.Generator().manual_seed(1)).double(), method, steps=8,
                   generator=torch.Generator().manual_seed(2))
    se_mean = (exact.cov.diagonal() / len(xs)).sqrt()
    assert ((xs.mean(0) - exact.mean).abs() < 4 * se_mean).all(), (xs.mean(0), exact.mean)
    se_cov = ((exact.cov.diagonal()[:, None] * exact.cov.diagonal()[None] + exact.cov**2) / len(xs)).sqrt()
    assert ((torch.cov(xs.T) - exact.cov).abs() < 4 * se_cov).all(), (torch.cov(xs.T), exact.cov)

def limit_moments():
    "Mean and covariance of x0-hat(x) for x ~ p_{t_min}, what every sampler's output tends to as its steps shrink: a^2 C (a^2 C + s^2 I)^-1 C."
    a, s = P.alpha(P.t_min).item(), P.sigma(P.t_min).item()
    C = G.covs[0].double()
    return G.means[0].double(), a * a * C @ torch.linalg.solve(a * a * C + s * s * torch.eye(2, dtype=C.dtype), C)

@pytest.mark.parametrize('method', [m for m in dn.SAMPLERS if m not in NOT_AFFINE + NEEDS_DATA])
def test_every_linear_sampler_converges_to_the_exact_limit(method):
    "Output mean and covariance approach their exact limit as steps grow: 16x the steps cut the error at least 4x, to below 0.05."
    mean, cov, err = *limit_moments(), {}
    for steps in (16, 256):
        out = moments(method, max(1, steps // dn.SAMPLERS[method].evals))[-1]
        err[steps] = max((out.mean - mean).abs().max().item(), (out.cov - cov).abs().max().item())
    assert err[256] < 0.05 and err[256] < err[16] / 4, err

def test_propagator_refuses_what_it_cannot_follow():
    with pytest.raises(ValueError, match='affine in x'): gaussian_moments(dn.ring_mixture().denoiser(P), torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match='dopri5'): moments('dopri5', 10)

@pytest.mark.parametrize('steps', [2, 5, 20])
def test_ddpm_with_beta_keeps_standard_normal_data_exactly(steps):
    "sigma^2 = beta is exact for N(0, 1) data when every step, the last included, draws its noise; diffnb's deterministic last step shrinks it."
    g1 = dn.GaussianMixture([[0.]], [1.]); m1 = g1.marginal(P, P.t_max)
    chain = gaussian_moments(g1.denoiser(P), m1.means[0], m1.covs[0], 'ddpm', steps=steps, variance='beta', last_noise=True, denoise=False)
    assert max(abs(mo.cov.item() - 1) for mo in chain) < 1e-9 and max(abs(mo.mean.item()) for mo in chain) < 1e-12
    default = gaussian_moments(g1.denoiser(P), m1.means[0], m1.covs[0], 'ddpm', steps=steps, variance='beta')[-1]
    assert default.cov.item() < 1 - 1e-4                  # ends on x0-hat after a deterministic step: less than the data's variance

def test_beta_tilde_is_exact_for_a_point_mass():
    "With sigma^2 = beta-tilde every intermediate state of a point mass at 1.5 has the forward marginal N(1.5 alpha_t, sigma_t^2)."
    point = dn.GaussianMixture([[1.5]], [1e-12]); mp = point.marginal(P, P.t_max)
    steps = gaussian_moments(point.denoiser(P), mp.means[0], mp.covs[0], 'ddpm', steps=5)
    for mo in steps[:-1]:
        assert abs(mo.mean.item() - 1.5 * P.alpha(mo.t).item()) < 1e-6 and abs(mo.cov.item() - P.sigma(mo.t).item()**2) < 1e-6
    assert abs(steps[-1].mean.item() - 1.5) < 1e-6 and steps[-1].cov.item() < 1e-6

def test_analytic_dpm_per_coordinate_is_exact_for_anisotropic_data():
    "Two Analytic-DPM steps on N(0, diag(1, 0.01)): a per-coordinate variance gets both marginal variances, one shared variance misses the small one."
    gD = dn.GaussianMixture([[0., 0.]], [[[1., 0.], [0., 0.01]]]); mD = gD.marginal(P, P.t_max)
    train, target = gD.sample(100_000, generator=torch.Generator().manual_seed(8)), gD.marginal(P, P.t_min).covs[0].diagonal()
    ratio = {dg: gaussian_moments(gD.denoiser(P), mD.means[0], mD.covs[0], 'analytic_dpm', steps=2, data=train, diagonal=dg,
                                  generator=1, denoise=False)[-1].cov.diagonal() / target for dg in (False, True)}
    assert ((ratio[True] - 1).abs() < 0.03).all() and ratio[False][1] > 10, ratio
