"""Training benchmark: diffnb's Trainer against plain PyTorch loops, side by side in one run.

1. Throughput: the Trainer against a hand-written loop doing the same work (same MLP, batch 4096, AdamW, EMA, gradient clipping,
   eps-prediction on the VP path), interleaved repeats, steps per second and the ratio.
2. Quality: on the ring of 8 thin modes (dn.ring_mixture(): radius 4, stds 0.1-0.3, unequal weights), a plain DDPM loop (the same MLP,
   eps-prediction on diffusers' discrete linear-beta schedule, uniform timesteps, Adam 1e-3, batch 4096), sampled with diffusers'
   DPMSolverMultistepScheduler (DPM-Solver++ 2M) at 20 NFE and, to check that baseline, with diffusers' DDPM sampler at all 1000 steps;
   against diffnb's defaults, dn.Trainer(dn.default_net(data), 'vp', data) (the recipe, dn.RECIPE: EDM preconditioning, data-scaled
   noise density, warm-up, cosine decay, EMA) sampled by dn.sample with its defaults (DPM-Solver++ 2M, 20 NFE). Mode-weight TV and
   mode-conditional W2 against their noise floors (20k samples), the largest sample radius over the data's, and the exact score's numbers.

    .venv/bin/python benchmarks/train.py                 # 3000 steps each (about 15 minutes on 2 CPU cores)
    .venv/bin/python benchmarks/train.py --steps 10000   # the issue's comparison
    .venv/bin/python benchmarks/train.py --t-scales 1.2 1.5 > benchmarks/results/train_t_scale.md   # the EDM noise density's spread

3. With --t-scales: the default recipe trained with each spread of its log-normal noise density (t_scale; Karras et al. 2022 use
   P_std = 1.2, diffnb's default since this study) over three seeds, sampled with dn.sample's defaults: mode-weight TV and mode W2 against the floors.
"""
import argparse, time
import torch
import diffnb as dn

def plain_vp_loop(net, data, batch, steps, seed=0):
    "A hand-written loop: eps-prediction on the VP path, uniform t, AdamW, EMA 0.999, clipping at 1."
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ema = [p.detach().clone() for p in net.parameters()]
    for _ in range(steps):
        idx = torch.randint(0, len(data), (batch,), generator=g); x0 = data[idx]
        t = torch.rand(batch, generator=g, dtype=torch.float64) * (1 - 1e-3) + 1e-3
        B = 0.1 * t + 0.5 * 19.9 * t**2
        a = torch.exp(-0.5 * B).float()[:, None]; s = torch.sqrt(-torch.expm1(-B)).float()[:, None]
        eps = torch.randn(x0.shape, generator=g)
        loss = (net(a * x0 + s * eps, t.float()) - eps).pow(2).mean()
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(net.parameters(), 1.); opt.step()
        with torch.no_grad():
            for e, p in zip(ema, net.parameters()): e.lerp_(p, 1e-3)

def throughput(data, batch=4096, steps=20, repeats=3):
    rows = {'diffnb Trainer': [], 'plain loop': []}
    for _ in range(repeats):
        torch.manual_seed(0)
        tr = dn.Trainer(dn.MLP(2), 'vp', data, param='eps', batch_size=batch, ema=0.999, device='cpu')
        list(tr.steps(2)); t0 = time.perf_counter(); list(tr.steps(steps)); rows['diffnb Trainer'].append(steps / (time.perf_counter() - t0))
        torch.manual_seed(0); net = dn.MLP(2)
        plain_vp_loop(net, data, batch, 2); t0 = time.perf_counter(); plain_vp_loop(net, data, batch, steps); rows['plain loop'].append(steps / (time.perf_counter() - t0))
    med = {k: sorted(v)[len(v) // 2] for k, v in rows.items()}
    print("| loop | steps/s (median of %d) | ratio to plain |\n|---|---:|---:|" % repeats)
    for k, v in med.items(): print(f"| {k} | {v:.1f} | {v / med['plain loop']:.2f} |")

def plain_ddpm(data, steps, batch=4096, seed=0, net=None):
    "Plain DDPM: eps-prediction at integer timesteps of diffusers' linear-beta schedule (T=1000), Adam 1e-3 (net: default dn.MLP(2))."
    from diffusers import DDPMScheduler
    ac = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    torch.manual_seed(seed); net = dn.MLP(2) if net is None else net
    g = torch.Generator().manual_seed(seed); opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        x0 = data[torch.randint(0, len(data), (batch,), generator=g)]
        k = torch.randint(0, 1000, (batch,), generator=g)
        a, s = (v.reshape(-1, *[1] * (x0.dim() - 1)) for v in (ac[k].sqrt(), (1 - ac[k]).sqrt()))
        eps = torch.randn(x0.shape, generator=g)
        loss = (net(a * x0 + s * eps, (k + 1).float() / 1000) - eps).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    return net

def sample_diffusers_dpm(net, n, seed=0, nfe=20, shape=(2,)):
    "diffusers' DPM-Solver++(2M) at nfe steps on the plain loop's eps-net."
    from diffusers import DPMSolverMultistepScheduler
    sch = DPMSolverMultistepScheduler(num_train_timesteps=1000); sch.set_timesteps(nfe)
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed)) * sch.init_noise_sigma
    with torch.no_grad():
        for k in sch.timesteps: x = sch.step(net(x, (k.float() + 1).expand(n) / 1000), k, x).prev_sample
    return x

def sample_diffusers_ddpm(net, n, seed=0, shape=(2,), clip=False):
    "diffusers' DDPM ancestral sampler at all 1000 steps: the baseline net without a few-step solver's error."
    from diffusers import DDPMScheduler
    sch = DDPMScheduler(num_train_timesteps=1000, clip_sample=clip); sch.set_timesteps(1000)   # diffusers clips x0-hat to [-1, 1] by default: the ring has radius 4
    g = torch.Generator().manual_seed(seed); x = torch.randn(n, *shape, generator=g)
    with torch.no_grad():
        for k in sch.timesteps: x = sch.step(net(x, (k.float() + 1).expand(n) / 1000), k, x, generator=g).prev_sample
    return x

def quality(steps, n=20_000):
    ring = dn.ring_mixture()
    data = ring.sample(100_000, generator=torch.Generator().manual_seed(0))
    floor = dn.noise_floor(dn.mode_coverage, ring, n, generator=torch.Generator().manual_seed(1))
    res = {}
    t0 = time.perf_counter(); net = plain_ddpm(data, steps)
    xs = {'plain DDPM loop + diffusers DPM++ 2M (20 NFE)': (sample_diffusers_dpm(net, n), time.perf_counter() - t0)}
    xs['plain DDPM loop + diffusers DDPM (1000 NFE)'] = (sample_diffusers_ddpm(net, n), time.perf_counter() - t0)
    t0 = time.perf_counter(); tr = dn.Trainer(dn.default_net(data), 'vp', data, device='cpu'); tr.fit(steps, progress=False)
    xs['diffnb defaults: Trainer + sample (20 NFE)'] = (dn.sample(tr.denoiser(), n, generator=torch.Generator().manual_seed(0)), time.perf_counter() - t0)
    xs['exact score, dn.sample defaults (20 NFE)'] = (dn.sample(ring.denoiser(dn.get_path('vp')), n, generator=torch.Generator().manual_seed(0)), 0.)
    r_data = data.norm(dim=1).max().item()
    res = {k: (dn.mode_coverage(x, ring), s, x.norm(dim=1).max().item() / r_data) for k, (x, s) in xs.items()}
    print(f"\nring, {steps} training steps, n = {n}; floors: weight TV {floor.weight_tv:.4f}, mode W2 {floor.mode_w2:.4f}\n")
    print("| model and sampler | coverage | weight TV | / floor | mode W2 | / floor | max radius / data's | seconds |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for k, (r, s, rad) in res.items():
        print(f"| {k} | {r.coverage:.3f} | {r.weight_tv:.4f} | {r.weight_tv / floor.weight_tv:.2f} | {r.mode_w2:.4f} | {r.mode_w2 / floor.mode_w2:.2f} | {rad:.2f} | {s:.0f} |")
    a, b, e = (res[k][0] for k in ('plain DDPM loop + diffusers DPM++ 2M (20 NFE)', 'diffnb defaults: Trainer + sample (20 NFE)', 'exact score, dn.sample defaults (20 NFE)'))
    print(f"\nplain / diffnb: weight TV {a.weight_tv / b.weight_tv:.2f}x, mode W2 {a.mode_w2 / b.mode_w2:.2f}x (target: >= 2 on both)")
    print(f"diffnb / exact score: weight TV {b.weight_tv / e.weight_tv:.2f}x, mode W2 {b.mode_w2 / e.mode_w2:.2f}x (target: <= 2 on both)")

def t_scale_study(steps, scales, seeds=(0, 1, 2), n=20_000):
    "The default recipe with each t_scale, mean and standard error over seeds of the mode metrics over their floors."
    ring = dn.ring_mixture()
    data = ring.sample(100_000, generator=torch.Generator().manual_seed(0))
    floor = dn.noise_floor(dn.mode_coverage, ring, n, generator=torch.Generator().manual_seed(1))
    print(f"\nring, {steps} training steps per run, seeds {list(seeds)}, n = {n}; the recipe with t_scale set, dn.sample defaults (20 NFE)\n")
    print("| t_scale | weight TV / floor | mode W2 / floor |\n|---:|---:|---:|")
    for sc in scales:
        tv, w2 = [], []
        for seed in seeds:
            torch.manual_seed(seed)
            tr = dn.Trainer(dn.default_net(data), 'vp', data, device='cpu', seed=seed, t_scale=sc); tr.fit(steps, progress=False)
            r = dn.mode_coverage(dn.sample(tr.denoiser(), n, generator=torch.Generator().manual_seed(seed)), ring)
            tv.append(r.weight_tv / floor.weight_tv); w2.append(r.mode_w2 / floor.mode_w2)
        ms = lambda v: f"{sum(v) / len(v):.2f} ± {(sum((u - sum(v) / len(v))**2 for u in v) / (len(v) - 1))**0.5 / len(v)**0.5:.2f}"
        print(f"| {sc:g} | {ms(tv)} | {ms(w2)} |")

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=3000); ap.add_argument('--skip-throughput', action='store_true')
    ap.add_argument('--t-scales', type=float, nargs='+', default=None, help="compare the recipe's noise-density spreads instead (e.g. 1.2 1.5)")
    ap.add_argument('--threads', type=int, default=2, help="torch threads (this machine's 2 cores; more oversubscribe it)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.t_scales: t_scale_study(a.steps, a.t_scales); raise SystemExit
    data = dn.ring_mixture().sample(100_000, generator=torch.Generator().manual_seed(0))
    if not a.skip_throughput: throughput(data)
    quality(a.steps)
