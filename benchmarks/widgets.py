"""SamplerPreview in a real browser: frames drawn and acknowledged per second for 10k 2-D points in headless chromium
(target >= 20), and sampling time with a live preview against the same sampling without one (target <= 1.15x).

JupyterLab + Debian chromium (playwright). Runs are interleaved (preview, plain, preview, ...); medians are reported, with
the CPU time each process group (kernel, Jupyter server, chromium) spent per run. `--threads 1` leaves the kernel's torch one
thread, so the browser has a core of its own (on this 2-core machine the sampler otherwise takes both).
    .venv/bin/python benchmarks/widgets.py [--rounds 5] [--steps 300] [--n 10000] [--method sde] [--threads N]
"""
import argparse, collections, os, statistics, sys, tempfile, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
from browser import Lab, launch, write_notebook, open_notebook, wait_idle, KernelProbe

def cpu_seconds() -> collections.Counter:
    "CPU seconds (user + system) used so far by the kernel, the Jupyter server and chromium, summed over their processes."
    out, tick = collections.Counter(), os.sysconf('SC_CLK_TCK')
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            stat, cmd = open(f'/proc/{pid}/stat').read(), open(f'/proc/{pid}/cmdline').read()
        except OSError: continue
        name, fields = stat[stat.index('(') + 1:stat.rindex(')')], stat[stat.rindex(')') + 2:].split()
        group = 'kernel' if 'ipykernel' in cmd else 'server' if 'jupyter' in cmd and 'lab' in cmd else 'chromium' if 'chrom' in name else None
        if group: out[group] += (int(fields[11]) + int(fields[12])) / tick
    return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rounds', type=int, default=5); ap.add_argument('--steps', type=int, default=300)
    ap.add_argument('--n', type=int, default=10_000); ap.add_argument('--method', default='sde')
    ap.add_argument('--threads', type=int, default=0, help="torch threads in the kernel (0: torch's default)")
    ap.add_argument('--widget', default='', help="extra SamplerPreview arguments, e.g. 'ack_ms=250, max_inflight=12'")
    a = ap.parse_args()
    setup = (f"import time, torch, diffnb as dn\nfrom diffnb.widgets import SamplerPreview\n{f'torch.set_num_threads({a.threads})' if a.threads else ''}\n"
             f"den = dn.ring_mixture().denoiser('vp')\n"
             f"pv = SamplerPreview(den, n={a.n}, method={a.method!r}, steps={a.steps}{', ' + a.widget if a.widget else ''})\npv")
    # the preview samples in a background thread, so the plain run does too (torch's intra-op threads differ between threads)
    plain = (f"import threading\ng = torch.Generator().manual_seed(0); t0 = time.perf_counter()\n"
             f"th = threading.Thread(target=lambda: dn.sample(den, {a.n}, {a.method!r}, {a.steps}, generator=g)); th.start(); th.join()\n"
             f"plain_s = time.perf_counter() - t0")
    from playwright.sync_api import sync_playwright
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Lab(tmp) as lab, sync_playwright() as pw:
        write_notebook(Path(tmp) / 'bench.ipynb', [setup])
        b = launch(pw); page = b.new_page(viewport={'width': 1280, 'height': 900})
        open_notebook(page, lab.url, lab.token, 'bench.ipynb')
        page.wait_for_selector('.diffnb-sp .diffnb-sp-run', timeout=120_000); wait_idle(page)
        probe = KernelProbe(lab.url, lab.token)
        probe(plain, "plain_s")   # warm-up
        for r in range(a.rounds):
            before = int(page.evaluate("+document.querySelector('.diffnb-sp').dataset.frames || 0"))
            c0 = cpu_seconds()
            page.click('.diffnb-sp-run'); page.mouse.move(2, 2)   # no hover effects; the page is polled 10 times a second, not every animation frame
            page.wait_for_function("(b) => { const d = document.querySelector('.diffnb-sp').dataset; return d.final === '1' && (+d.frames) > b; }", arg=before, timeout=600_000, polling=100)
            c1 = cpu_seconds()
            k = probe("pv.join()", "dict(pv.last_run, acks=pv._acks, threads=torch.get_num_threads())")
            drawn = int(page.evaluate("+document.querySelector('.diffnb-sp').dataset.frames")) - before
            c2 = cpu_seconds(); p = probe(plain, "plain_s"); c3 = cpu_seconds()
            rows.append(dict(preview_s=k['elapsed'], plain_s=p, frames=k['frames'], acked=k['acked'], acks=k['acks'], drawn=drawn, fps=min(k['acked'], drawn) / k['elapsed'],
                             held=k['held'], throttled=k['throttled'], latency_ms=1000 * (k['ack_latency'] or 0),
                             kernel_ms=1000 * ((c1['kernel'] - c0['kernel']) - (c3['kernel'] - c2['kernel'])) / max(k['frames'], 1),   # beyond the plain run's
                             **{f'{g}_ms': 1000 * (c1[g] - c0[g]) / max(k['frames'], 1) for g in ('server', 'chromium')}))
            print(f"round {r + 1}: preview {k['elapsed']:.2f} s, plain {p:.2f} s ({k['threads']} torch threads), {k['frames']} frames sent, {k['acked']} acknowledged "
                  f"in {k['acks']} messages, {drawn} drawn, "
                  f"{k['throttled']} steps throttled, {k['held']} held for acknowledgements, median ack latency {1000 * (k['ack_latency'] or 0):.0f} ms", flush=True)
        probe.close(); b.close()
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    ratio = statistics.median(r['preview_s'] / r['plain_s'] for r in rows)
    print(f"\nSamplerPreview, {a.n} 2-D points, {a.method} {a.steps} steps, {a.rounds} interleaved rounds (medians)")
    print(f"{'metric':<48}{'value':>10}{'target':>10}")
    print(f"{'frames drawn and acknowledged per second':<48}{med['fps']:>10.1f}{'>= 20':>10}")
    print(f"{'sampling with preview (s)':<48}{med['preview_s']:>10.2f}")
    print(f"{'sampling without preview (s)':<48}{med['plain_s']:>10.2f}")
    print(f"{'time ratio with/without (median of rounds)':<48}{ratio:>10.3f}{'<= 1.15':>10}")
    print(f"{'frames sent / acknowledged / drawn per run':<48}{med['frames']:>4.0f} / {med['acked']:.0f} / {med['drawn']:.0f}")
    print(f"{'acknowledgement messages per run':<48}{med['acks']:>10.0f}")
    print(f"{'CPU ms per frame: kernel (extra) / server / chromium':<48}{med['kernel_ms']:>4.0f} / {med['server_ms']:.0f} / {med['chromium_ms']:.0f}")
    print(f"{'steps throttled / held for acks per run':<48}{med['throttled']:>4.0f} / {med['held']:.0f}")
    print(f"{'median acknowledgement latency (ms)':<48}{med['latency_ms']:>10.0f}")
    ok = med['fps'] >= 20 and ratio <= 1.15
    print('targets met' if ok else 'targets NOT met')
    return 0 if ok else 1

if __name__ == '__main__':
    sys.exit(main())
