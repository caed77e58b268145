"""Image-model benchmark on the 8x8 digits, on the CPU: diffnb's default image recipe against a plain DDPM loop with the same U-Net and
the same number of steps, judged by FD-digits (the Fréchet distance on digit_features, a digit classifier's first and last hidden layers)
against its floor (two halves of the real digits) and against the exact score of the training set sampled by the same sampler.

The plain loop is DDPM as written by Ho et al. 2020: eps-prediction on diffusers' linear-beta schedule (T = 1000), uniform integer
timesteps, Adam at 1e-3; it is sampled with diffusers' DPM-Solver++(2M) at 20 NFE and, to check that baseline, with diffusers' DDPM
sampler at all 1000 steps (x0-hat clipped to [-1, 1], diffusers' default for images). diffnb's side is Trainer(default_net(data), 'edm', data)
with every default, sampled by dn.sample with its defaults (DPM-Solver++(2M), 20 NFE). Both train on the first 1500 digits, without flips.

    .venv/bin/python benchmarks/images.py                  # 2000 steps each: about 6 minutes on 2 CPU cores
    .venv/bin/python benchmarks/images.py --loader         # decoding a PNG folder with 0, 1, 2 DataLoader workers: about a minute

`--loader` measures the data path of a lazy folder (image_data(folder, lazy=True)): a folder of 32x32 PNG files written for the run,
decoded batch by batch by Trainer(workers=N). With a network that costs almost nothing (an MLP of 8 hidden units) decoding is the
bottleneck; with the 'tiny' U-Net the workers decode while the main process trains. Times include starting the workers.
"""
import argparse, os, statistics, subprocess, tempfile, time
import numpy as np
from PIL import Image
from pathlib import Path
import torch
torch.set_num_threads(2)   # this machine's cores: more threads oversubscribe it
import diffnb as dn
from diffnb.data import image_data
from diffnb.train import digit_features
from train import plain_ddpm, sample_diffusers_dpm, sample_diffusers_ddpm

OUT = Path(__file__).parent / 'results' / 'images.md'
LOADER_OUT = Path(__file__).parent / 'results' / 'images_loader.md'

def png_folder(root, n, size=32, seed=0):
    "n RGB PNG files of size x size in ten class folders: smooth random colour fields plus pixel noise, about CIFAR-10's file sizes."
    rng = np.random.default_rng(seed)
    for i in range(n):
        (root / f'c{i % 10}').mkdir(exist_ok=True)
        low = rng.integers(0, 256, (4, 4, 3)).repeat(size // 4, 0).repeat(size // 4, 1)
        img = (low + rng.normal(0, 24, (size, size, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f'c{i % 10}' / f'{i:05d}.png')
    return root

def loader(a):
    "Images per second through Trainer(workers=N) on a lazy PNG folder, for N in 0, 1, 2, with a free network and with the 'tiny' U-Net."
    torch.set_num_threads(1)                                        # the main process: one core for the step, the other for a worker
    t_all = time.perf_counter()
    root = png_folder(Path(tempfile.mkdtemp()), a.files)
    data = image_data(root, lazy=True)
    nets = {'MLP, 8 hidden units (decoding is the bottleneck)': lambda: dn.MLP(3 * 32 * 32, hidden=8, depth=1, n_classes=10),
            "'tiny' U-Net": lambda: dn.UNet.preset('tiny', in_channels=3, n_classes=10)}
    lines = ['# Reading a PNG folder with DataLoader workers (benchmarks/images.py --loader)', '',
             f'{a.files} RGB 32x32 PNG files (mean {statistics.mean(f.stat().st_size for f in root.rglob("*.png")):.0f} bytes), image_data(folder, lazy=True), '
             f'batch {a.batch}, {a.loader_steps} optimiser steps per run including the workers\' start, median of {a.repeats} runs; torch {torch.__version__}, '
             f'1 torch thread in the main process, {os.cpu_count()} CPU cores shared with other work (load average {os.getloadavg()[0]:.1f} at the start: timings are noisy).', '',
             '| network | workers | images/s | / workers=0 |', '|---|---:|---:|---:|']
    for name, make in nets.items():
        base = None
        for w in (0, 1, 2):
            rates = []
            for _ in range(a.repeats):
                torch.manual_seed(0)
                tr = dn.Trainer(make(), 'edm', data, batch_size=a.batch, workers=w)
                t0 = time.perf_counter(); list(tr.steps(a.loader_steps)); rates.append(a.loader_steps * a.batch / (time.perf_counter() - t0))
            r = statistics.median(rates); base = base or r
            lines.append(f'| {name} | {w} | {r:.0f} | {r / base:.2f} |')
    lines += ['', f'run time {time.perf_counter() - t_all:.0f} s']
    md = '\n'.join(lines) + '\n'
    print(md); Path(a.out if a.out != str(OUT) else LOADER_OUT).write_text(md)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument('--steps', type=int, default=2000); ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--n', type=int, default=800, help='samples per row (at most 898: the floor takes two disjoint halves of the 1797 digits)')
    ap.add_argument('--out', default=str(OUT))
    ap.add_argument('--loader', action='store_true', help='measure DataLoader workers on a PNG folder instead (results/images_loader.md)')
    ap.add_argument('--files', type=int, default=3000, help='--loader: PNG files in the folder')
    ap.add_argument('--loader-steps', type=int, default=40, help='--loader: optimiser steps per run')
    ap.add_argument('--repeats', type=int, default=3, help='--loader: runs per setting (the median is reported)')
    a = ap.parse_args()
    if a.loader: return loader(a)
    t_all = time.perf_counter()
    x, _ = dn.digits()
    train = x[:1500]
    feats = digit_features(1000)
    fd = lambda u, v: dn.frechet_distance(feats(u), feats(v))
    ref = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:a.n]]
    floor = dn.noise_floor(fd, x, a.n, generator=torch.Generator().manual_seed(1))
    rows = {}
    t0 = time.perf_counter(); torch.manual_seed(0)
    plain = plain_ddpm(train, a.steps, a.batch, net=dn.default_net(train))
    t_plain = time.perf_counter() - t0
    rows['plain DDPM loop + diffusers DPM++ 2M (20 NFE)'] = (sample_diffusers_dpm(plain, a.n, shape=(1, 8, 8)).clamp(-1, 1), t_plain)
    rows['plain DDPM loop + diffusers DDPM (1000 NFE)'] = (sample_diffusers_ddpm(plain, a.n, shape=(1, 8, 8), clip=True).clamp(-1, 1), t_plain)
    t0 = time.perf_counter(); torch.manual_seed(0)
    data = image_data(train, hflip=False)
    tr = dn.Trainer(dn.default_net(data), 'edm', data, batch_size=a.batch); tr.fit(a.steps, progress=False)
    rows['diffnb defaults: Trainer + sample (20 NFE)'] = (dn.sample(tr.denoiser(), a.n, generator=torch.Generator().manual_seed(0)).clamp(-1, 1), time.perf_counter() - t0)
    oracle = dn.EmpiricalOracle(train).denoiser('edm')
    rows['exact score of the training set, dn.sample defaults (20 NFE)'] = (dn.sample(oracle, a.n, generator=torch.Generator().manual_seed(0)), 0.)
    fds = {k: fd(ref, v) for k, (v, _) in rows.items()}
    ora = fds['exact score of the training set, dn.sample defaults (20 NFE)']
    rev = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    lines = ['# Image-model benchmark: the 8x8 digits (benchmarks/images.py)', '',
             f'{a.steps} training steps at batch {a.batch}, the same U-Net (dn.default_net: {sum(p.numel() for p in tr.net.parameters()):,} parameters) '
             f'for both loops; FD-digits on {a.n} samples against {a.n} real digits ({feats!r}); torch {torch.__version__}, 2 threads; '
             f'diffnb at {rev}; run time {time.perf_counter() - t_all:.0f} s.', '',
             f'Floor (two halves of the digits): FD-digits {floor:.3f}.', '',
             '| model and sampler | FD-digits | / floor | / exact score, same sampler | training seconds |', '|---|---:|---:|---:|---:|']
    for k, v in fds.items(): lines.append(f'| {k} | {v:.3f} | {v / floor:.2f} | {v / ora:.2f} | {rows[k][1]:.0f} |')
    p20, d20 = fds['plain DDPM loop + diffusers DPM++ 2M (20 NFE)'], fds['diffnb defaults: Trainer + sample (20 NFE)']
    p1000 = fds['plain DDPM loop + diffusers DDPM (1000 NFE)']
    lines += ['', f'plain (20 NFE) / diffnb (20 NFE): {p20 / d20:.2f}x; plain (1000 NFE) / diffnb (20 NFE): {p1000 / d20:.2f}x (target: >= 2)']
    md = '\n'.join(lines) + '\n'
    print(md); Path(a.out).write_text(md)

if __name__ == '__main__': main()
