"""SamplerPreview in a real browser: frames drawn and acknowledged per second for 10k 2-D points in headless chromium
(target >= 20), and sampling time with a live preview against the same sampling without one (target <= 1.15x).

JupyterLab + Debian chromium (playwright). Runs are interleaved (preview, plain, preview, ...); medians are reported.
    .venv/bin/python benchmarks/widgets.py [--rounds 5] [--steps 200] [--n 10000] [--method sde]
"""
import argparse, statistics, sys, tempfile, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
from browser import Lab, launch, write_notebook, open_notebook, wait_idle, KernelProbe

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rounds', type=int, default=5); ap.add_argument('--steps', type=int, default=300)
    ap.add_argument('--n', type=int, default=10_000); ap.add_argument('--method', default='sde')
    a = ap.parse_args()
    setup = (f"import time, torch, diffnb as dn\nfrom diffnb.widgets import SamplerPreview\nden = dn.ring_mixture().denoiser('vp')\n"
             f"pv = SamplerPreview(den, n={a.n}, method={a.method!r}, steps={a.steps})\npv")
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
            page.click('.diffnb-sp-run')
            page.wait_for_function("(b) => { const d = document.querySelector('.diffnb-sp').dataset; return d.final === '1' && (+d.frames) > b; }", arg=before, timeout=600_000)
            k = probe("pv.join()", "dict(pv.last_run, acks=pv._acks)")
            drawn = int(page.evaluate("+document.querySelector('.diffnb-sp').dataset.frames")) - before
            p = probe(plain, "plain_s")
            rows.append(dict(preview_s=k['elapsed'], plain_s=p, frames=k['frames'], acks=k['acks'], drawn=drawn, fps=k['acks'] / k['elapsed'],
                             held=k['held'], throttled=k['throttled'], latency_ms=1000 * (k['ack_latency'] or 0)))
            print(f"round {r + 1}: preview {k['elapsed']:.2f} s, plain {p:.2f} s, {k['frames']} frames sent, {k['acks']} acknowledged, {drawn} drawn, "
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
    print(f"{'frames sent / acknowledged / drawn per run':<48}{med['frames']:>4.0f} / {med['acks']:.0f} / {med['drawn']:.0f}")
    print(f"{'steps throttled / held for acks per run':<48}{med['throttled']:>4.0f} / {med['held']:.0f}")
    print(f"{'median acknowledgement latency (ms)':<48}{med['latency_ms']:>10.0f}")
    ok = med['fps'] >= 20 and ratio <= 1.15
    print('targets met' if ok else 'targets NOT met')
    return 0 if ok else 1

if __name__ == '__main__':
    sys.exit(main())
