"Training infrastructure with real components: checkpoints under SIGKILL, exact resume across processes."
import json, math, os, signal, subprocess, sys, textwrap, time
import pytest
import torch
import diffnb as dn

RUNS = textwrap.dedent('''
    import os, sys, torch, diffnb as dn
    import torch._dynamo       # what an optimiser's first construction imports (seconds): once here, not in every process
    from pathlib import Path

    def saver(folder):
        "Save a checkpoint every step, for ever; a crashed run resumes from its last checkpoint."
        data = dn.ring_mixture().sample(2000, generator=torch.Generator().manual_seed(0))
        if (Path(folder) / 'latest').exists(): tr = dn.Trainer.load(folder, data=data, device='cpu', folder=folder, save_every=1, keep=2)
        else: tr = dn.Trainer(dn.MLP(2, hidden=64, depth=2), 'vp', data, batch_size=64, folder=folder, save_every=1, keep=2, device='cpu')
        print('ready', os.getpid(), flush=True)
        for _ in tr.steps(100_000): pass

    def resaver(folder):
        "Re-save the same step in a loop: the path `fit(); save()` and the CLI's last save take."
        data = dn.ring_mixture().sample(500, generator=torch.Generator().manual_seed(0))
        if (Path(folder) / 'latest').exists(): tr = dn.Trainer.load(folder, data=data, device='cpu')
        else: tr = dn.Trainer(dn.MLP(2, hidden=64, depth=2), 'vp', data, batch_size=64, device='cpu'); list(tr.steps(3))
        print('ready', os.getpid(), flush=True)
        while True: tr.save(folder)

    run, folder = globals()[sys.argv[1]], sys.argv[2]
    for _ in sys.stdin:            # a new process per line: a fork of this one, which imported torch and diffnb once and ran nothing
        pid = os.fork()
        if pid == 0: run(folder); os._exit(0)
        os.waitpid(pid, 0)
        print('gone', flush=True)
''')

class Runs:
    "Processes running one of RUNS' loops on `folder`, started one at a time and killed with SIGKILL at a moment the test picks."
    def __init__(self, tmp_path, run:str, folder):
        script = tmp_path / 'runs.py'; script.write_text(RUNS)
        self.proc = subprocess.Popen([sys.executable, str(script), run, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    def run_and_kill(self, after:float):
        "Start a process, let it run `after` seconds once it is ready, SIGKILL it and wait until it is gone."
        self.proc.stdin.write('run\n'); self.proc.stdin.flush()
        word, pid = self.proc.stdout.readline().split()
        assert word == 'ready', word
        time.sleep(after)
        os.kill(int(pid), signal.SIGKILL)
        assert self.proc.stdout.readline().strip() == 'gone'
    def __enter__(self): return self
    def __exit__(self, *exc):
        "The parent ends with its input; a failed test leaves no process behind."
        self.proc.stdin.close()
        try: self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()

def test_checkpoints_survive_sigkill(tmp_path):
    "Kill a process that saves a checkpoint every step, many times at random moments: every checkpoint left behind loads."
    folder = tmp_path / 'ckpt'
    rng, loaded, last_step = torch.Generator().manual_seed(0), 0, 1
    with Runs(tmp_path, 'saver', folder) as runs:
        for k in range(6):
            runs.run_and_kill(0.2 + 0.6 * torch.rand(1, generator=rng).item())
            if not (folder / 'latest').exists(): continue
            tr = dn.Trainer.load(folder, device='cpu')              # the checkpoint `latest` points to
            assert tr.step >= last_step, (tr.step, last_step)       # resumed runs only move forward
            last_step = tr.step
            for ck in folder.glob('ckpt-*'):                         # and every other complete one
                dn.Trainer.load(ck, device='cpu')
            loaded += 1
    assert loaded >= 4, f"only {loaded} of 6 kills left a checkpoint behind"

def test_resaving_a_step_survives_sigkill(tmp_path):
    "Kill a process that re-saves the same step in a loop: `latest` always reaches a complete checkpoint, and the next save leaves no debris."
    folder = tmp_path / 'ckpt'
    rng = torch.Generator().manual_seed(1)
    with Runs(tmp_path, 'resaver', folder) as runs:
        for k in range(6):
            runs.run_and_kill(0.05 + 0.4 * torch.rand(1, generator=rng).item())
            tr = dn.Trainer.load(folder, device='cpu')
            assert tr.step == 3
    tr = dn.Trainer.load(folder, data=dn.ring_mixture().sample(500, generator=torch.Generator().manual_seed(0)), device='cpu')
    tr.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ['ckpt-00000003', 'latest'], sorted(p.name for p in folder.iterdir())


def _small_run(folder):
    data = dn.ring_mixture().sample(200, generator=torch.Generator().manual_seed(0))
    tr = dn.Trainer(dn.MLP(2, hidden=16, depth=1), 'vp', data, batch_size=32, folder=str(folder), save_every=2, device='cpu')
    list(tr.steps(2))
    return tr, folder / 'ckpt-00000002'

@pytest.mark.parametrize('payload', [{'class': 'os.system', 'kwargs': {'command': 'touch {p}'}},
                                     {'class': 'subprocess.Popen', 'kwargs': {'args': ['touch', '{p}']}},
                                     {'class': 'diffnb.cli.os.system', 'kwargs': {'command': 'touch {p}'}}])
def test_a_hostile_config_runs_nothing(tmp_path, payload):
    _, ck = _small_run(tmp_path / 'run')
    marker = tmp_path / 'pwned'
    cfg = json.loads((ck / 'config.json').read_text())
    cfg['net'] = json.loads(json.dumps(payload).replace('{p}', str(marker)))
    (ck / 'config.json').write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match='which is not registered'): dn.Trainer.load(ck, device='cpu')
    with pytest.raises(ValueError, match='which is not registered'): dn.load_denoiser(tmp_path / 'run', device='cpu')
    assert not marker.exists()

@pytest.mark.parametrize('name', ['model.safetensors', 'ema.safetensors', 'state.pt'])
def test_damaged_files_are_named(tmp_path, name):
    _, ck = _small_run(tmp_path / 'run')
    raw = bytearray((ck / name).read_bytes()); raw[len(raw) // 2] ^= 0x10
    (ck / name).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f'{name} does not match its checksum'): dn.Trainer.load(ck, device='cpu')
    (ck / name).write_bytes(bytes(raw[:len(raw) // 3]))
    cfg = json.loads((ck / 'config.json').read_text()); cfg['sha256'].pop(name); (ck / 'config.json').write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=f'{name} cannot be read'): dn.Trainer.load(ck, device='cpu')   # truncated, and no checksum to catch it first

def test_latest_cannot_point_outside_the_folder(tmp_path):
    _small_run(tmp_path / 'run')
    (tmp_path / 'run' / 'latest').write_text('../../etc')
    with pytest.raises(ValueError, match="its 'latest' pointer names '../../etc'"): dn.Trainer.load(tmp_path / 'run', device='cpu')

def test_a_nan_gradient_is_not_applied_and_the_checkpoint_stays_finite(tmp_path):
    tr, ck = _small_run(tmp_path / 'run')
    before = {k: v.clone() for k, v in tr.net.state_dict().items()}
    x0, y, t, eps = tr._batch()
    with torch.no_grad(): tr.net.out[-1].bias.fill_(float('nan'))
    # the NaN bias makes the loss NaN; the guard must stop before the optimiser, the EMA and the checkpoint
    with pytest.raises(FloatingPointError, match=r'at step 3 .*t in \['): tr.train_step((x0, y, t, eps))
    assert tr.step == 2 and all(torch.isfinite(v).all() for v in tr.ema.net.state_dict().values())
    back = dn.Trainer.load(tmp_path / 'run', device='cpu')
    assert all(torch.isfinite(v).all() for v in back.net.state_dict().values())
    assert all(torch.equal(back.net.state_dict()[k], before[k]) for k in before)

BAD_TRAINER_ARGS = [('grad_clip', -1), ('warmup', -5), ('warmup', 2.5), ('p_uncond', 1.5), ('save_every', 0), ('keep', -1), ('lr', '1e-3'),
                    ('lr', float('nan')), ('ema', 1.5), ('batch_size', 0), ('total_steps', 0), ('seed', -1), ('sigma_data', 0.), ('t_scale', -1.),
                    ('param', 'velocty'), ('lr_schedule', 'cos'), ('weighting', 'snr2'), ('t_density', 'beta'), ('precision', 'fp16'), ('device', 'gpu0')]

@pytest.mark.parametrize('arg,value', BAD_TRAINER_ARGS)
def test_bad_trainer_arguments_are_named(tmp_path, arg, value):
    data = dn.ring_mixture().sample(100, generator=torch.Generator().manual_seed(0))
    kw = {'folder': str(tmp_path)} if arg in ('save_every', 'keep') else {}
    with pytest.raises(ValueError) as e: dn.Trainer(dn.MLP(2, hidden=8, depth=1), 'vp', data, **kw, **{arg: value})
    assert str(e.value).startswith(f'{arg}='), str(e.value)

def test_training_into_a_folder_that_holds_a_run_is_refused_and_load_resumes_saving(tmp_path):
    tr, _ = _small_run(tmp_path / 'run')
    data = tr.x
    with pytest.raises(ValueError, match='already holds a run'): dn.Trainer(dn.MLP(2, hidden=16, depth=1), 'vp', data, folder=str(tmp_path / 'run'))
    back = dn.Trainer.load(tmp_path / 'run', data=data, device='cpu')
    assert (back.folder, back.save_every, back.keep) == (str(tmp_path / 'run'), 2, 3)
    list(back.steps(2))
    assert (tmp_path / 'run' / 'latest').read_text() == 'ckpt-00000004'
    with pytest.warns(UserWarning, match='not the data this checkpoint was trained on'): dn.Trainer.load(tmp_path / 'run', data=data[:50] + 1, device='cpu')
    with pytest.raises(ValueError, match='loaded without data'): dn.Trainer.load(tmp_path / 'run', device='cpu').train_step()

def test_load_takes_a_path_by_name(tmp_path):
    _small_run(tmp_path / 'run')
    assert dn.Trainer.load(tmp_path / 'run', path='vp', device='cpu').path.name == 'vp'
    with pytest.raises(ValueError, match=r"the checkpoint was trained on VP\("): dn.Trainer.load(tmp_path / 'run', path='ve', device='cpu')

def test_recorded_sizes_are_checked_before_allocation(tmp_path):
    "A config that asks for a huge network or event shape is refused from the weights file's header and the bounds, in well under a second."
    _, ck = _small_run(tmp_path / 'run')
    cfg = json.loads((ck / 'config.json').read_text())
    big = json.loads(json.dumps(cfg)); big['net']['kwargs']['hidden'] = 10**9      # 1e18 parameters if it were built
    (ck / 'config.json').write_text(json.dumps(big))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="do not match its weights file"): dn.Trainer.load(ck, device='cpu')
    assert time.perf_counter() - t0 < 5
    shape = json.loads(json.dumps(cfg)); shape['event_shape'] = [10**6, 10**6]
    (ck / 'config.json').write_text(json.dumps(shape))
    with pytest.raises(ValueError, match=r"event_shape=\[1000000, 1000000\]"): dn.Trainer.load(ck, device='cpu')
    (ck / 'config.json').write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match='net: does not fit the weights'): dn.Trainer.load(ck, net=dn.MLP(2, hidden=8, depth=1), device='cpu')
    assert dn.Trainer.load(ck, device='cpu').step == 2

def test_fallback_loads_the_newest_intact_checkpoint_only_when_asked(tmp_path):
    tr, _ = _small_run(tmp_path / 'run')
    list(tr.steps(2))                                    # ckpt-00000002 and ckpt-00000004
    latest = tmp_path / 'run' / 'ckpt-00000004'
    raw = bytearray((latest / 'state.pt').read_bytes()); raw[len(raw) // 2] ^= 0x10; (latest / 'state.pt').write_bytes(bytes(raw))
    with pytest.raises(ValueError, match='state.pt does not match its checksum'): dn.Trainer.load(tmp_path / 'run', device='cpu')
    with pytest.warns(UserWarning, match=r'loaded ckpt-00000002, the newest intact checkpoint; skipped ckpt-00000004 \(.*state.pt'):
        back = dn.Trainer.load(tmp_path / 'run', device='cpu', fallback=True)
    assert back.step == 2
    for ck in (tmp_path / 'run').glob('ckpt-*'): (ck / 'model.safetensors').write_bytes(b'')
    with pytest.raises(ValueError, match='no checkpoint in it loads'): dn.Trainer.load(tmp_path / 'run', device='cpu', fallback=True)

def test_a_stacked_path_round_trips_without_path(tmp_path):
    "A StackedPath checkpoint records each part whole (and the basis): load rebuilds it, and refuses a stack of other schedules."
    from diffnb.paths import StackedPath
    sp = StackedPath([dn.get_path('vp', beta_max=10.), dn.get_path('subvp')], basis=torch.tensor([[0.6, -0.8], [0.8, 0.6]]))
    tr = dn.Trainer(dn.MLP(2, hidden=16, depth=1), sp, dn.toy('ring8', 200), batch_size=32, device='cpu')
    list(tr.steps(2)); tr.save(tmp_path / 'run')
    back = dn.Trainer.load(tmp_path / 'run', device='cpu')
    assert [q.params() for q in back.path.paths] == [q.params() for q in sp.paths] and torch.equal(back.path.basis, sp.basis)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    assert torch.equal(back.path.alpha(t), sp.alpha(t)) and back.t_density == 'uniform'
    with pytest.raises(ValueError, match='the checkpoint was trained on'):
        dn.Trainer.load(tmp_path / 'run', path=StackedPath([dn.get_path('vp'), dn.get_path('subvp')], basis=sp.basis), device='cpu')

def test_the_cli_trains_with_the_recipe(tmp_path):
    "diffnb train uses the Trainer's defaults, which are dn.RECIPE: the checkpoint it writes records them."
    r = subprocess.run([sys.executable, '-m', 'diffnb', 'train', '--data', 'ring8', '--steps', '2', '--out', str(tmp_path / 'cli'), '--device', 'cpu'],
                       capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads(next((tmp_path / 'cli').glob('ckpt-*/config.json')).read_text())
    assert {k: cfg['hparams'][k] for k in dn.RECIPE} == dn.RECIPE   # 20k toy points: the recipe's batch of 1024 too


def _ring_trainer(**kw):
    torch.manual_seed(0)
    return dn.Trainer(dn.MLP(2, hidden=64, depth=2), 'vp', dn.toy('ring8', 4096), batch_size=256, seed=1, total_steps=200, **kw)

def test_gradient_accumulation_is_the_large_batch_step():
    "accum=4 micro-batches of 64 give the step of one batch of 256: the same loss and weights, for the DSM and the classifier objectives."
    a, b = _ring_trainer(), _ring_trainer(accum=4)
    for _ in range(3): sa, sb = a.train_step(), b.train_step()
    assert sb.loss == pytest.approx(sa.loss, rel=1e-6)
    assert max((p - q).abs().max().item() for p, q in zip(a.net.parameters(), b.net.parameters())) < 1e-6
    x = dn.toy('moons', 512); y = (x[:, 0] > 0).long()
    def clf(accum):
        torch.manual_seed(0)
        return dn.ClassifierTrainer(dn.MLP(2, hidden=32, depth=1, out_dim=2), 'vp', (x, y), batch_size=128, accum=accum)
    c1, c4 = clf(1), clf(4)
    assert c4.train_step().loss == pytest.approx(c1.train_step().loss, rel=1e-6)
    assert max((p - q).abs().max().item() for p, q in zip(c1.net.parameters(), c4.net.parameters())) < 1e-6
    with pytest.raises(ValueError, match='accum=3: must divide batch_size=256'): _ring_trainer(accum=3)

def test_bf16_on_the_cpu_trains_like_fp32_and_reloads_in_fp32(tmp_path):
    "CPU autocast in bf16: 200 steps reach the fp32 run's loss within 3%; the checkpoint loads as an fp32 trainer with the same weights."
    f32, b16 = _ring_trainer(precision='fp32'), _ring_trainer(precision='bf16')
    l32, l16 = [s.loss for s in f32.steps(200)], [s.loss for s in b16.steps(200)]
    assert b16.amp_dtype is torch.bfloat16 and f32.amp_dtype is None
    assert l16 != l32                                                   # autocast really ran in bf16
    assert sum(l16[-50:]) / 50 == pytest.approx(sum(l32[-50:]) / 50, rel=0.03)
    b16.save(tmp_path / 'run')
    back = dn.Trainer.load(tmp_path / 'run', data=dn.toy('ring8', 4096), precision='fp32')
    assert back.amp_dtype is None and all(p.dtype == torch.float32 for p in back.net.parameters())
    assert all(torch.equal(p, q) for p, q in zip(back.net.parameters(), b16.net.parameters()))

def test_fp16_loss_scaling_skips_overflowing_steps():
    "The fp16 path's GradScaler, exercised on the CPU (the public option needs CUDA): an overflowing scale is lowered and training goes on."
    tr = _ring_trainer()
    tr.amp_dtype, tr.scaler = torch.float16, torch.amp.GradScaler('cpu', init_scale=2.**40)
    losses = [s.loss for s in tr.steps(30)]
    assert all(math.isfinite(l) for l in losses) and tr.scaler.get_scale() < 2.**40 and tr.step == 30
    with pytest.raises(ValueError, match="precision='fp16': needs CUDA"): _ring_trainer(precision='fp16', device='cpu')

def test_channels_last_image_training_matches():
    "An image net in channels-last memory format takes the same steps as in the default format."
    x = dn.digits()[0][:256]
    def run(cl):
        torch.manual_seed(0)
        return [s.loss for s in dn.Trainer(dn.default_net(x), 'vp', x, batch_size=32, channels_last=cl).steps(3)]
    assert run(True) == pytest.approx(run(False), rel=1e-4)

def test_post_hoc_ema_rebuilds_an_average_that_was_not_kept(tmp_path):
    "Averages of width 0.05 and 0.10 snapshotted every 20 steps rebuild the width-0.08 average a third PowerEMA kept all along; from disk after a resume too."
    from diffnb.train import PowerEMA
    def run(**kw):
        torch.manual_seed(0)
        return dn.Trainer(dn.MLP(2, hidden=32, depth=1), 'vp', dn.toy('ring8', 2048), batch_size=128, seed=1, total_steps=300, lr=5e-3,
                          post_hoc_ema=(0.05, 0.10), snapshot_every=20, **kw)
    tr = run()
    direct = PowerEMA(tr.net, 0.08)
    for _ in tr.steps(300): direct.update(tr.net)
    rebuilt = tr.rebuild_ema(0.08)
    scale = max(p.abs().max().item() for p in direct.net.parameters())
    gap = max((p - q).abs().max().item() for p, q in zip(rebuilt.parameters(), direct.net.parameters()))
    moved = max((p - q).abs().max().item() for p, q in zip(tr.rebuild_ema(0.05).parameters(), direct.net.parameters()))
    assert gap < 1e-3 * scale and gap < 0.05 * moved, (gap, moved, scale)          # far closer to the kept 0.08 than the 0.05 average is
    first = run(folder=tmp_path / 'run', save_every=150); list(first.steps(150))
    back = dn.Trainer.load(tmp_path / 'run', data=dn.toy('ring8', 2048)); list(back.steps(150))
    assert len(list((tmp_path / 'run' / 'post_hoc_ema').glob('snapshot-*.safetensors'))) == 15
    for p, q in zip(back.rebuild_ema(0.08).parameters(), rebuilt.parameters()): torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='sigma_rel=0.5: must be in'): _ring_trainer(post_hoc_ema=(0.5,))
    with pytest.raises(ValueError, match='no snapshots are stored'): _ring_trainer().rebuild_ema(0.1)

def test_old_bf16_and_gpu_fp16_checkpoints_load_as_they_ran(tmp_path):
    "A format-2 checkpoint with precision='bf16' trained on the CPU in fp32 (bf16 meant CUDA only) and resumes so; an fp16 (CUDA) run loads on the CPU to sample."
    import json
    tr = _ring_trainer(); list(tr.steps(2)); tr.save(tmp_path / 'run')
    cfg_file, = (tmp_path / 'run').glob('ckpt-*/config.json')
    cfg = json.loads(cfg_file.read_text())
    assert cfg['format'] == 3
    cfg['format'], cfg['hparams']['precision'] = 2, 'bf16'
    cfg_file.write_text(json.dumps(cfg))
    assert dn.Trainer.load(tmp_path / 'run', data=dn.toy('ring8', 4096), device='cpu').amp_dtype is None
    cfg['format'], cfg['hparams']['precision'] = 3, 'fp16'
    cfg_file.write_text(json.dumps(cfg))
    back = dn.Trainer.load(tmp_path / 'run', device='cpu')
    assert back.amp_dtype is None and back.hparams['precision'] == 'fp16' and dn.sample(back.denoiser(), 4, steps=2).shape == (4, 2)
    with pytest.raises(ValueError, match="precision='fp16': needs CUDA"): dn.Trainer.load(tmp_path / 'run', data=dn.toy('ring8', 4096), device='cpu')

def test_ema_follows_its_net_after_a_conversion_and_in_a_copied_trainer():
    "An average keeps tracking its net after both are converted (.double() replaces their tensors), and a deep copy of a Trainer averages its own tensors: the copy and the original, stepped alike, end bitwise equal."
    import copy
    from diffnb.train import EMA
    net = torch.nn.Linear(3, 2); ema = EMA(net, 0.5); ema.update(net)
    net.double(); ema.net.double()
    with torch.no_grad(): net.weight.add_(1.)
    want = ema.net.weight.detach().lerp(net.weight.detach(), 1 - ema.decay_at(2))
    ema.update(net)
    assert torch.equal(ema.net.weight, want)
    torch.manual_seed(0)
    tr = dn.Trainer(dn.MLP(2, hidden=16, depth=1), 'vp', dn.ring_mixture().sample(512, generator=torch.Generator().manual_seed(0)), batch_size=64, seed=0)
    list(tr.steps(2))
    tr2 = copy.deepcopy(tr)
    start = [v.clone() for v in tr2.ema.net.state_dict().values()]
    list(tr.steps(3)); list(tr2.steps(3))
    assert not all(torch.equal(a, b) for a, b in zip(start, tr2.ema.net.state_dict().values()))   # the copy's average moved
    assert all(torch.equal(a, b) for a, b in zip(tr.ema.net.state_dict().values(), tr2.ema.net.state_dict().values()))
