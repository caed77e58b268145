"Training infrastructure with real components: checkpoints under SIGKILL, exact resume across processes."
import os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
import torch
import diffnb as dn

SAVER = textwrap.dedent('''
    import sys, torch, diffnb as dn
    data = dn.ring_mixture().sample(2000, generator=torch.Generator().manual_seed(0))
    from pathlib import Path
    if (Path(sys.argv[1]) / 'latest').exists():   # a crashed run resumes from its last checkpoint
        tr = dn.Trainer.load(sys.argv[1], data=data, device='cpu', folder=sys.argv[1], save_every=1, keep=2)
    else: tr = dn.Trainer(dn.MLP(2, hidden=64, depth=2), 'vp', data, batch_size=64, folder=sys.argv[1], save_every=1, keep=2, device='cpu')
    print('ready', flush=True)
    for _ in tr.steps(100_000): pass
''')

def test_checkpoints_survive_sigkill(tmp_path):
    "Kill a process that saves a checkpoint every step, many times at random moments: every checkpoint left behind loads."
    script = tmp_path / 'saver.py'; script.write_text(SAVER)
    folder = tmp_path / 'ckpt'
    rng = torch.Generator().manual_seed(0)
    loaded, last_step = 0, 1
    for k in range(8):
        proc = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == 'ready'
        time.sleep(0.2 + 0.6 * torch.rand(1, generator=rng).item())
        proc.send_signal(signal.SIGKILL); proc.wait()
        if not (folder / 'latest').exists(): continue
        tr = dn.Trainer.load(folder, device='cpu')              # the checkpoint `latest` points to
        assert tr.step >= last_step, (tr.step, last_step)       # resumed runs only move forward
        last_step = tr.step
        for ck in folder.glob('ckpt-*'):                         # and every other complete one
            dn.Trainer.load(ck, device='cpu')
        loaded += 1
    assert loaded >= 6, f"only {loaded} of 8 kills left a checkpoint behind"
