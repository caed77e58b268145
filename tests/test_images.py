"Image data as users bring it: real PNG folders read by Pillow, arrays and dataset objects; uint8 storage; training, flips and resume on it."
import warnings
import numpy as np
import pytest
import torch
from PIL import Image
import diffnb as dn
from diffnb.data import image_data, ImageData

def _folder(root, classes=('a', 'b'), per=8, size=8, rgb=True, seed=0):
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per):
            shape = (size, size, 3) if rgb else (size, size)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / name / f'{i}.png')
    return root

def test_a_folder_trains_from_uint8_storage_and_resumes_exactly(tmp_path):
    "The Trainer keeps the folder's pixels as uint8, draws decoded flipped batches, and a resumed run repeats a straight one."
    root = _folder(tmp_path / 'imgs')
    def run():
        torch.manual_seed(0)
        return dn.Trainer(dn.default_net(root, base=8), 'vp', root, batch_size=8, seed=2, total_steps=6)
    straight = run(); list(straight.steps(6))
    assert isinstance(straight.x, ImageData) and straight.x.images.dtype == torch.uint8 and straight.n_classes == 2
    first = run(); list(first.steps(3)); first.save(tmp_path / 'ck')
    back = dn.Trainer.load(tmp_path / 'ck', data=root); list(back.steps(3))
    assert back.losses == straight.losses

def test_flips_are_drawn_per_image_from_the_trainer_generator():
    "A left-right ramp: about half the drawn images come back mirrored, the rest as stored; with hflip=False none do."
    ramp = np.tile(np.arange(8, dtype=np.uint8) * 30, (64, 8, 1))             # (n, H, W): brighter to the right
    data = image_data(ramp)
    tr = dn.Trainer(dn.MLP(64, hidden=8, depth=1), 'vp', data, batch_size=64)      # _rows, the Trainer's batch draw, is what is tested
    x = tr._rows(torch.arange(64))
    mirrored = (x[:, 0, 0, 0] > x[:, 0, 0, -1]).float().mean().item()
    assert 0.3 < mirrored < 0.7
    assert torch.equal(torch.sort(x.flatten(1), 1).values, torch.sort(data.decode().flatten(1), 1).values)   # the same pixels
    still = dn.Trainer(dn.MLP(64, hidden=8, depth=1), 'vp', image_data(ramp, hflip=False), batch_size=64)
    assert (still._rows(torch.arange(64))[:, 0, 0, 0] < 0).all()

def test_arrays_and_dataset_objects():
    "uint8 channels-last arrays, float arrays in [0, 1], a torchvision-style dataset and a Hugging Face-style table of PIL images."
    a = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    d = image_data(a)
    assert d.shape == (6, 3, 8, 8) and torch.equal(d.images.permute(0, 2, 3, 1), torch.as_tensor(a))
    assert torch.equal(image_data(torch.as_tensor(a).permute(0, 3, 1, 2).float() / 255).images, d.images)
    class TV:                                                      # torchvision.datasets.CIFAR10's fields
        data, targets, classes = a, [0, 1, 2, 0, 1, 2], ['x', 'y', 'z']
    tv = image_data(TV())
    assert tv.classes == ['x', 'y', 'z'] and tv.labels.tolist() == TV.targets and torch.equal(tv.images, d.images)
    class Table(list):                                             # datasets.Dataset: rows of dicts, column_names
        column_names = ['img', 'label']
    hf = image_data(Table({'img': Image.fromarray(a[i]), 'label': i % 2} for i in range(6)))
    assert torch.equal(hf.images, d.images) and hf.labels.tolist() == [0, 1, 0, 1, 0, 1]

def test_bad_image_folders_are_named(tmp_path):
    "Empty folders, unreadable files, mixed sizes, mixed grayscale and colour, files beside class folders."
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no image files'): image_data(tmp_path / 'empty')
    with pytest.raises(ValueError, match='not a folder'): image_data(tmp_path / 'missing')
    root = _folder(tmp_path / 'bad', per=2)
    (root / 'a' / 'oops.jpg').write_bytes(b'\xff\xd8 truncated')
    with pytest.raises(ValueError, match=r"1 file\(s\) Pillow cannot read: a/oops.jpg"): image_data(root)
    (root / 'a' / 'oops.jpg').unlink()
    Image.fromarray(np.zeros((10, 12, 3), dtype=np.uint8)).save(root / 'b' / 'big.png')
    with pytest.raises(ValueError, match=r'images differ in size, 8x8 .* and 10x12 \(e.g. b/big.png\); pass size='): image_data(root)
    assert image_data(root, size=6).shape == (5, 3, 6, 6)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / 'b' / 'gray.png')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert image_data(root, size=8).shape == (6, 3, 8, 8)
    assert any('1 grayscale image(s) among colour ones converted to RGB (e.g. b/gray.png)' in str(w.message) for w in caught)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / 'top.png')
    with pytest.raises(ValueError, match=r'images at its top level \(e.g. top.png\) and in sub-folders'): image_data(root, size=8)
    with pytest.raises(ValueError, match='float images must lie in'): image_data(torch.full((2, 1, 4, 4), 3.))
    with pytest.raises(ValueError, match='labels: must be integers >= 0'): image_data(np.zeros((2, 4, 4), dtype=np.uint8), labels=[0, -1])

def test_the_cli_trains_on_a_folder(tmp_path):
    "diffnb train --data FOLDER --size: a U-Net on the folder's images, labels from its sub-folders, as a checkpoint."
    from diffnb.cli import main
    root = _folder(tmp_path / 'imgs', per=4, size=10)
    assert main(['train', '--data', str(root), '--size', '8', '--net', 'tiny', '--steps', '2', '--batch-size', '4', '--accum', '2', '--out', str(tmp_path / 'run'), '--quiet']) == 0
    tr = dn.Trainer.load(tmp_path / 'run')
    assert tr.step == 2 and tr.event_shape == (3, 8, 8) and type(tr.net).__name__ == 'UNet' and tr.hparams['accum'] == 2
    assert tr.net.config['attention'] == [1] and tr.net.config['scale_shift'] and tr.n_classes == 2   # the preset, rebuilt from the checkpoint

def test_a_memory_mapped_cache_trains_like_the_folder(tmp_path):
    "cache= decodes a folder into a .npy once and memory-maps it after; training on it takes the folder's steps; a stale cache is refused."
    root = _folder(tmp_path / 'imgs', per=6)
    def losses(data):
        torch.manual_seed(0)
        return [s.loss for s in dn.Trainer(dn.default_net(data, 'tiny'), 'vp', data, batch_size=8, seed=3).steps(4)]
    cached = image_data(root, cache=tmp_path / 'c.npy')
    mapped = image_data(root, cache=tmp_path / 'c.npy')
    assert isinstance(np.load(tmp_path / 'c.npy', mmap_mode='r'), np.memmap) and torch.equal(mapped.images, cached.images)
    assert losses(mapped) == losses(image_data(root))
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / 'a' / 'new.png')
    with pytest.raises(ValueError, match='was made from other files'): image_data(root, cache=tmp_path / 'c.npy')

def test_the_cli_samples_an_image_model_as_a_png_grid_and_names_bad_options(tmp_path, capsys):
    "diffnb sample on an image run writes a colour PNG grid; fp16 without CUDA and an accumulation that does not divide the batch are one-line errors."
    from diffnb.cli import main
    root = _folder(tmp_path / 'imgs', per=4)
    assert main(['train', '--data', str(root), '--net', 'tiny', '--steps', '2', '--batch-size', '4', '--out', str(tmp_path / 'run'), '--quiet', '--sample-every', '1']) == 0
    assert sorted(f.name for f in (tmp_path / 'run').glob('samples-*.png')) == ['samples-00000001.png', 'samples-00000002.png']
    assert main(['sample', str(tmp_path / 'run'), '-n', '9', '--steps', '3', '--out', str(tmp_path / 'grid.png'), '--quiet']) == 0
    im = Image.open(tmp_path / 'grid.png')
    assert im.mode == 'RGB' and min(im.size) >= 28 and np.load(tmp_path / 'grid.npz')['samples'].shape == (9, 3, 8, 8)
    capsys.readouterr()
    assert main(['train', '--data', str(root), '--precision', 'fp16', '--steps', '1', '--out', str(tmp_path / 'r2'), '--quiet', '--device', 'cpu']) == 2
    assert "precision='fp16': needs CUDA" in capsys.readouterr().err
    assert main(['train', '--data', str(root), '--accum', '3', '--batch-size', '4', '--steps', '1', '--out', str(tmp_path / 'r3'), '--quiet']) == 2
    assert 'accum=3: must divide batch_size=4' in capsys.readouterr().err

def test_labels_beyond_the_nets_classes_are_named():
    "A folder of three classes and a U-Net built for two: the error names the labels and the fix, before any step."
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))   # constant images are refused first, as nothing to learn
    with pytest.raises(ValueError, match=r'labels: go up to 2, but the net conditions on 2 classes; build it with n_classes=3'):
        dn.Trainer(dn.UNet.preset('tiny', n_classes=2), 'vp', (x, torch.tensor([0, 1, 2, 0, 1, 2])))

def test_review_findings_stay_fixed(tmp_path):
    "A 16-bit grayscale PNG is scaled (not clipped) to 8 bits; a tuple size= cache reopens; a run with accum=4 samples without data."
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    (tmp_path / 'g').mkdir(); Image.fromarray(ramp).save(tmp_path / 'g' / 'a.png'); Image.fromarray(ramp).save(tmp_path / 'g' / 'b.png')
    im = image_data(tmp_path / 'g')
    assert im.images.dtype == torch.uint8 and im.images.max().item() == round(63000 / 257) and len(im.images.unique()) > 50
    root = _folder(tmp_path / 'imgs', per=4, size=10)
    assert torch.equal(image_data(root, size=(8, 8), cache=tmp_path / 'c.npy').images, image_data(root, size=(8, 8), cache=tmp_path / 'c.npy').images)
    tr = dn.Trainer(dn.default_net(root, 'tiny'), 'vp', image_data(root, size=8), batch_size=8, accum=4, folder=str(tmp_path / 'run'), save_every=1,
                    post_hoc_ema=(0.05, 0.1), snapshot_every=1)
    list(tr.steps(2))
    back = dn.Trainer.load(tmp_path / 'run')                              # no data: a stand-in that cannot be split four ways
    assert back.hparams['accum'] == 4 and dn.sample(back.denoiser(), 2, steps=2).shape == (2, 3, 8, 8)
    assert back.rebuild_ema(0.08) is not None                              # the folder's snapshots are found
    with pytest.raises(ValueError, match=r'post_hoc_ema=\(0.1, 0.05\): the checkpoint keeps averages of widths \[0.05, 0.1\]'):
        dn.Trainer.load(tmp_path / 'run', data=image_data(root, size=8), post_hoc_ema=(0.1, 0.05))
    with pytest.raises(ValueError, match='cannot be split into accum=4'): tr.train_step(tuple(v[:6] if v is not None else None for v in tr._batch()))

def test_workers_read_a_lazy_png_folder_and_a_run_resumes_exactly(tmp_path):
    "image_data(folder, lazy=True) decodes per batch; workers=2 trains on workers=0's batches; an interrupted run resumes bit for bit."
    root = _folder(tmp_path / 'imgs', per=12)
    lazy, eager = image_data(root, lazy=True), image_data(root)
    assert lazy.lazy and not eager.lazy and lazy.shape == eager.shape and torch.equal(lazy.read(), eager.images)
    assert torch.equal(lazy[5:9].read(), eager.images[5:9]) and torch.equal(lazy.decode(torch.tensor([3, 3, 0])), eager.decode(torch.tensor([3, 3, 0])))
    def trainer(data, workers, **kw):
        torch.manual_seed(0)
        return dn.Trainer(dn.default_net(data, 'tiny'), 'vp', data, batch_size=8, seed=2, workers=workers, **kw)
    serial = trainer(eager, 0); list(serial.steps(6))
    straight = trainer(lazy, 2); list(straight.steps(6))
    assert straight.losses == serial.losses
    first = trainer(lazy, 2, folder=str(tmp_path / 'run'), save_every=3)
    for s in first.steps(6):
        if s.step == 4: break                                       # stopped mid-stream, a batch or more read ahead: the checkpoint of step 3 stands
    with warnings.catch_warnings():
        warnings.simplefilter('error')                              # the same folder: no "not the data" warning
        back = dn.Trainer.load(tmp_path / 'run', data=image_data(root, lazy=True), workers=2)
    assert back.step == 3
    list(back.steps(3))
    assert back.losses == serial.losses
    still = trainer(lazy, 2); list(still.steps(2))                  # a second steps() call goes on from the generator's state
    list(still.steps(4)); assert still.losses == serial.losses

def test_a_file_that_breaks_after_the_scan_is_named_from_the_worker_process(tmp_path):
    "The header scan passed; the file is cut short later: the DataLoader worker that decodes it names it."
    root = _folder(tmp_path / 'imgs', per=4)
    data = image_data(root, lazy=True)
    tr = dn.Trainer(dn.default_net(data, 'tiny'), 'vp', data, batch_size=8, workers=2)
    raw = (root / 'b' / '2.png').read_bytes()
    (root / 'b' / '2.png').write_bytes(raw[:60])                     # a valid header, the pixels missing
    with pytest.raises(ValueError, match=r'(?s)DataLoader worker process.*Pillow cannot read b/2.png'): list(tr.steps(20))
    with pytest.raises(ValueError, match='Pillow cannot read b/2.png'): data.read()

def _rank(rank, root, port, out):
    "One process of a two-rank gloo run: a lazy folder, distribute(), workers=1; every file decoded while it trains is logged."
    import os, torch.distributed as dist
    import diffnb.data as D
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    torch.manual_seed(0)
    data = image_data(root, lazy=True)
    tr = dn.Trainer(dn.default_net(data, 'tiny'), 'vp', data, batch_size=4, workers=1, device='cpu').distribute()
    (out / f'shard-{rank}.txt').write_text('\n'.join(str(f.relative_to(root)) for f in tr.x.images.files))
    read = D._read_file
    def logged(f, *a):
        with open(out / f'read-{os.getpid()}.txt', 'a') as fh: fh.write(f'{rank} {f.relative_to(root)}\n')
        return read(f, *a)
    D._read_file = logged
    import multiprocessing; multiprocessing.set_start_method('fork', force=True)   # so the DataLoader worker forks from here and inherits it
    list(tr.steps(3))
    assert os.getpid() not in {int(f.stem[5:]) for f in out.glob('read-*.txt')}, 'the rank decoded files itself, not its worker'
    dist.barrier(); dist.destroy_process_group()

def test_each_data_parallel_rank_reads_only_its_shard(tmp_path):
    "Two gloo ranks on 127.0.0.1, each with a DataLoader worker: the files decoded by a rank's processes all lie in its own shard."
    import socket, torch.multiprocessing as mp
    root = _folder(tmp_path / 'imgs', per=6)
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    mp.start_processes(_rank, args=(root, port, tmp_path), nprocs=2, start_method='spawn')   # a fork of this threaded process can hang in OpenMP
    shards = [set((tmp_path / f'shard-{r}.txt').read_text().split('\n')) for r in (0, 1)]
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 12
    reads = [l.split(' ', 1) for f in tmp_path.glob('read-*.txt') for l in f.read_text().splitlines()]
    assert {r for r, _ in reads} == {'0', '1'}
    assert all(name in shards[int(r)] for r, name in reads), 'a rank read a file outside its shard'

def test_lazy_folders_and_workers_refuse_bad_input(tmp_path):
    "The lazy path checks what the eager one does (from the headers); workers, labels and sources are named when wrong."
    root = _folder(tmp_path / 'bad', per=2)
    (root / 'a' / 'oops.png').write_bytes(b'not a png')
    with pytest.raises(ValueError, match=r"1 file\(s\) Pillow cannot read: a/oops.png"): image_data(root, lazy=True)
    (root / 'a' / 'oops.png').unlink()
    Image.fromarray(np.zeros((10, 12, 3), dtype=np.uint8)).save(root / 'b' / 'big.png')
    with pytest.raises(ValueError, match=r'images differ in size, 8x8 .* and 10x12 \(e.g. b/big.png\); pass size='): image_data(root, lazy=True)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / 'b' / 'gray.png')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        d = image_data(root, size=8, lazy=True)
    assert any('1 grayscale image(s) among colour ones' in str(w.message) for w in caught)
    assert d.shape == (6, 3, 8, 8) and torch.equal(d.read(), image_data(root, size=8).images)   # resized and converted per file, as at once
    with pytest.raises(ValueError, match='lazy=True: .* this source .* is already in memory'): image_data(np.zeros((2, 4, 4), dtype=np.uint8), lazy=True)
    with pytest.raises(ValueError, match='lazy=True: .*cache= memory-maps'): image_data(root, size=8, lazy=True, cache=tmp_path / 'c.npy')
    with pytest.raises(ValueError, match="labels: a folder's labels come from its class sub-folders"): image_data(root, labels=[0] * 6)
    with pytest.raises(ValueError, match=r'labels: must be integers >= 0, got torch.float64 values such as \[0.5'): image_data(np.zeros((2, 4, 4), dtype=np.uint8), labels=[0.5, 1])
    with pytest.raises(ValueError, match=r'labels: shape \(3,\), expected \(2,\): one per image'): image_data(np.zeros((2, 4, 4), dtype=np.uint8), labels=[0, 1, 1])
    assert image_data(np.zeros((2, 4, 4), dtype=np.uint8), labels=[0., 1.]).labels.tolist() == [0, 1]   # whole floats are integers
    with pytest.raises(ValueError, match='workers=-1: must be an integer >= 0'): dn.Trainer(dn.MLP(64), 'vp', d, workers=-1)
    with pytest.raises(ValueError, match='workers=2: ReflowTrainer draws its own batches in this process; use workers=0'):
        dn.ReflowTrainer(dn.MLP(2), 'linear', (torch.zeros(8, 2), torch.zeros(8, 2)), workers=2)
    from diffnb.cli import main
    assert main(['train', '--data', 'ring8', '--lazy', '--steps', '1', '--out', str(tmp_path / 'r')]) == 2
    assert main(['train', '--data', str(root), '--size', '8', '--lazy', '--workers', '2', '--net', 'tiny', '--steps', '2', '--batch-size', '4',
                 '--out', str(tmp_path / 'run'), '--quiet']) == 0
    assert dn.Trainer.load(tmp_path / 'run').step == 2

def test_a_run_with_dropout_resumes_exactly_and_leaves_the_global_generator_alone(tmp_path):
    "Dropout draws from torch's global generator; each step seeds it from the run's seed, step and rank, so a resumed run repeats a straight one."
    root = _folder(tmp_path / 'imgs')
    def run():
        torch.manual_seed(0)                                                 # the same initial weights
        return dn.Trainer(dn.default_net(root, base=8, dropout=0.3), 'vp', root, batch_size=8, seed=2, total_steps=6)
    straight = run()
    torch.manual_seed(123); list(straight.steps(6)); after = torch.randn(3)
    torch.manual_seed(123); assert torch.equal(torch.randn(3), after)         # training took nothing from the caller's stream
    first = run(); list(first.steps(3)); first.save(tmp_path / 'ck')
    torch.manual_seed(999)                                                   # whatever the global state is at resume
    back = dn.Trainer.load(tmp_path / 'ck', data=root); list(back.steps(3))
    assert back.losses == straight.losses
