"Real multi-process training: torchrun with 2 processes and gloo on the CPU, for every objective of the one Trainer."
import subprocess, sys, textwrap
from pathlib import Path
import pytest
import torch
from test_objectives import OBJECTIVES, _make   # one seeded trainer per objective, built alike here and in each process

STEP = textwrap.dedent('''
    import sys, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[4])
    from test_objectives import _make
    from diffnb.distributed import init_distributed
    rank, world, dev = init_distributed()
    assert world == 2, world
    tr = _make(sys.argv[1])[0].distribute()
    batch = torch.load(sys.argv[2], weights_only=True)
    half = len(batch[0]) // 2
    tr.train_step(tuple(None if v is None else v[rank * half:(rank + 1) * half] for v in batch))
    if rank == 0: torch.save({'world': world, **tr.net.state_dict()}, sys.argv[3])
    dist.barrier(); dist.destroy_process_group()
''')

# The kernel field's target is the exact field of the minibatch itself, so a shard's loss is not a part of the whole batch's:
# DDP trains it on each process's own minibatch field, which no single-process step reproduces.
DECOMPOSABLE = [o for o in OBJECTIVES if o != 'kernel']

@pytest.mark.parametrize('objective', DECOMPOSABLE)
def test_one_ddp_step_equals_one_step_on_the_concatenated_batch(tmp_path, objective):
    "One step of two DDP replicas on the two halves of a batch gives the weights of one step on the whole batch."
    single = _make(objective)[0]
    batch = single._batch()   # the objective's own batch, drawn once
    torch.save(batch, tmp_path / 'batch.pt'); (tmp_path / 'step.py').write_text(STEP)
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(tmp_path / 'step.py'),
                        objective, str(tmp_path / 'batch.pt'), str(tmp_path / 'ddp.pt'), str(Path(__file__).parent)],
                       capture_output=True, text=True, timeout=300)
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
