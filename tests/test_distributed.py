"Real multi-process training: torchrun with 2 processes and gloo on the CPU."
import subprocess, sys, textwrap
import pytest
import torch
import diffnb as dn

# One trainer per objective, built the same way in the test and in each DDP process (the data and the net's initial weights are seeded).
MAKE = textwrap.dedent('''
    import torch, diffnb as dn
    def make(objective, batch_size):
        torch.manual_seed(0)
        data = dn.ring_mixture().sample(1000, generator=torch.Generator().manual_seed(0))
        net = lambda **kw: dn.MLP(2, hidden=64, depth=2, **kw)
        if objective == 'dsm': return dn.Trainer(net(), 'vp', data, batch_size=batch_size, device='cpu')
        if objective == 'classifier': return dn.ClassifierTrainer(net(out_dim=2), 'vp', (data, (data[:, 0] > 0).long()), batch_size=batch_size, device='cpu')
        if objective == 'inflationary': return dn.IFTrainer(net(), dn.inflationary_path(data), data, batch_size=batch_size, device='cpu')
        raise ValueError(objective)
''')

STEP = MAKE + textwrap.dedent('''
    import sys, torch.distributed as dist
    from diffnb.distributed import init_distributed
    rank, world, dev = init_distributed()
    assert world == 2, world
    tr = make(sys.argv[1], 32).distribute()
    batch = torch.load(sys.argv[2], weights_only=True)
    tr.train_step(tuple(None if v is None else v[rank * 32:(rank + 1) * 32] for v in batch))
    if rank == 0: torch.save({'world': world, **tr.net.state_dict()}, sys.argv[3])
    dist.barrier(); dist.destroy_process_group()
''')

@pytest.mark.parametrize('objective', ['dsm', 'classifier', 'inflationary'])
def test_one_ddp_step_equals_one_step_on_the_concatenated_batch(tmp_path, objective):
    "For each objective, one step of two DDP replicas on two halves of a batch gives the weights of one step on the whole batch."
    (tmp_path / 'make.py').write_text(MAKE); (tmp_path / 'step.py').write_text(STEP)
    sys.path.insert(0, str(tmp_path))
    try: from make import make
    finally: sys.path.remove(str(tmp_path)); sys.modules.pop('make', None)
    single = make(objective, 64)
    batch = single._batch()   # the objective's own batch (x0, y, t, eps), drawn once
    torch.save(batch, tmp_path / 'batch.pt')
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(tmp_path / 'step.py'),
                        objective, str(tmp_path / 'batch.pt'), str(tmp_path / 'ddp.pt')], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = torch.load(tmp_path / 'ddp.pt', weights_only=True)
    assert ddp.pop('world') == 2
    before = {k: v.clone() for k, v in single.net.state_dict().items()}
    single.train_step(batch)
    changed = 0
    for k, v in single.net.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6)
        changed += int(not torch.equal(v, before[k]))
    assert changed > 0, "the step changed no weight: the comparison would be empty"
