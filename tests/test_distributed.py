"Real multi-process training: torchrun with 2 processes and gloo on the CPU, for every objective of the one Trainer."
import subprocess, sys, textwrap
from pathlib import Path
import pytest
import torch
from test_objectives import OBJECTIVES, _make   # one seeded trainer per objective, built alike here and in each process

STEP = textwrap.dedent('''
    import os, sys, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[4])
    from test_objectives import _make
    from diffnb.distributed import init_distributed
    rank, world, dev = init_distributed()
    assert world == 2, world
    batches, out = torch.load(sys.argv[2], weights_only=True), {}
    for run in sys.argv[1].split(','):                             # several runs in one launch: one process start for all
        objective, _, accum = run.partition(':')                   # 'dsm:2': dsm in two micro-batches per replica's half
        tr = _make(objective)[0].distribute()
        tr.accum = int(accum or 1)
        batch = batches[objective]
        half = len(batch[0]) // 2
        tr.train_step(tuple(None if v is None else v[rank * half:(rank + 1) * half] for v in batch))
        out[run] = {'world': world, **tr.net.state_dict()}
    if rank == 0: torch.save(out, sys.argv[3])
    dist.barrier(); dist.destroy_process_group()
    sys.stdout.flush(); os._exit(0)   # skip interpreter teardown: gloo's threads there abort now and then ("terminate called without an active exception")
''')

def _launch(folder:Path, runs:list) -> tuple:
    "One torchrun launch of two processes taking one DDP step per run ('objective' or 'objective:accum') on the two halves of the objective's own batch: the batches and the weights after each run."
    batches = {o: _make(o)[0]._batch() for o in dict.fromkeys(r.partition(':')[0] for r in runs)}   # each objective's own batch, drawn once
    torch.save(batches, folder / 'batch.pt'); (folder / 'step.py').write_text(STEP)
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(folder / 'step.py'),
                        ','.join(runs), str(folder / 'batch.pt'), str(folder / 'ddp.pt'), str(Path(__file__).parent)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return batches, torch.load(folder / 'ddp.pt', weights_only=True)

# The kernel field's target is the exact field of the minibatch itself, so a shard's loss is not a part of the whole batch's:
# DDP trains it on each process's own minibatch field, which no single-process step reproduces.
DECOMPOSABLE = [o for o in OBJECTIVES if o != 'kernel']

@pytest.fixture(scope='module')
def ddp_steps(tmp_path_factory) -> tuple:
    "(batches, weights by run) of one launch: every decomposable objective in one micro-batch per half, and dsm in two ('dsm:2')."
    return _launch(tmp_path_factory.mktemp('ddp'), DECOMPOSABLE + ['dsm:2'])

@pytest.mark.parametrize('objective, accum', [(o, 1) for o in DECOMPOSABLE] + [('dsm', 2)])
def test_one_ddp_step_equals_one_step_on_the_concatenated_batch(ddp_steps, objective, accum):
    "One step of two DDP replicas on the two halves of a batch (each half in `accum` micro-batches) gives the weights of one step on the whole batch."
    batches, weights = ddp_steps
    ddp = dict(weights[objective if accum == 1 else f'{objective}:{accum}'])
    assert ddp.pop('world') == 2
    single = _make(objective)[0]
    before = {k: v.clone() for k, v in single.net.state_dict().items()}
    single.train_step(batches[objective])
    changed = 0
    for k, v in single.net.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6)
        changed += int(not torch.equal(v, before[k]))
    assert changed > 0, "the step changed no weight: the comparison would be empty"

def test_two_nodes_of_one_process_each_rendezvous_over_c10d(tmp_path):
    "A multi-node launch (torchrun --nnodes 2 --rdzv-backend c10d) as two 'nodes' on 127.0.0.1: one step equals one step on the whole batch."
    import socket
    with socket.socket() as sock: sock.bind(('127.0.0.1', 0)); port = sock.getsockname()[1]
    single = _make('dsm')[0]
    batch = single._batch()
    torch.save({'dsm': batch}, tmp_path / 'batch.pt'); (tmp_path / 'step.py').write_text(STEP)
    node = lambda: subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--nnodes=2', '--nproc_per_node=1', '--rdzv-backend=c10d',
                                     f'--rdzv-endpoint=127.0.0.1:{port}', '--rdzv-id=diffnb-test', str(tmp_path / 'step.py'),
                                     'dsm', str(tmp_path / 'batch.pt'), str(tmp_path / 'ddp.pt'), str(Path(__file__).parent)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    nodes = [node(), node()]
    outs = [n.communicate(timeout=300) for n in nodes]
    assert all(n.returncode == 0 for n in nodes), '\n'.join(err[-2000:] for _, err in outs)
    ddp = torch.load(tmp_path / 'ddp.pt', weights_only=True)['dsm']
    assert ddp.pop('world') == 2
    single.train_step(batch)
    for k, v in single.net.state_dict().items(): torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6)
