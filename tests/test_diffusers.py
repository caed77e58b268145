"""Differential tests against diffusers' schedulers: the same x_T, the same times and the same noise, step for step.

diffnb's `ddpm` path is diffusers' discrete schedule (linear betas, T = 1000) with step k at t = (k + 1) / T, so a scheduler's integer
timesteps are a diffnb grid. The model is one exact denoiser, seen by diffusers as an eps-prediction network at timestep k. diffusers
keeps its sigmas in float32 and DEIS's closed-form third-order weights lose 1e-5 to cancellation there, so each scheduler is given the
path's own sigma/alpha in float64 at its timesteps: then the states agree to float64 rounding, and the test compares the algorithms alone.
"""
import pytest
import torch
import diffnb as dn
from diffusers import UniPCMultistepScheduler, DEISMultistepScheduler, LMSDiscreteScheduler, EulerAncestralDiscreteScheduler

T = 1000
P = dn.get_path('ddpm', betas='linear', T=T)
GM = dn.GaussianMixture([[-1., 0.5], [1., -0.3], [0.2, 1.2]], [0.3, 0.2, 0.4], [0.3, 0.4, 0.3])
DEN = GM.denoiser(P)
BETAS = dict(num_train_timesteps=T, beta_schedule='linear', beta_start=1e-4, beta_end=0.02)

def eps_model(x, k):
    "diffusers' view of the denoiser: eps at integer timestep k."
    return DEN.eps(x, P.t_of_step(torch.as_tensor(k)).expand(x.shape[0]))

def x_T(seed=4):
    return P.prior(32, (2,), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

def exact_sigmas(sch, ks:list, last:float|None):
    "Give the scheduler diffnb's sigma/alpha at its timesteps in float64 (and `last` at the end: sigma/alpha at k = 0, or 0)."
    t = P.t_of_step(torch.tensor(ks))
    sig = P.sigma(t) / P.alpha(t)
    sch.sigmas = torch.cat([sig, torch.tensor([last], dtype=torch.float64)])

def sig_at(k): return (P.sigma(P.t_of_step(k)) / P.alpha(P.t_of_step(k))).item()

def ours(method, x, grid, seed=5, **opts) -> list:
    "diffnb's state after every step (no final denoise)."
    return [s.x for s in dn.sample_iter(DEN, x.clone(), method, grid=grid, denoise=False, generator=torch.Generator().manual_seed(seed), **opts)]

def _vp_run(sch, steps:int) -> tuple:
    "A VP-space multistep scheduler run from x_T down to k = 0: diffnb's grid for its timesteps, x_T, and its state after each step."
    sch.set_timesteps(steps)
    ks = sch.timesteps.tolist()
    exact_sigmas(sch, ks, sig_at(0))
    x = x_T()
    theirs, xd = [], x.clone()
    for k in ks:
        xd = sch.step(eps_model(xd, k), k, xd).prev_sample
        theirs.append(xd)
    return torch.cat([P.t_of_step(torch.tensor(ks)), P.t_of_step(torch.tensor([0]))]), x, theirs

UNIPC = [dict(solver_order=2, solver_type='bh2'), dict(solver_order=2, solver_type='bh1'), dict(solver_order=3, solver_type='bh2'),
         dict(solver_order=3, solver_type='bh1'), dict(solver_order=2, solver_type='bh2', disable_corrector=list(range(100))),
         dict(solver_order=1, solver_type='bh2')]

@pytest.mark.parametrize('cfg', UNIPC, ids=lambda c: '-'.join(f"{k}={v if k != 'disable_corrector' else 'all'}" for k, v in c.items()))
@pytest.mark.parametrize('steps', [6, 20])
def test_unipc_equals_diffusers_step_for_step(cfg, steps):
    "UniPC (UniP predictor, UniC corrector at no extra call, lower orders at the end) from diffusers' own timesteps down to k = 0."
    sch = UniPCMultistepScheduler(**BETAS, final_sigmas_type='sigma_min', **cfg)
    grid, x, theirs = _vp_run(sch, steps)
    mine = ours('unipc', x, grid, solver_order=cfg['solver_order'], variant=cfg['solver_type'], corrector='disable_corrector' not in cfg)
    assert len(mine) == len(theirs) == steps
    assert max((a - b).abs().max().item() for a, b in zip(mine, theirs)) < 1e-10

@pytest.mark.parametrize('order', [1, 2, 3])
@pytest.mark.parametrize('steps', [8, 20])
def test_deis_equals_diffusers_step_for_step(order, steps):
    "DEIS in log rho (diffusers' only form), with its warm-up and, for runs under 15 steps, its lower orders at the end."
    grid, x, theirs = _vp_run(DEISMultistepScheduler(**BETAS, solver_order=order), steps)
    mine = ours('deis', x, grid, solver_order=order)
    assert max((a - b).abs().max().item() for a, b in zip(mine, theirs)) < 1e-10

def _sigma_space(Sched, steps, method, seed=None, **opts):
    "A sigma-space scheduler (x~ = x / alpha against sigma~ = sigma / alpha) on 'trailing' integer timesteps; it ends at sigma = 0, so the last step is left out."
    sch = Sched(**BETAS, timestep_spacing='trailing')
    sch.set_timesteps(steps)
    ks = sch.timesteps.tolist()
    exact_sigmas(sch, ks, 0.)
    grid = torch.cat([P.t_of_step(torch.tensor(ks)), torch.tensor([P.t_min], dtype=torch.float64)])
    x = x_T()
    a = P.alpha(grid)
    g = torch.Generator().manual_seed(5)
    theirs, xd = [], x.clone() / a[0]
    for k in ks:
        out = eps_model(sch.scale_model_input(xd, k), k)
        xd = sch.step(out, k, xd, **({'generator': g} if seed else {})).prev_sample
        theirs.append(xd)
    mine = [s / a[j + 1] for j, s in enumerate(ours(method, x, grid, **opts))]
    return mine[:-1], theirs[:-1]

@pytest.mark.parametrize('steps', [8, 25])
def test_lms_equals_diffusers_before_its_step_to_sigma_zero(steps):
    "LMSDiscreteScheduler (order 4, coefficients by quadrature) and diffnb's lms, in diffusers' coordinates."
    mine, theirs = _sigma_space(LMSDiscreteScheduler, steps, 'lms')
    assert max((a - b).abs().max().item() for a, b in zip(mine, theirs)) < 1e-10

@pytest.mark.parametrize('steps', [8, 25])
def test_euler_ancestral_equals_diffusers_with_the_same_noise(steps):
    "EulerAncestralDiscreteScheduler draws its noise from the generator it is given, in the same order as diffnb's euler_ancestral."
    mine, theirs = _sigma_space(EulerAncestralDiscreteScheduler, steps, 'euler_ancestral', seed=5)
    assert max((a - b).abs().max().item() for a, b in zip(mine, theirs)) < 1e-4    # this scheduler casts the state to float32 at each step
