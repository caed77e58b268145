"""Image training throughput: diffnb's Trainer against a plain PyTorch loop doing the same work, fp32 eager against bf16 + compile,
and sampling throughput, side by side in one run.

On CUDA it trains the 'cifar10' U-Net preset (29M parameters) at batch 128 on random CIFAR-shaped uint8 data; on the CPU the 'tiny' preset
at batch 16 in CI-sized time (the GPU rows are then left empty, and say so). Both loops use the same net, EDM preconditioning and
log-normal noise density (the recipe), AdamW, gradient clipping at 1 and an EMA; the plain loop calls diffnb's dsm_loss, so the ratio is the
cost of the Trainer's machinery (batch drawing from uint8 storage with flips, the non-finite checks, the schedule), not of a different loss.

    .venv/bin/python benchmarks/gpu_train.py                  # CPU: about a minute; writes benchmarks/results/gpu_train.md
    .venv/bin/python benchmarks/gpu_train.py --steps 50       # on a GPU machine: the table's GPU rows
"""
import argparse, contextlib, platform, resource, statistics, subprocess, time
from pathlib import Path
import torch
import diffnb as dn
from diffnb.data import image_data
from diffnb.train import RECIPE, sample_t, dsm_loss, lr_at

OUT = Path(__file__).parent / 'results' / 'gpu_train.md'

def cifar_shaped(n, size=32, seed=0):
    "n random uint8 images of 3 x size x size, as the Trainer reads CIFAR-10 (flips on)."
    g = torch.Generator().manual_seed(seed)
    return image_data(torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8))

def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()

def peak_reset(dev):
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats()

def peak_mb(dev):
    "Peak GPU memory since the reset, or this process's peak resident memory on the CPU, in MB."
    if dev.type == 'cuda': return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def plain_loop(net, data, path, batch, steps, dev, amp_dtype=None, seed=0):
    "The same work written plainly: uint8 batch to [-1, 1] with flips, the recipe's t density, dsm_loss, AdamW, clipping, EMA."
    g = torch.Generator().manual_seed(seed)
    den_net = net.to(dev)
    opt = torch.optim.AdamW(den_net.parameters(), lr=RECIPE['lr'])
    ema = [p.detach().clone() for p in den_net.parameters()]
    sigma_data = data.decode().std().item()                     # what the Trainer measures
    den = dn.Denoiser(den_net, path, RECIPE['param'], sigma_data=sigma_data)
    ctx = torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    for k in range(steps):
        idx = torch.randint(0, len(data), (batch,), generator=g)
        x0 = data.images[idx].float() / 127.5 - 1
        flip = torch.rand(batch, generator=g) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0).to(dev)
        t = sample_t(path, batch, RECIPE['t_density'], g, sigma_data).to(dev)
        eps = torch.randn(x0.shape, generator=g).to(dev)
        for group in opt.param_groups: group['lr'] = lr_at(k + 1, RECIPE['lr'], RECIPE['warmup'], 'constant')
        with ctx: loss = dsm_loss(den, x0, t, eps, None, 'native', sigma_data).mean()
        opt.zero_grad(set_to_none=True); loss.backward()
        torch.nn.utils.clip_grad_norm_(den_net.parameters(), 1.); opt.step()
        with torch.no_grad():
            for e, p in zip(ema, den_net.parameters()): e.lerp_(p, 1 - RECIPE['ema'])

def timed(fn, steps, warmup, dev):
    "Images per second of fn(n) over `steps` steps after `warmup` steps, and the peak memory."
    fn(warmup); sync(dev); peak_reset(dev)
    t0 = time.perf_counter(); fn(steps); sync(dev)
    return time.perf_counter() - t0, peak_mb(dev)

def run(preset, batch, steps, warmup, repeats, dev):
    data, path = cifar_shaped(max(4 * batch, 512)), dn.get_path('edm')
    rows = {}
    configs = [('plain loop, fp32 eager', 'plain', 'fp32', False), ('diffnb Trainer, fp32 eager', 'trainer', 'fp32', False)]
    if dev.type == 'cuda':
        configs += [('plain loop, bf16 + compile', 'plain', 'bf16', True), ('diffnb Trainer, bf16 + compile', 'trainer', 'bf16', True)]
    for rep in range(repeats):                        # interleaved: a burst of load hits every row alike
        for label, kind, prec, comp in configs:
            torch.manual_seed(0)
            net = dn.UNet.preset(preset, in_channels=3)
            if kind == 'trainer':
                tr = dn.Trainer(net, path, data, batch_size=batch, precision=prec, compile=comp, device=dev, lr_schedule='constant')
                fn = lambda n: list(tr.steps(n))
            else:
                if comp: net = torch.compile(net)
                fn = lambda n, net=net: plain_loop(net, data, path, batch, n, dev, torch.bfloat16 if prec == 'bf16' else None)
            secs, mb = timed(fn, steps, warmup, dev)
            rows.setdefault(label, []).append((batch * steps / secs, mb))
    out = {k: (statistics.median(v[0] for v in vs), max(v[1] for v in vs)) for k, vs in rows.items()}
    torch.manual_seed(0)
    den = dn.Trainer(dn.UNet.preset(preset, in_channels=3), path, data, batch_size=batch, device=dev).denoiser()
    n_s = batch
    dn.sample(den, 4, 'dpmpp_2m', 2); sync(dev)
    t0 = time.perf_counter(); dn.sample(den, n_s, 'dpmpp_2m', 20); sync(dev)
    return out, n_s / (time.perf_counter() - t0), sum(p.numel() for p in den.net.parameters())

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cuda = torch.cuda.is_available()
    ap.add_argument('--preset', default='cifar10' if cuda else 'tiny', help="the U-Net preset ('tiny' on the CPU)")
    ap.add_argument('--batch', type=int, default=128 if cuda else 16)
    ap.add_argument('--steps', type=int, default=50 if cuda else 10, help='timed steps per row and repeat')
    ap.add_argument('--warmup', type=int, default=10 if cuda else 2, help='untimed steps first (compilation happens here)')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2, help='CPU threads for torch (this machine has 2 cores)')
    ap.add_argument('--out', default=str(OUT))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device('cuda' if cuda else 'cpu')
    t0 = time.perf_counter()
    rows, sample_ips, n_params = run(args.preset, args.batch, args.steps, args.warmup, args.repeats, dev)
    base, eager = rows['plain loop, fp32 eager'][0], rows['diffnb Trainer, fp32 eager'][0]
    where = torch.cuda.get_device_name() if cuda else f'CPU ({platform.processor() or platform.machine()}, {args.threads} threads)'
    rev = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    lines = ["# Image training throughput (benchmarks/gpu_train.py)", "",
             f"U-Net preset '{args.preset}' ({n_params / 1e6:.2f}M parameters), batch {args.batch}, {args.steps} timed steps after {args.warmup}, "
             f"median of {args.repeats} interleaved repeats; {where}; torch {torch.__version__}; diffnb at {rev}; run time {time.perf_counter() - t0:.0f} s.", "",
             "| loop | images/s | vs plain fp32 | vs Trainer fp32 | peak memory (MB) |", "|---|---:|---:|---:|---:|"]
    for k, (ips, mb) in rows.items(): lines.append(f"| {k} | {ips:.1f} | {ips / base:.2f} | {ips / eager:.2f} | {mb:.0f} |")
    if not cuda:
        lines += ["| plain loop, bf16 + compile | (GPU only: no GPU was lent to this run) | | | |",
                  "| diffnb Trainer, bf16 + compile | (GPU only: no GPU was lent to this run) | | | |"]
    lines += ["", f"Sampling: {sample_ips:.1f} images/s at 20 NFE (dpmpp_2m, batch {args.batch}, the EMA network).", "",
              "Peak memory is the GPU's allocator peak on CUDA, and this process's peak resident memory on the CPU (not per row)."]
    md = '\n'.join(lines) + '\n'
    print(md)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True); Path(args.out).write_text(md)

if __name__ == '__main__': main()
