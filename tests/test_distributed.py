"Real multi-process training: torchrun with 2 processes and gloo on the CPU."
import subprocess, sys, textwrap
import torch
import diffnb as dn

STEP = textwrap.dedent('''
    import sys, torch, torch.distributed as dist, diffnb as dn
    from diffnb.distributed import init_distributed
    rank, world, dev = init_distributed()
    assert world == 2, world
    torch.manual_seed(0)
    data = dn.ring_mixture().sample(1000, generator=torch.Generator().manual_seed(0))
    tr = dn.Trainer(dn.MLP(2, hidden=64, depth=2), 'vp', data, batch_size=32, device='cpu').distribute()
    batch = torch.load(sys.argv[1], weights_only=True)
    x0, t, eps = (batch[k][rank * 32:(rank + 1) * 32] for k in ('x0', 't', 'eps'))
    tr.train_step((x0, None, t, eps))
    if rank == 0: torch.save({'world': world, **tr.net.state_dict()}, sys.argv[2])
    dist.barrier(); dist.destroy_process_group()
''')

def test_one_ddp_step_equals_one_step_on_the_concatenated_batch(tmp_path):
    g = torch.Generator().manual_seed(1)
    batch = {'x0': dn.ring_mixture().sample(64, generator=g), 't': dn.sample_t(dn.get_path('vp'), 64, generator=g), 'eps': torch.randn(64, 2, generator=g)}
    torch.save(batch, tmp_path / 'batch.pt')
    (tmp_path / 'step.py').write_text(STEP)
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(tmp_path / 'step.py'),
                        str(tmp_path / 'batch.pt'), str(tmp_path / 'ddp.pt')], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = torch.load(tmp_path / 'ddp.pt', weights_only=True)
    assert ddp.pop('world') == 2
    torch.manual_seed(0)
    data = dn.ring_mixture().sample(1000, generator=torch.Generator().manual_seed(0))
    single = dn.Trainer(dn.MLP(2, hidden=64, depth=2), 'vp', data, batch_size=64, device='cpu')
    before = {k: v.clone() for k, v in single.net.state_dict().items()}
    single.train_step((batch['x0'], None, batch['t'], batch['eps']))
    changed = 0
    for k, v in single.net.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6)
        changed += int(not torch.equal(v, before[k]))
    assert changed > 0, "the step changed no weight: the comparison would be empty"
