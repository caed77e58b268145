"Every objective trains through the one Trainer: the non-finite stop, an exact resume from a real checkpoint, and what it makes."
import math
import pytest
import torch
import diffnb as dn
from diffnb.inflationary import inflationary_path, IFPrecond
from diffnb.constructions import KernelFlow, KernelDenoiser, Blur, Mask

def _x(n=64, seed=0): return dn.toy('moons', n, seed=seed)

def _make(name):
    "(trainer, options that Trainer.load needs beside data, the data to resume with, the model's expected type)."
    torch.manual_seed(0)
    x = _x()
    if name == 'dsm': return dn.Trainer(dn.MLP(2, hidden=16, depth=1), 'vp', x, batch_size=16), {}, x, dn.Denoiser
    if name == 'classifier':
        y = (x[:, 0] > 0).long()
        return dn.ClassifierTrainer(dn.MLP(2, hidden=16, depth=1, out_dim=2), 'vp', (x, y), batch_size=16), {}, (x, y), dn.NoisyClassifier
    if name in ('if', 'fm'):
        return dn.IFTrainer(dn.MLP(2, hidden=16, depth=1), inflationary_path(x, 'prr', 1), x, name, batch_size=16), {}, x, dn.Denoiser
    if name == 'variance':
        den = dn.GaussianMixture([[0., 0.]], [[[1., 0.], [0., 1.]]]).denoiser(dn.get_path('vp'))
        return dn.VarianceTrainer(dn.MLP(2, hidden=16, depth=1), den, x, 'sn', batch_size=16), {'den': den}, x, dn.VarianceHead
    if name == 'kernel':
        return dn.KernelFlowTrainer(dn.MLP(2, hidden=16, depth=1, log_time=True), KernelFlow('laplace', 'linear'), x, batch_size=16), {}, x, KernelDenoiser
    if name == 'restorer':
        xd = dn.digits()[0][:64]
        return dn.RestorerTrainer(dn.MLP(64, hidden=16, depth=1), Blur(levels=4), xd.flatten(1), batch_size=16), {}, xd.flatten(1), torch.nn.Module
    if name == 'reflow':
        pairs = (x, torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))
        return dn.ReflowTrainer(dn.MLP(2, hidden=16, depth=1), 'linear', pairs, param='velocity', batch_size=16), {}, pairs, dn.Denoiser

OBJECTIVES = ['dsm', 'classifier', 'if', 'fm', 'variance', 'kernel', 'restorer', 'reflow']

@pytest.mark.parametrize('name', OBJECTIVES)
def test_objective_resumes_exactly_from_its_checkpoint(name, tmp_path):
    tr, extra, data, kind = _make(name)
    first = [s.loss for s in tr.steps(3)]
    tr.save(tmp_path / 'run')
    after = [s.loss for s in tr.steps(3)]
    assert all(math.isfinite(l) for l in first + after) and len(tr.losses) == 6
    back = type(tr).load(tmp_path / 'run', data=data, **extra)
    assert back.step == 3 and back.losses == first and type(back) is type(tr)
    assert [s.loss for s in back.steps(3)] == after                 # the same batches, weights and optimiser state
    assert isinstance(back.model(), kind)
    for a, b in zip(tr.net.state_dict().values(), back.net.state_dict().values()): assert torch.equal(a, b)

@pytest.mark.parametrize('name', OBJECTIVES)
def test_objective_stops_on_a_non_finite_loss(name):
    tr, _, _, _ = _make(name)
    for _ in tr.steps(1): pass
    with torch.no_grad(): next(tr.net.parameters()).fill_(float('nan'))
    ema = [v.clone() for v in tr.ema.net.state_dict().values()]
    with pytest.raises(FloatingPointError, match='at step 2 .*the update was not applied'): next(tr.steps(1))
    assert tr.step == 1 and all(torch.equal(a, b) for a, b in zip(ema, tr.ema.net.state_dict().values()))

def test_loading_with_another_trainer_class_or_corruption_is_refused(tmp_path):
    tr, _, data, _ = _make('restorer')
    tr.save(tmp_path / 'r')
    with pytest.raises(ValueError, match='holds a RestorerTrainer checkpoint; load it with RestorerTrainer.load'): dn.Trainer.load(tmp_path / 'r')
    with pytest.raises(ValueError, match='degrade=.*the checkpoint was trained on'): dn.RestorerTrainer.load(tmp_path / 'r', degrade=Blur(levels=5))
    assert dn.RestorerTrainer.load(tmp_path / 'r').path.config == Blur(levels=4).config       # rebuilt from its record
    tr, _, data, _ = _make('if')
    tr.save(tmp_path / 'if')
    back = dn.IFTrainer.load(tmp_path / 'if')                                                  # the path's eigenvalues and basis are recorded
    assert torch.equal(back.path.xi, tr.path.xi) and torch.allclose(back.path.basis, tr.path.basis) and back.objective == 'if'
    other = inflationary_path(_x(64, seed=5), 'prr', 1)
    with pytest.raises(ValueError, match='path=.*the checkpoint was trained on'): dn.IFTrainer.load(tmp_path / 'if', path=other)
    tr, _, _, _ = _make('variance')
    tr.save(tmp_path / 'v')
    with pytest.raises(ValueError, match='den: .*pass den='): dn.VarianceTrainer.load(tmp_path / 'v')

def test_one_gradient_loop_in_the_package():
    import pathlib, re
    src = pathlib.Path(dn.__file__).parent
    hits = [(f.name, n) for f in src.glob('*.py') for n, line in enumerate(f.read_text().splitlines(), 1) if re.search(r'\.backward\(', line)]
    assert len(hits) == 1 and hits[0][0] == 'train.py', hits

@pytest.mark.parametrize('name', OBJECTIVES)
def test_objective_trains_under_the_monitor(name, tmp_path):
    "TrainingMonitor drives every objective: the loss curve, samples where the model is a Denoiser, and a checkpoint that loads."
    from diffnb.widgets import TrainingMonitor
    tr, extra, data, kind = _make(name)
    mon = TrainingMonitor(tr, every=2, n_samples=32, steps=2, folder=str(tmp_path / 'mon'))
    mon.train(4, wait=True)
    assert tr.step == 4 and len(mon.loss_fig.data[0].y) == 4
    draws = [s for s, _ in mon.sample_log]
    assert draws == ([2, 4] if issubclass(kind, dn.Denoiser) else []), draws
    assert all(torch.isfinite(x).all() for _, x in mon.sample_log)
    assert type(tr).load(tmp_path / 'mon', data=data, **extra).step == 4

@pytest.mark.parametrize('name, old, new, field', [('variance', 'kind', 'estimator', 'hparams'), ('kernel', 'kind', 'construction', 'path')])
def test_a_checkpoint_written_before_an_option_was_renamed_loads_with_its_value(name, old, new, field, tmp_path):
    "VarianceTrainer's kind= became estimator=, KernelFlow's kind= became construction=: checkpoints with the old name keep their value."
    import json
    tr, extra, data, _ = _make(name)
    tr.save(tmp_path / 'run')
    cfg_file, = (tmp_path / 'run').glob('ckpt-*/config.json')
    cfg = json.loads(cfg_file.read_text())
    rec = cfg['hparams'] if field == 'hparams' else cfg['path']['params']
    value = rec.pop(new)
    rec[old] = value
    cfg_file.write_text(json.dumps(cfg))
    back = type(tr).load(tmp_path / 'run', data=data, **extra)
    got = back.estimator if name == 'variance' else back.path.construction
    assert got == value and value in ('sn', 'linear')      # 'sn' is not the default 'npr': the old value was read
