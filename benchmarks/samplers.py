"""Sampler benchmark: diffnb against diffusers and k-diffusion, on the same exact denoiser.

What is compared
----------------
* diffnb: ddim, ddpm, dpmpp_2m, dpmpp_3m, unipc, deis, lms, dpm_2, dpmpp_2m_sde, dpmpp_sde, dpmpp_2s_ancestral,
  euler_ancestral, edm, restart (one restart of two steps, RESTART: 4 calls beyond the grid's), analytic_dpm and sde
  (gamma = 1, i.e. Euler-Maruyama on the reverse SDE), on the EDM path (alpha = 1, sigma = t in [0.002, 80]) with every
  time-grid kind of `dn.TIME_GRIDS` but 'uniform' (log_snr, karras, auto) for the methods in ALL_GRIDS and on 'auto', each
  method's own default grid, for the rest; and, when diffnb has `fit_grid`, the 'fitted' grid for the samplers in FITTED up to FIT_MAX_NFE, fitted once per problem, method and step count on a 512-point pilot
  (those calls are auxiliary, see below) and reused by every seed; `--grids` picks. 'auto' is each method's own
  data-scaled grid (`SAMPLERS[m].jump`). Two control rows (ddim, dpmpp_2m) run on the discrete `ddpm` path that
  diffusers uses. On the EDM path euler is ddim and heun is edm, step for step (identical numbers), so they are run
  only with `--twins`. 'auto' grids are given the mixture's RMS radius, as `GaussianMixture.denoiser` does. The
  adaptive dopri5 is run at two tolerances and reported on its own.
* diffusers: DDPM, DDIM, DPMSolverMultistep (with and without Karras sigmas), UniPCMultistep, DEISMultistep, all on
  the DDPM linear-beta schedule (T = 1000, betas 1e-4..0.02) with an eps-prediction model called at
  the scheduler's integer timestep k (diffnb's `ddpm` path: t = (k + 1) / T), as a real discrete-time
  network would be; EulerDiscrete, HeunDiscrete, LMSDiscrete and EulerAncestralDiscrete, which work in sigma space,
  get the same eps model evaluated at the scheduler's own sigma (input scaled by `scale_model_input`, as in a
  pipeline). Every other scheduler option is the library default, except clip_sample=False (the data are not in
  [-1, 1]).
* k-diffusion: sample_euler, sample_heun, sample_lms, sample_dpm_2, sample_dpmpp_2m, sample_euler_ancestral,
  sample_dpmpp_2s_ancestral, sample_dpmpp_sde, sample_dpmpp_2m_sde, sample_dpmpp_3m_sde with
  get_sigmas_karras(sigma_min=0.002, sigma_max=80, rho=7), and sample_dpm_adaptive at two tolerances.
  The SDE samplers get seeded independent Gaussian increments instead of their default Brownian tree.

How
---
Every library calls ONE `CountingModel`: the exact posterior mean E[x0 | x_t] of a Gaussian mixture
(`GaussianMixture.x0`, float64 inside), seen through a thin view per library (diffnb `Denoiser` with
param='x0', diffusers eps model on discrete timesteps or on sigma, k-diffusion denoiser D(x, sigma)).
The object counts every batched call and times it, so NFE is measured, not claimed: a call on the
sample batch is one NFE; calls on any other batch (analytic_dpm's variance estimate on 1000 training
points; fit_grid's pilot runs) are counted apart as auxiliary calls and listed in the notes. Every
sampler starts from an exact draw of the marginal p_t at its own first time, so no one is penalised
by a prior mismatch, and the state is float32 for every library.

Problems: the 2-D ring of 8 thin modes (`dn.ring_mixture()`) and a 32-D mixture of 6 full-covariance
Gaussians (`dn.random_mixture(d=32, k=6, seed=0)`), n samples each (20000 by default). For each NFE
budget a fixed-step sampler takes the largest number of steps whose NFE fits the budget.

Metrics, each divided by its noise floor (the same metric between two independent draws of the truth
at the same n, `dn.noise_floor`, computed once per problem), so 1.0x is as good as n samples can show:
sliced W2 against a fresh draw of the truth (fixed projection directions for every run), mode-weight
total variation and mode-conditional W2 (`dn.mode_coverage`). Cells are mean +- standard error over
seeds; the best cell of each column is bold.

`--overhead` instead measures the per-step cost of each library's machinery: each sampler runs with a
trivial model (x0-hat = x / 2, or the eps/denoiser that implies) on 100k 2-D points, on 64 images of
3x32x32, and on 100 2-D points (where the passes over the state cost next to nothing: the Python alone); overhead = (wall time - time inside the model views - time drawing the initial state) / NFE,
in microseconds, median over repeats, next to a hand-written torch Euler loop, and next to a hand-written loop of the same
kind of work ("own loop": Dormand-Prince, predictor-corrector, ancestral Euler for the other stochastic steps, k-diffusion's
linear multistep method for the steps that combine three or more past evaluations).

Run (from the repository root)
------------------------------
    .venv/bin/python benchmarks/samplers.py --quick            # smoke test: ~40 s on 2 idle CPU cores (mostly fit_grid)
    .venv/bin/python benchmarks/samplers.py --overhead --repeats 21 --out    # per-step overhead table (results/overhead.md): ~1.5 min idle
    .venv/bin/python benchmarks/samplers.py --n 10000 --nfe 10 20 50 --cap mix32=20 --out   # how results/samplers.md was made:
                                                                    # 6.5 min on 2 CPU cores (15 before numpy's sort and the leaner oracle)
    .venv/bin/python benchmarks/samplers.py --n 20000 --nfe 10 20 --problems ring --out benchmarks/results/samplers_10_20.md
                                                                    # the ring at 10 and 20 NFE with twice the samples: about 2 min
    .venv/bin/python benchmarks/samplers.py --out               # everything, NFE up to 100 on both problems too:
                                                                 # over an hour on 2 CPU cores, mostly the 32-D oracle
Progress goes to stderr, one line per run; the markdown to stdout (and to --out).
"""
from __future__ import annotations
import argparse, importlib.util, inspect, math, os, statistics, sys, time, types, warnings
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Callable
import torch
import diffnb as dn

T_TRAIN = 1000
EDM = dn.get_path('edm')                              # diffnb's own runs: sigma = t in [0.002, 80]
DDPM = dn.get_path('ddpm', betas='linear', T=T_TRAIN)  # diffusers' discrete schedule: t = (k + 1) / T
SIGMA = dn.get_path('edm', t_min=1e-3, t_max=200.)    # sigma space of the sigma-space peers (DDPM's sigma_max is 157)
PATHS = {'edm': EDM, 'ddpm': DDPM}
DIFFUSERS_BETAS = dict(num_train_timesteps=T_TRAIN, beta_schedule='linear', beta_start=1e-4, beta_end=0.02)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.
OUT_DEFAULT = FilePath(__file__).parent / 'results' / 'samplers.md'
OUT_OVERHEAD = FilePath(__file__).parent / 'results' / 'overhead.md'


# ----------------------------------------------------------------------------------------------
# The one shared model

class CountingModel:
    "The model every library calls: `x0_fn(x, t, path)` behind one counter and one timer, with a view per library."
    def __init__(self, x0_fn:Callable, batch:int, data_scale:float|None=None):
        self.x0_fn, self.batch, self.data_scale = x0_fn, batch, data_scale   # data_scale: RMS radius, for diffnb's 'auto' grid
        self.reset()
        self.pilot = False    # True while a grid is fitted: every call is auxiliary
    def reset(self): self.nfe, self.aux, self.seconds = 0, 0, 0.
    def _timed(self, x, fn):
        t0 = time.perf_counter()
        with torch.no_grad(): out = fn()
        self.seconds += time.perf_counter() - t0
        if x.shape[0] == self.batch and not self.pilot: self.nfe += 1
        else: self.aux += 1
        return out
    def for_diffnb(self, path) -> dn.Denoiser:
        "A diffnb Denoiser predicting x0 (told the data's RMS radius, as `GaussianMixture.denoiser` does, where diffnb takes it)."
        kw = dict(data_scale=self.data_scale) if self.data_scale and 'data_scale' in inspect.signature(dn.Denoiser).parameters else {}
        return dn.Denoiser(lambda x, t: self._timed(x, lambda: self.x0_fn(x, t, path)), path, param='x0', **kw)
    def for_kdiffusion(self):
        "A k-diffusion denoiser D(x, sigma) (sigma space: x = x0 + sigma eps)."
        return lambda x, sigma, **_: self._timed(x, lambda: self.x0_fn(x, sigma, SIGMA))
    def for_diffusers_discrete(self):
        "A diffusers eps model(x, k) on DDPM's integer timesteps."
        def eps(x, k):
            def f():
                t = DDPM.t_of_step(k)
                a, s = DDPM.alpha(t).to(x), DDPM.sigma(t).to(x)
                return (x - a * self.x0_fn(x, t, DDPM)) / s
            return self._timed(x, f)
        return eps
    def for_diffusers_sigma(self, sched):
        "A diffusers eps model for a sigma-space scheduler: input scaled by 1/sqrt(1 + sigma^2), evaluated at sched's sigma."
        def eps(x_in, k):
            def f():
                sigma = sched.sigmas[sched.step_index].to(torch.float64)
                x = x_in * torch.sqrt(1 + sigma**2).to(x_in)
                return (x - self.x0_fn(x, sigma, SIGMA)) / sigma.to(x)
            return self._timed(x_in, f)
        return eps

@dataclass
class Context:
    "What a runner needs besides the model: the initial state at (path, t), training points, and the time spent drawing states."
    draw: Callable            # draw(path, t, generator) -> state at time t
    data: torch.Tensor        # training points for analytic_dpm
    grids: dict = field(default_factory=dict)   # fitted diffnb grids, (path, method, steps) -> grid, shared across seeds
    seconds: float = 0.
    def init(self, path, t, g):
        t0 = time.perf_counter()
        x = self.draw(path, float(t), g)
        self.seconds += time.perf_counter() - t0
        return x


# ----------------------------------------------------------------------------------------------
# Samplers: one spec per row, one runner per library

@dataclass
class Spec:
    lib: str                  # 'diffnb', 'diffusers', 'k-diffusion' or 'torch'
    label: str
    name: str                 # diffnb method, diffusers class, k-diffusion function
    evals: int = 1            # model calls per step; 0: adaptive
    last_free: bool = False   # the last step needs one call fewer (a Heun step to sigma = 0)
    opts: dict = field(default_factory=dict)
    path: str = 'edm'         # diffnb: the path it samples on
    kind: str = 'log_snr'     # diffnb: the time-grid kind
    sigma_space: bool = False # diffusers: a sigma-space scheduler (Euler, Heun)
    extra: int = 0            # calls beyond the grid's (restart sampling's restarts)
    def nfe(self, steps): return self.evals * steps - (1 if self.last_free else 0) + self.extra
    def steps_for(self, budget):
        "The largest number of steps whose NFE fits the budget (None when even one step does not)."
        s = max(1, (budget - self.extra + (1 if self.last_free else 0)) // max(self.evals, 1))
        return s if self.nfe(s) <= budget else None
    def run(self, model, ctx, steps, g): return RUNNERS[self.lib](self, model, ctx, steps, g)

def run_diffnb(spec, model, ctx, steps, g):
    P = PATHS[spec.path]
    den = model.for_diffnb(P)
    opts = dict(spec.opts)
    if spec.name == 'analytic_dpm' and opts.get('x0_var') == 'once':   # measured once per path and steps, outside the timed rounds
        key = ('x0_var', spec.path, spec.kind, steps)
        if key not in ctx.grids:
            model.pilot = True
            try: ctx.grids[key] = dn.samplers.x0_variances(den, ctx.data, dn.time_grid(P, steps, spec.kind), generator=40_000)
            finally: model.pilot = False
        opts['x0_var'] = ctx.grids[key]
    elif spec.name == 'analytic_dpm': opts['data'] = ctx.data
    grid = None
    if spec.kind == 'fitted':   # fitted once per problem, path, method and steps (a one-off like training), on a 512-point pilot
        key = (spec.path, spec.name, steps)
        if key not in ctx.grids:
            model.pilot = True
            pilot = ctx.draw(P, P.t_max, torch.Generator().manual_seed(30_000))[:512]   # exact draws at t_max, like every start
            try: ctx.grids[key] = dn.fit_grid(den, steps, pilot=pilot, method=spec.name)
            finally: model.pilot = False
        grid = ctx.grids[key]
    x = ctx.init(P, P.t_max, g)
    kw = dict(grid=grid) if grid is not None else dict(kind=spec.kind)
    return dn.sample(den, x, spec.name, steps=steps, generator=g, **kw, **opts)

def run_diffusers(spec, model, ctx, steps, g):
    import diffusers
    sched = getattr(diffusers, spec.name)(**DIFFUSERS_BETAS, **spec.opts)
    sched.set_timesteps(steps)
    if spec.sigma_space: net, x = model.for_diffusers_sigma(sched), ctx.init(SIGMA, sched.sigmas[0], g)
    else: net, x = model.for_diffusers_discrete(), ctx.init(DDPM, DDPM.t_of_step(sched.timesteps[0]), g)
    kw = dict(generator=g) if 'generator' in inspect.signature(sched.step).parameters else {}
    for k in sched.timesteps:
        x = sched.step(net(sched.scale_model_input(x, k), k), k, x, **kw).prev_sample
    return x

def run_kdiffusion(spec, model, ctx, steps, g):
    K = kdiffusion()
    net = model.for_kdiffusion()
    if spec.evals == 0:
        x = ctx.init(SIGMA, SIGMA_MAX, g)
        return K.sample_dpm_adaptive(net, x, SIGMA_MIN, SIGMA_MAX, disable=True, **spec.opts)
    sigmas = K.get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX, rho=7.)
    x = ctx.init(SIGMA, sigmas[0], g)
    fn = getattr(K, spec.name)
    kw = {}
    if 'noise_sampler' in inspect.signature(fn).parameters:
        kw['noise_sampler'] = lambda sigma, sigma_next: torch.randn(x.shape, generator=g, dtype=x.dtype)
    return fn(net, x, sigmas, disable=True, **kw, **spec.opts)

def run_torch(spec, model, ctx, steps, g):
    """The hand-written baselines on Karras sigmas, last step to sigma = 0: Euler on the probability-flow ODE in sigma ('euler'),
    or ancestral Euler ('euler_ancestral': a deterministic step to sigma_down, then fresh noise of std sigma_up), the least a stochastic step costs;
    'dopri5' and 'pc' are the same algorithms as diffnb's, written plainly, the baselines for steps that do more work per call."""
    net = model.for_kdiffusion()
    i = torch.arange(steps, dtype=torch.float64) / max(steps - 1, 1)
    sig = ((SIGMA_MAX**(1 / 7) + i * (SIGMA_MIN**(1 / 7) - SIGMA_MAX**(1 / 7)))**7).tolist() + [0.]
    x = ctx.init(SIGMA, sig[0], g)
    if spec.name == 'dopri5': return run_torch_dopri5(net, x)
    if spec.name == 'pc': return run_torch_pc(net, x, sig, g)
    if spec.name in ('lms', 'lms_lean'): return run_torch_lms(net, x, sig, lean=spec.name == 'lms_lean')
    for s0, s1 in zip(sig[:-1], sig[1:]):
        if spec.name == 'euler' or s1 == 0: x = x + (s1 - s0) / s0 * (x - net(x, s0)); continue
        up = min(s1, (s1**2 * (s0**2 - s1**2) / s0**2) ** 0.5); down = (s1**2 - up**2) ** 0.5
        x = (x + (down - s0) / s0 * (x - net(x, s0))).add_(torch.randn(x.shape, generator=g, dtype=x.dtype), alpha=up)
    return x

DP_A = ((), (1/5,), (3/40, 9/40), (44/45, -56/15, 32/9), (19372/6561, -25360/2187, 64448/6561, -212/729),
        (9017/3168, -355/33, 46732/5247, 49/176, -5103/18656), (35/384, 0., 500/1113, 125/192, -2187/6784, 11/84))
DP_C = (0., 1/5, 3/10, 4/5, 8/9, 1., 1.)
DP_E = (71/57600, 0., -71/16695, 71/1920, -17253/339200, 22/525, -1/40)   # 5th-order minus 4th-order weights

def run_torch_dopri5(net, x, rtol=1e-5, atol=1e-5):
    """Dormand-Prince 5(4) on dx/dsigma = (x - D(x, sigma)) / sigma from SIGMA_MAX to SIGMA_MIN, as a user writes it from the
    Butcher tableau (Dormand & Prince 1980; Hairer et al.'s step control with growth in [0.2, 10]), then D at SIGMA_MIN."""
    f = lambda y, s: (y - net(y, s)) / s
    s, h, k1 = SIGMA_MAX, -(SIGMA_MAX - SIGMA_MIN) / 100, f(x, SIGMA_MAX)
    while s > SIGMA_MIN:
        h = max(h, SIGMA_MIN - s)
        ks = [k1]
        for a, c in zip(DP_A[1:], DP_C[1:]):
            y = x + h * sum(ai * k for ai, k in zip(a, ks) if ai)
            ks.append(f(y, s + c * h))
        err = h * sum(e * k for e, k in zip(DP_E, ks) if e)
        ratio = (err / (atol + rtol * torch.maximum(x.abs(), y.abs()))).pow(2).mean().sqrt().item()
        if ratio <= 1: x, s, k1 = y, s + h, ks[-1]
        h *= min(10., max(0.2, 0.9 * max(ratio, 1e-10)**-0.2))
    return net(x, SIGMA_MIN)

def lms_coefficients(sig:list, order:int=4) -> list:
    "Per step i: the integrals over [sigma_i, sigma_{i+1}] of the Lagrange basis polynomials through sigma_i, sigma_{i-1}, ... (16-point Gauss-Legendre)."
    import numpy as np
    u, w = np.polynomial.legendre.leggauss(16)
    out = []
    for i in range(len(sig) - 1):
        nodes, lo, hi = sig[i::-1][:order], sig[i], sig[i + 1]
        uu, ww = (hi - lo) / 2 * u + (hi + lo) / 2, (hi - lo) / 2 * w
        out.append([float(np.prod([np.ones_like(uu)] + [(uu - nm) / (nj - nm) for m, nm in enumerate(nodes) if m != j], axis=0) @ ww) for j, nj in enumerate(nodes)])
    return out

def run_torch_lms(net, x, sig, order=4, lean=False):
    """k-diffusion's linear multistep method (order 4) as a user writes it, its coefficients computed before the loop: the baseline of
    the multistep steps that combine three or more past evaluations (lms, deis, unipc, dpmpp_3m). With `lean`, the same update in the
    fewest full-size passes torch allows, written as a floor rather than as a user would: each slope x - D(x) formed once, its 1/sigma
    in the weights, the update one torch.add and in-place adds (five passes a call for four slopes), and no other work (no check)."""
    coeffs, ds = lms_coefficients(sig, order), []
    for i, s0 in enumerate(sig[:-1]):
        if lean:
            ds = [(x - net(x, s0), s0)] + ds[:order - 1]
            out = torch.add(x, ds[0][0], alpha=coeffs[i][0] / s0)
            for c, (e, s) in zip(coeffs[i][1:], ds[1:]): out.add_(e, alpha=c / s)
            x = out
            continue
        ds = [(x - net(x, s0)) / s0] + ds[:order - 1]
        x = x + sum(c * d for c, d in zip(coeffs[i], ds))
    return x

def run_torch_pc(net, x, sig, g, snr=0.16):
    """Song et al.'s predictor-corrector (2021, Algorithms 2 and 4, VE form in sigma): a reverse-SDE step, then one Langevin step
    at the new level with size 2 (snr |z| / |score|)^2; the last step a plain denoise."""
    mean_norm = lambda v: v.flatten(1).norm(dim=1).mean()
    for s0, s1 in zip(sig[:-1], sig[1:]):
        if s1 == 0: x = net(x, s0); continue
        var = s0**2 - s1**2
        x = (x + var / s0**2 * (net(x, s0) - x)).add_(torch.randn(x.shape, generator=g, dtype=x.dtype), alpha=var**0.5)
        score, z = (net(x, s1) - x) / s1**2, torch.randn(x.shape, generator=g, dtype=x.dtype)
        e = 2 * (snr * mean_norm(z).item() / mean_norm(score).item())**2
        x = (x + e * score).add_(z, alpha=(2 * e)**0.5)
    return x

RUNNERS = {'diffnb': run_diffnb, 'diffusers': run_diffusers, 'k-diffusion': run_kdiffusion, 'torch': run_torch}

_KD = None
def kdiffusion():
    "k_diffusion.sampling; when the package's heavy imports fail, the file alone with a stub of the one utility it uses."
    global _KD
    if _KD is not None: return _KD
    try:
        import k_diffusion.sampling as K
    except Exception:
        root = importlib.util.find_spec('k_diffusion').submodule_search_locations[0]
        pkg, utils = types.ModuleType('_kdiffusion'), types.ModuleType('_kdiffusion.utils')
        pkg.__path__ = [root]
        def append_dims(x, target_dims):   # k_diffusion.utils.append_dims, verbatim
            dims_to_append = target_dims - x.ndim
            if dims_to_append < 0: raise ValueError(f'input has {x.ndim} dims but target_dims is {target_dims}, which is less')
            return x[(...,) + (None,) * dims_to_append]
        utils.append_dims, pkg.utils = append_dims, utils
        sys.modules.update({'_kdiffusion': pkg, '_kdiffusion.utils': utils})
        spec = importlib.util.spec_from_file_location('_kdiffusion.sampling', f'{root}/sampling.py')
        K = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = K
        spec.loader.exec_module(K)
    _KD = K
    return K

DIFFNB_METHODS = ('ddim', 'ddpm', 'euler', 'heun', 'dpmpp_2m', 'dpmpp_3m', 'unipc', 'deis', 'lms', 'dpm_2', 'dpmpp_2m_sde', 'dpmpp_sde',
                  'dpmpp_2s_ancestral', 'euler_ancestral', 'edm', 'restart', 'analytic_dpm', 'sde')
FITTED = ('dpmpp_2m', 'unipc')   # the deterministic methods given a fitted grid (each fit costs ~600 pilot runs)
ALL_GRIDS = ('ddim', 'dpmpp_2m', 'unipc')   # run on every grid kind; every other method on 'auto', its own grid
FIT_MAX_NFE = 20                                    # fitted grids only up to this budget: a fit at 50 steps costs minutes per problem
RESTART = dict(repeats=1, restart_steps=2)          # restart sampling light enough for 10-20 NFE: 4 calls beyond the grid's

def available_grids():
    return list(dn.TIME_GRIDS) + (['fitted'] if hasattr(dn, 'fit_grid') else [])

def default_grids():
    "Every time-grid kind diffnb offers but 'uniform' (uniform in sigma on the EDM path); 'fitted' when diffnb has fit_grid."
    return [k for k in dict.fromkeys(available_grids()) if k != 'uniform']

def diffnb_spec(method, kind='log_snr', path='edm', **opts):
    info = dn.SAMPLERS[method]
    tag = kind if path == 'edm' else f'{kind}, {path} path'
    if method == 'restart': opts = dict(RESTART, **opts)
    label = ''.join(f', {k}={v:g}' if isinstance(v, float) else f', {k}={v}' for k, v in opts.items())
    o = dict(info.options, **opts)
    extra = o['repeats'] * 2 * o['restart_steps'] if method == 'restart' else 0
    return Spec('diffnb', f'{method} ({tag}{label})', method, info.evals, opts=opts, path=path, kind=kind, extra=extra)

# On the EDM path (alpha = 1) these two are the same algorithm as their twin, step for step: their rows would repeat its numbers.
EDM_TWINS = {'euler': 'ddim', 'heun': 'edm'}

def deterministic(method) -> bool:
    "Deterministic at its default options (ddim at eta 0, edm without churn)."
    info = dn.SAMPLERS[method]
    return not info.stochastic or info.options.get('eta') == 0 or info.options.get('S_churn') == 0

def fixed_specs(grids, twins=False) -> list[Spec]:
    "The fixed-step rows of the benchmark (euler and heun only with twins=True: on the EDM path they equal ddim and edm)."
    specs = [diffnb_spec(m, k) for m in DIFFNB_METHODS if twins or m not in EDM_TWINS for k in grids
             if (k == 'auto' or m in ALL_GRIDS) and (k != 'fitted' or m in FITTED)]   # the others on their own grid only
    specs += [diffnb_spec(m, 'log_snr', 'ddpm') for m in ('ddim', 'dpmpp_2m')]   # controls on diffusers' path
    specs += peer_specs()
    return specs

def peer_specs() -> list[Spec]:
    nc = dict(clip_sample=False)
    return [Spec('diffusers', 'DDPMScheduler', 'DDPMScheduler', opts=nc),
            Spec('diffusers', 'DDIMScheduler', 'DDIMScheduler', opts=nc),
            Spec('diffusers', 'DPMSolverMultistepScheduler', 'DPMSolverMultistepScheduler'),
            Spec('diffusers', 'DPMSolverMultistepScheduler (karras)', 'DPMSolverMultistepScheduler', opts=dict(use_karras_sigmas=True)),
            Spec('diffusers', 'EulerDiscreteScheduler', 'EulerDiscreteScheduler', sigma_space=True),
            Spec('diffusers', 'HeunDiscreteScheduler', 'HeunDiscreteScheduler', evals=2, last_free=True, sigma_space=True),
            Spec('diffusers', 'UniPCMultistepScheduler', 'UniPCMultistepScheduler'),
            Spec('diffusers', 'DEISMultistepScheduler', 'DEISMultistepScheduler'),
            Spec('diffusers', 'LMSDiscreteScheduler', 'LMSDiscreteScheduler', sigma_space=True),
            Spec('diffusers', 'EulerAncestralDiscreteScheduler', 'EulerAncestralDiscreteScheduler', sigma_space=True),
            Spec('k-diffusion', 'sample_euler', 'sample_euler'),
            Spec('k-diffusion', 'sample_heun', 'sample_heun', evals=2, last_free=True),
            Spec('k-diffusion', 'sample_lms', 'sample_lms'),
            Spec('k-diffusion', 'sample_dpm_2', 'sample_dpm_2', evals=2, last_free=True),
            Spec('k-diffusion', 'sample_dpmpp_2m', 'sample_dpmpp_2m'),
            Spec('k-diffusion', 'sample_euler_ancestral', 'sample_euler_ancestral'),
            Spec('k-diffusion', 'sample_dpmpp_2s_ancestral', 'sample_dpmpp_2s_ancestral', evals=2, last_free=True),
            Spec('k-diffusion', 'sample_dpmpp_sde', 'sample_dpmpp_sde', evals=2, last_free=True),
            Spec('k-diffusion', 'sample_dpmpp_2m_sde', 'sample_dpmpp_2m_sde'),
            Spec('k-diffusion', 'sample_dpmpp_3m_sde', 'sample_dpmpp_3m_sde')]

def adaptive_specs(quick=False) -> list[Spec]:
    "Adaptive solvers, each at a loose and a tighter tolerance (only the loose one with --quick)."
    tols = [(1e-2, 1e-2, 0.05, 0.0078)] + ([] if quick else [(1e-3, 1e-3, 0.01, 0.0016)])
    out = []
    for rt, at, krt, kat in tols:
        out.append(Spec('diffnb', f'dopri5 (rtol={rt:g}, atol={at:g})', 'dopri5', 0, opts=dict(rtol=rt, atol=at)))
        out.append(Spec('k-diffusion', f'sample_dpm_adaptive (rtol={krt:g}, atol={kat:g})', 'sample_dpm_adaptive', 0, opts=dict(rtol=krt, atol=kat)))
    return out


# ----------------------------------------------------------------------------------------------
# Quality benchmark

PROBLEMS = {'ring': lambda: dn.ring_mixture(), 'mix32': lambda: dn.random_mixture(d=32, k=6, seed=0)}
PROBLEM_TITLES = {'ring': 'ring: 2-D, 8 thin modes (dn.ring_mixture())', 'mix32': '32-D mixture of 6 full-covariance Gaussians (dn.random_mixture(d=32, k=6, seed=0))'}
METRICS = (('sw', 'sliced W2'), ('tv', 'mode-weight TV'), ('w2', 'mode-conditional W2'))

def sliced_w2(n_proj):
    "Sliced W2 with the same projection directions on every call (common random numbers across samplers)."
    return lambda x, y: dn.sliced_wasserstein(x, y, n_proj=n_proj, generator=torch.Generator().manual_seed(0))

def run_problem(name, specs, adaptive, budgets, seeds, n, n_proj, log):
    "Every (spec, budget, seed) run on one problem: {'floor': ..., 'runs': {label: {budget: [result, ...]}}}."
    gm = PROBLEMS[name]()
    sw = sliced_w2(n_proj)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        mc = dn.noise_floor(dn.mode_coverage, gm, n, reps=3, generator=torch.Generator().manual_seed(777))
        floor = dict(sw=dn.noise_floor(sw, gm, n, reps=3, generator=torch.Generator().manual_seed(778)), tv=mc.weight_tv, w2=mc.mode_w2)
    runs = {s.label: {} for s in specs + adaptive}
    rms = math.sqrt((gm.weights * ((gm.means**2).sum(1) + gm.covs.diagonal(dim1=1, dim2=2).sum(1))).sum().item())
    model = CountingModel(lambda x, t, path: gm.x0(x, t, path), n, rms)
    draw = lambda path, t, g: gm.marginal(path, t).sample(n, generator=g)
    grids = {}
    for seed in seeds:
        truth = gm.sample(n, generator=torch.Generator().manual_seed(10_000 + seed))
        ctx = Context(draw, gm.sample(1000, generator=torch.Generator().manual_seed(20_000 + seed)), grids)
        jobs = [(s, b, s.steps_for(b)) for s in specs for b in budgets] + [(s, 'adaptive', 8) for s in adaptive]
        for spec, budget, steps in jobs:
            if steps is None or (spec.kind == 'fitted' and isinstance(budget, int) and budget > FIT_MAX_NFE): continue
            model.reset()
            t0 = time.perf_counter()
            try:
                x = spec.run(model, ctx, steps, torch.Generator().manual_seed(seed))
                r = mode_metrics(x, gm, truth, sw)
            except Exception as e:   # a failing sampler is a result, not a crash
                r = dict(error=f'{type(e).__name__}: {str(e).splitlines()[0][:160]}')
            r.update(nfe=model.nfe, aux=model.aux, steps=steps, seconds=time.perf_counter() - t0)
            runs[spec.label].setdefault(budget, []).append(r)
            log(f"{name} seed {seed} | {spec.lib:11s} {spec.label:48s} budget {budget!s:>8} steps {steps:3d} nfe {model.nfe:4d}"
                f" | {r.get('error') or 'sw %.4f tv %.4f w2 %.4f' % (r['sw'], r['tv'], r['w2'])} ({r['seconds']:.1f}s)")
    return dict(floor=floor, runs=runs, budgets=budgets)

def mode_metrics(x, gm, truth, sw):
    rep = dn.mode_coverage(x, gm)
    return dict(sw=sw(x, truth), tv=rep.weight_tv, w2=rep.mode_w2, coverage=rep.coverage)


# ----------------------------------------------------------------------------------------------
# Markdown

def mean_se(v):
    v = [float(a) for a in v]
    if not v or not all(math.isfinite(a) for a in v): return math.nan, math.nan
    return statistics.fmean(v), (statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else math.nan)

def fmt_ratio(m, se):
    if not math.isfinite(m): return 'fail'
    s = f'{m:.3g}x' if m < 1000 else f'{m:.0f}x'
    return s + (f'±{se:.2g}' if math.isfinite(se) else '')

def ratios(results, key, floor):
    "mean and standard error of metric/floor over the seeds, or (nan, nan) when a seed failed."
    if not results or any('error' in r for r in results): return math.nan, math.nan
    return mean_se([r[key] / floor for r in results])

def table(header, rows):
    out = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' if i == 0 else '---:' for i in range(len(header))) + '|']
    out += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return '\n'.join(out)

def metric_table(specs, res, key, budgets):
    "One metric: rows = samplers, columns = budgets, the best mean of each column in bold."
    cells = {s.label: {b: ratios(res['runs'][s.label].get(b), key, res['floor'][key]) for b in budgets} for s in specs}
    best = {b: min((cells[l][b][0] for l in cells if math.isfinite(cells[l][b][0])), default=math.nan) for b in budgets}
    rows = []
    for s in specs:
        row = [s.label, s.lib]
        for b in budgets:
            m, se = cells[s.label][b]
            txt = fmt_ratio(m, se) if b in res['runs'][s.label] else 'n/a'
            row.append(f'**{txt}**' if m == best[b] else txt)
        rows.append(row)
    return table(['sampler (grid)', 'library'] + [f'NFE ≤ {b}' for b in budgets], rows)

def steps_table(specs, problems, budgets):
    "steps / measured NFE of each row at each budget (the largest measured NFE over problems and seeds)."
    rows = []
    for s in specs:
        row = [s.label]
        for b in budgets:
            rs = [r for res in problems.values() for r in res['runs'][s.label].get(b, [])]
            row.append(f"{rs[0]['steps']} / {max(r['nfe'] for r in rs)}" if rs else 'n/a')
        rows.append(row)
    return table(['sampler (grid)'] + [f'NFE ≤ {b}' for b in budgets], rows)

def best_table(specs, res, budgets):
    "For each budget and metric: the best diffnb row against the best peer row."
    rows = []
    for b in budgets:
        for key, title in METRICS:
            best = {}
            for side, libs in (('diffnb', ('diffnb',)), ('peer', ('diffusers', 'k-diffusion'))):
                c = [(ratios(res['runs'][s.label].get(b), key, res['floor'][key]), s.label) for s in specs if s.lib in libs]
                c = [(m, l) for (m, se), l in c if math.isfinite(m)]
                best[side] = min(c) if c else (math.nan, 'none')
            (md, ld), (mp, lp) = best['diffnb'], best['peer']
            rows.append([str(b), title, ld, f'{md:.3g}x', lp, f'{mp:.3g}x', f'{md / mp:.2f}' if mp > 0 else 'n/a'])
    return table(['NFE ≤', 'metric', 'best diffnb', 'ratio to floor', 'best peer', 'ratio to floor', 'diffnb / peer'], rows)

def adaptive_table(adaptive, res):
    rows = []
    for s in adaptive:
        rs = res['runs'][s.label].get('adaptive', [])
        m, se = mean_se([r['nfe'] for r in rs])
        row = [s.label, s.lib, f'{m:.0f}' + (f'±{se:.1f}' if math.isfinite(se) else '')]
        row += [fmt_ratio(*ratios(rs, key, res['floor'][key])) for key, _ in METRICS]
        rows.append(row)
    return table(['sampler (tolerances)', 'library', 'measured NFE'] + [f'{t} / floor' for _, t in METRICS], rows)

def notes(specs, adaptive, problems):
    out = []
    for name, res in problems.items():
        for s in specs + adaptive:
            for b, rs in res['runs'][s.label].items():
                errs = sorted({r['error'] for r in rs if 'error' in r})
                if errs: out.append(f'- {name}, {s.label}, NFE ≤ {b}: failed on {sum("error" in r for r in rs)}/{len(rs)} seeds: {"; ".join(errs)}')
                over = [r['nfe'] for r in rs if isinstance(b, int) and r['nfe'] > b]
                if over: out.append(f'- {name}, {s.label}, NFE ≤ {b}: measured NFE {max(over)} exceeds the budget')
                aux = max((r['aux'] for r in rs), default=0)
                why = ('on 1000 training points (its variance estimate, every run)' if s.name == 'analytic_dpm' else
                       'on a 512-point pilot (the grid fit, once per problem and step count, reused by every seed)' if s.kind == 'fitted' else 'off the sample batch')
                if aux: out.append(f'- {name}, {s.label}, NFE ≤ {b}: plus {aux} auxiliary calls {why}')
    return out

def versions() -> str:
    "Library versions, and the diffnb commit (with '+ uncommitted changes' when the working tree differs)."
    import subprocess, diffusers
    out = f'torch {torch.__version__} ({torch.get_num_threads()} threads), diffusers {diffusers.__version__}'
    try:
        from importlib.metadata import version
        out += f', k-diffusion {version("k-diffusion")}'
    except Exception: pass
    try:
        root = FilePath(dn.__file__).parent
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', '.'], cwd=root, capture_output=True, text=True).stdout.strip()
        if head: out += f', diffnb at {head}' + (' + uncommitted changes' if dirty else '')
    except Exception: pass
    return out

def report(args, specs, adaptive, problems, seconds) -> str:
    budgets = sorted({b for res in problems.values() for b in res['budgets']})
    per = '; '.join(f'{name}: {", ".join(map(str, res["budgets"]))}' for name, res in problems.items())
    md = ['# Sampler benchmark: diffnb vs diffusers vs k-diffusion',
          '',
          f'n = {args.n} samples per run, seeds {", ".join(map(str, args.seeds))}, NFE budgets ({per}), '
          f'sliced W2 with {args.n_proj} fixed projections; {args.versions}; '
          f'run time {seconds / 60:.1f} min. Generated by `benchmarks/samplers.py` (see its docstring for the setup).',
          '',
          'Every cell is metric / noise floor (the same metric between two independent draws of the truth at the same n): '
          '1x is perfect at this n. Mean ± standard error over seeds; bold: best in the column. '
          'diffnb rows run on the EDM path (sigma in [0.002, 80]) unless the row says otherwise'
          + ('.' if args.twins else '; there diffnb euler is ddim and heun is edm, step for step, so they are not repeated (--twins runs them).'),
          '', '## Steps / measured NFE per budget', '', steps_table(specs, problems, budgets)]
    for name, res in problems.items():
        f, b = res['floor'], res['budgets']
        md += ['', f'## {PROBLEM_TITLES[name]}', '',
               f"Noise floors at n = {args.n}: sliced W2 {f['sw']:.4g}, mode-weight TV {f['tv']:.4g}, mode-conditional W2 {f['w2']:.4g}."]
        for key, title in METRICS:
            md += ['', f'### {name}: {title} / floor', '', metric_table(specs, res, key, b)]
        md += ['', f'### {name}: best diffnb vs best peer', '', best_table(specs, res, b)]
        if adaptive: md += ['', f'### {name}: adaptive solvers', '', adaptive_table(adaptive, res)]
    n = notes(specs, adaptive, problems)
    if n: md += ['', '## Notes', ''] + n
    return '\n'.join(md) + '\n'


# ----------------------------------------------------------------------------------------------
# Overhead

OVERHEAD_SHAPES = {'100k 2-D points': (100_000, 2), '64 images 3x32x32': (64, 3, 32, 32),
                   '100 2-D points': (100, 2)}   # next to nothing to compute: a step's Python alone, and a run's setup spread over its NFE

HAND_LOOPS = {k: Spec('torch', f'hand-written {v} loop', k, 0 if k == 'dopri5' else 1) for k, v in
              dict(euler='Euler', euler_ancestral='ancestral Euler', dopri5='Dormand-Prince', pc='predictor-corrector', lms='linear multistep',
                   lms_lean='fewest-pass linear multistep').items()}
MULTISTEP = ('lms', 'deis', 'unipc', 'dpmpp_3m')   # steps that combine three or more past evaluations: held to the linear multistep loop

def own_baseline(spec) -> str:
    "The hand-written loop a sampler's step is held to: the same algorithm where one is written, else ancestral Euler for stochastic steps, Euler otherwise."
    if spec.lib == 'torch': return spec.label
    if spec.lib != 'diffnb': return HAND_LOOPS['euler'].label
    if spec.name in HAND_LOOPS and spec.name != 'euler': return HAND_LOOPS[spec.name].label
    if spec.name in MULTISTEP: return HAND_LOOPS['lms'].label
    return HAND_LOOPS['euler' if deterministic(spec.name) else 'euler_ancestral'].label

def steady_allocator() -> bool:
    """Let glibc's malloc keep the memory tensors free, so every library's new tensors come from warm memory, as in a long run.
    Left to its dynamic thresholds, malloc gave some rounds fresh pages (a page fault per 4 KB: the hand-written Euler loop's three
    800 KB tensors a step measured 82 to 369 us/NFE within minutes) and others reused memory; the ratios moved with it."""
    import ctypes, ctypes.util
    try: libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    except OSError: return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3                       # glibc's mallopt parameters
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))   # 32 MB: glibc's most

def overhead(steps, repeats, log) -> str:
    "Per-NFE time outside the model, in microseconds, for every sampler of every library, with a trivial model."
    steady = steady_allocator()
    specs = [diffnb_spec(m) for m, info in dn.SAMPLERS.items() if 'head' not in info.options] + [diffnb_spec('analytic_dpm', x0_var='once')] + peer_specs() + [   # npr_dpm, sn_dpm need a trained head
        Spec('k-diffusion', 'sample_dpm_adaptive (rtol=0.05, atol=0.0078)', 'sample_dpm_adaptive', 0, opts=dict(rtol=0.05, atol=0.0078)),
        *HAND_LOOPS.values()]
    cols = {}
    for title, shape in OVERHEAD_SHAPES.items():
        model = CountingModel(lambda x, t, path: x * 0.5, shape[0])
        base = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        ctx = Context(lambda path, t, g: base * math.sqrt(path.alpha(t).item()**2 + path.sigma(t).item()**2),
                      torch.randn((256,) + shape[1:], generator=torch.Generator().manual_seed(1)))
        us, nfe = {s.label: [] for s in specs}, {}
        for rep in range(repeats + 1):   # round 0 warms up; rounds go over every sampler, so a burst of load hits them all alike
            for s in specs:
                model.reset(); ctx.seconds = 0.
                t0 = time.perf_counter()
                s.run(model, ctx, steps, torch.Generator().manual_seed(rep))
                wall = time.perf_counter() - t0
                if rep: us[s.label].append((wall - model.seconds - ctx.seconds) / model.nfe * 1e6)
                nfe[s.label] = model.nfe
        for s in specs:
            paired = lambda base: statistics.median(a / b for a, b in zip(us[s.label], us[base]))   # ratios within each round, then their median
            cols.setdefault(s.label, {})[title] = (statistics.median(us[s.label]), nfe[s.label], s.lib,
                                                   paired(HAND_LOOPS['euler'].label), paired(own_baseline(s)))
            log(f'overhead {title:18s} {s.lib:11s} {s.label:48s} {statistics.median(us[s.label]):9.1f} us/NFE')
    by_label = {s.label: s for s in specs}
    rows = []
    for label, c in cols.items():
        row = [label, next(iter(c.values()))[2]]
        for title in OVERHEAD_SHAPES:
            us, nfe, _, vs_euler, vs_own = c[title]
            row += [f'{us:.0f}', str(nfe), f'{vs_euler:.1f}x', f'{vs_own:.2f}x']
        rows.append(row + [own_baseline(by_label[label]).removeprefix('hand-written ').removesuffix(' loop')])
    header = ['sampler', 'library'] + [h for t in OVERHEAD_SHAPES for h in (f'{t}: µs/NFE', 'NFE', 'vs Euler loop', 'vs own loop')] + ['own loop']
    return (f'## Per-step overhead beyond the model call\n\n{steps} steps (adaptive: its own NFE), trivial model (x0-hat = x/2), '
            f'median of {repeats} repeats after one warm-up; ratios are the median of the ratios within each round (a round runs every row once, '
            'so a burst of load or a slow stretch of the noise generator moves a row and its baseline together); '
            f'torch {torch.__version__}, {torch.get_num_threads()} threads; '
            + ('freed memory kept by malloc (`steady_allocator`: no fresh pages mid-run, for any library). ' if steady else 'malloc at its defaults (mallopt unavailable). ')
            + 'Overhead = (wall time - time inside the model views - time drawing the initial state) / NFE. '
            'diffnb rows use the EDM path and the log_snr grid; analytic_dpm estimates its variance on 256 extra points every run, or, in the x0_var=once row, once (x0_variances, outside the timed rounds).\n\n'
            + table(header, rows) + '\n\n' + noise_floor(repeats))

def noise_floor(repeats) -> str:
    "What one stochastic step cannot avoid: drawing N(0, I) noise the size of the state, by the ways this CPU offers."
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor
    pool, rng = ThreadPoolExecutor(1), np.random.default_rng(0)
    def timed(f):
        f(); ts = []
        for _ in range(max(repeats, 3) * 20):
            t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e6
    rows = []
    for title, shape in OVERHEAD_SHAPES.items():
        n, g, g2 = math.prod(shape), torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
        out, buf = torch.empty(n), np.empty(n, np.float32)
        def two_threads():   # two generators, one half each, on both cores
            h = pool.submit(out[:n // 2].normal_, generator=g2); out[n // 2:].normal_(generator=g); h.result()
        rows.append([title, f'{n:,}'] + [f'{timed(f):.0f}' for f in (
            lambda: torch.randn(shape, generator=g), lambda: torch.rand(shape, generator=g), two_threads,
            lambda: rng.standard_normal(dtype=np.float32, out=buf))])
    pool.shutdown()
    return ('## The noise floor of a stochastic step\n\nMicroseconds to draw one state of N(0, I) noise, median of '
            f'{max(repeats, 3) * 20} draws: the least a stochastic step costs beyond the model. torch\'s CPU generator (mt19937) '
            'is single-threaded; two generators on both cores halve it at best; numpy\'s PCG64 ziggurat is slower here.\n\n'
            + table(['state', 'numbers', 'torch.randn', 'torch.rand (uniform)', 'torch, 2 generators x 2 threads', 'numpy PCG64 float32'], rows) + '\n')


# ----------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=20_000, help='samples per run (default 20000)')
    ap.add_argument('--nfe', type=int, nargs='+', default=[5, 10, 20, 50, 100], help='NFE budgets')
    ap.add_argument('--cap', nargs='+', default=[], metavar='PROBLEM=NFE', help='skip budgets above NFE on PROBLEM (e.g. mix32=20)')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--problems', nargs='+', default=list(PROBLEMS), choices=list(PROBLEMS))
    ap.add_argument('--grids', nargs='+', default=None, help=f'diffnb time-grid kinds (default: {" ".join(default_grids())})')
    ap.add_argument('--n-proj', type=int, default=128, help='sliced-W2 projections (fixed directions; default 128)')
    ap.add_argument('--no-adaptive', action='store_true', help='skip the adaptive solvers')
    ap.add_argument('--twins', action='store_true', help='also run diffnb euler and heun (on the EDM path they equal ddim and edm)')
    ap.add_argument('--quick', action='store_true', help='smoke test: n=2000, seed 0, NFE 10 and 20, ring only, loose tolerances')
    ap.add_argument('--out', nargs='?', const='', default=None,
                    help=f'also write the markdown here (default {OUT_DEFAULT.relative_to(OUT_DEFAULT.parents[2])}, or {OUT_OVERHEAD.name} with --overhead)')
    ap.add_argument('--overhead', action='store_true', help='measure the per-step overhead instead')
    ap.add_argument('--overhead-steps', type=int, default=20)
    ap.add_argument('--repeats', type=int, default=5, help='overhead repeats (median)')
    ap.add_argument('-q', '--quiet', action='store_true', help='no progress lines on stderr')
    args = ap.parse_args(argv)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    if args.out == '': args.out = str(OUT_OVERHEAD if args.overhead else OUT_DEFAULT)
    args.versions = versions()   # before the run: the diffnb that was imported, even if its repository moves on meanwhile
    if args.overhead:
        load = os.getloadavg()[0]
        md = overhead(args.overhead_steps, args.repeats, log)
        md += (f'\n{args.versions}. Run time {time.perf_counter() - t0:.0f} s; load average {load:.1f} at the start and '
               f'{os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} CPUs (the timings are only as quiet as the machine).\n')
    else:
        if args.quick: args.n, args.seeds, args.nfe, args.problems = 2000, [0], [10, 20], ['ring']
        grids = args.grids or default_grids()
        bad = [k for k in grids if k not in available_grids()]
        if bad: ap.error(f'--grids: {", ".join(bad)} not available (diffnb offers {", ".join(available_grids())})')
        try: caps = {p: int(v) for p, v in (c.split('=') for c in args.cap)}
        except ValueError: ap.error(f'--cap: expected PROBLEM=NFE, got {" ".join(args.cap)}')
        if set(caps) - set(PROBLEMS): ap.error(f'--cap: unknown problem(s) {", ".join(set(caps) - set(PROBLEMS))}')
        specs = fixed_specs(grids, args.twins)
        adaptive = [] if args.no_adaptive else adaptive_specs(args.quick)
        problems = {}
        for p in args.problems:
            problems[p] = run_problem(p, specs, adaptive, [b for b in args.nfe if b <= caps.get(p, b)], args.seeds, args.n, args.n_proj, log)
            md = report(args, specs, adaptive, problems, time.perf_counter() - t0)
            if args.out and p != args.problems[-1]: write(args.out, md, log)   # a long run keeps what it has finished
    print(md)
    if args.out: write(args.out, md, log)

def write(path, md, log):
    out = FilePath(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    log(f'wrote {out}')

if __name__ == '__main__':
    main()
