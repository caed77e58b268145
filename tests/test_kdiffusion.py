"Differential tests against k-diffusion: the same x_T, grid and noise, step for step, for the samplers both libraries have."
import inspect, sys
from pathlib import Path
import pytest
import torch
import diffnb as dn

sys.path.insert(0, str(Path(__file__).parents[1] / 'benchmarks'))
from samplers import kdiffusion   # k_diffusion.sampling, loaded alone (its package imports need more than k-diffusion's own files)

GM = dn.GaussianMixture([[-1., 0.5], [1., -0.3], [0.2, 1.2]], [0.3, 0.2, 0.4], [0.3, 0.4, 0.3])
CASES = [('euler_ancestral', 'sample_euler_ancestral', dict(eta=1.)), ('euler_ancestral', 'sample_euler_ancestral', dict(eta=0.5)),
         ('dpm_2', 'sample_dpm_2', {}), ('dpmpp_2s_ancestral', 'sample_dpmpp_2s_ancestral', dict(eta=1.)),
         ('dpmpp_2s_ancestral', 'sample_dpmpp_2s_ancestral', dict(eta=0.)), ('dpmpp_sde', 'sample_dpmpp_sde', dict(eta=1.)), ('dpmpp_sde', 'sample_dpmpp_sde', dict(eta=0.5)), ('lms', 'sample_lms', {}), ('euler', 'sample_euler', {}), ('heun', 'sample_heun', {}),
         ('dpmpp_2m', 'sample_dpmpp_2m', {})]

def _noise(seed, like):
    g = torch.Generator().manual_seed(seed)
    return g, (lambda sigma, sigma_next: torch.randn(like.shape, generator=g, dtype=like.dtype))

def _both(path, kind, method, kname, opts):
    "k-diffusion, the path, the exact denoiser, x_T, an 8-step grid, diffnb's last state (no final denoise), and k-diffusion's noise option."
    K, P = kdiffusion(), dn.get_path(path)
    den = GM.denoiser(P)
    xT = P.prior(64, (2,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grid = dn.time_grid(P, 8, kind)
    ours = dn.sample(den, xT, method, grid=grid, denoise=False, generator=torch.Generator().manual_seed(5), **opts)
    _, ns = _noise(5, xT)                                            # the same seed: the same draws in the same order
    return K, P, den, xT, grid, ours, dict(noise_sampler=ns) if 'noise_sampler' in inspect.signature(getattr(K, kname)).parameters else {}

@pytest.mark.parametrize('method, kname, opts', CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_edm_path_equals_kdiffusion_step_for_step(method, kname, opts):
    "On the EDM path (x and sigma are k-diffusion's): the same states to 1e-10 in float64, on a Karras grid."
    K, P, den, xT, grid, ours, kw = _both('edm', 'karras', method, kname, opts)
    theirs = getattr(K, kname)(lambda x, s: den.x0(x, s), xT.clone(), grid, disable=True, **kw, **opts)
    assert (ours - theirs).abs().max().item() < 1e-10

@pytest.mark.parametrize('method, kname, opts', CASES[:8], ids=[f"{c[0]}-{c[2]}" for c in CASES[:8]])
def test_vp_path_equals_kdiffusion_in_its_coordinates(method, kname, opts):
    "On the VP path, k-diffusion runs on x / alpha against sigma / alpha; diffnb's states, divided by alpha, are the same to 1e-8."
    K, P, den, xT, grid, ours, kw = _both('vp', 'log_snr', method, kname, opts)
    a, s = P.alpha(grid), P.sigma(grid)
    ours = ours / a[-1]
    t_of = lambda ratio: P.t_of_log_snr(-2 * torch.log(ratio)).to(torch.float64)
    def model(xt, ratio):                                        # the denoiser in k-diffusion's coordinates
        t = t_of(ratio)
        return den.x0(P.alpha(t)[:, None] * xt, t)
    theirs = getattr(K, kname)(model, xT.clone() / a[0], s / a, disable=True, **kw, **opts)
    assert (ours - theirs).abs().max().item() < 1e-8

def test_sample_takes_a_kdiffusion_style_callback():
    "dn.sample(..., callback=) sees every step with k-diffusion's names; sigma is sigma/alpha, denoised the step's x0-hat."
    P = dn.get_path('vp')
    seen = []
    x = dn.sample(GM.denoiser(P), 16, 'dpm_2', steps=5, shape=(2,), callback=seen.append)
    assert [d['i'] for d in seen] == [1, 2, 3, 4, 5] and seen[-1]['x'] is not None and torch.equal(seen[-1]['x'], x)
    t = seen[0]['t']
    assert seen[0]['sigma'] == pytest.approx((P.sigma(t) / P.alpha(t)).item()) and seen[0]['denoised'] is seen[0]['x0']

def test_dpmpp_2m_sde_equals_kdiffusions_midpoint_form_until_its_last_step():
    """SDE-DPM-Solver++(2M) is k-diffusion's sample_dpmpp_2m_sde (solver_type='midpoint', eta=1) state for state; diffnb's last step, to t_min,
    is deterministic and first order (no noise left to add at the end), so the comparison stops before it."""
    K, P = kdiffusion(), dn.get_path('edm')
    den = GM.denoiser(P)
    xT = P.prior(64, (2,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grid = dn.time_grid(P, 8, 'karras')
    ours = [s.x for s in dn.sample_iter(den, xT, 'dpmpp_2m_sde', grid=grid, denoise=False, generator=torch.Generator().manual_seed(5))]
    seen = []
    _, ns = _noise(5, xT)
    K.sample_dpmpp_2m_sde(lambda x, s: den.x0(x, s), xT.clone(), grid, disable=True, noise_sampler=ns, callback=lambda d: seen.append(d['x']))
    assert len(seen) == len(ours) == 8
    assert max((a - b).abs().max().item() for a, b in zip(ours[:-1], seen[1:])) < 1e-10

def test_edm_churn_is_algorithm_2_as_kdiffusions_sample_heun_runs_it():
    "EDM's stochastic sampler (Karras et al. 2022, Algorithm 2: churn inside [S_min, S_max], noise scaled by S_noise) equals k-diffusion's sample_heun with the same draws."
    K, P = kdiffusion(), dn.get_path('edm')
    den = GM.denoiser(P)
    xT = P.prior(64, (2,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grid = dn.time_grid(P, 12, 'karras', t_max=40.)                   # sigma_hat = 40 (1 + gamma) stays inside the path's range
    opts = dict(S_churn=30., S_min=0.05, S_max=50., S_noise=1.003)       # churn from the first step: sample_heun draws noise at every step, used or not
    ours = dn.sample(den, xT / 2, 'edm', grid=grid, denoise=False, generator=torch.Generator().manual_seed(5), **opts)
    torch.manual_seed(5)                                              # sample_heun draws its churn noise from torch's default generator
    theirs = K.sample_heun(lambda x, s: den.x0(x, s), xT.clone() / 2, grid, disable=True, s_churn=30., s_tmin=0.05, s_tmax=50., s_noise=1.003)
    plain = dn.sample(den, xT / 2, 'edm', grid=grid, denoise=False)
    assert (ours - theirs).abs().max().item() < 1e-10 and (ours - plain).abs().max().item() > 1e-3    # the churn did something
