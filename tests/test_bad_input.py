"Every bad input of the reliability audit gets an error of the right type whose message names the argument and the value."
import pytest
import torch
import diffnb as dn
from diffnb.paths import StackedPath
from diffnb.data import image_data
from diffnb.widgets import SamplerPreview

gm = dn.ring_mixture(); vp = dn.get_path('vp'); den = gm.denoiser(vp); x = dn.toy('ring8', 64)
mlp = lambda: dn.MLP(2, hidden=8, depth=1)

CASES = [   # (call, error type, text the message must contain: the argument and its value)
    (lambda: gm.sample(0), ValueError, 'n=0'),
    (lambda: dn.ring_mixture(k=0), ValueError, 'k=0'),
    (lambda: vp.prior(-1, (2,)), ValueError, 'n=-1'),
    (lambda: dn.sample(den, 8, device='cuda' if not torch.cuda.is_available() else 'cuda:99'), ValueError, 'device='),
    (lambda: dn.Trainer(mlp(), 'vp', x, lr='1e-3'), ValueError, "lr='1e-3'"),
    (lambda: dn.Trainer('notanet', 'vp', x), ValueError, 'net: expected an nn.Module'),
    (lambda: dn.Trainer.load('ve'), ValueError, "folder='ve'"),
    (lambda: dn.get_path('vp', t_min=0), ValueError, 't_min=0'),
    (lambda: vp.alpha('0.5'), ValueError, "t='0.5'"),
    (lambda: vp.noise(torch.full((2, 2), float('nan')), 0.5), ValueError, 'x0: contains NaN'),
    (lambda: dn.Denoiser('notanet', vp), TypeError, 'net: expected a callable'),
    (lambda: dn.GaussianMixture([[float('nan'), 0.]], [1.]), ValueError, 'means: contain NaN'),
    (lambda: dn.sample(den, 8, 'pc', corrector_steps=1.5), ValueError, 'corrector_steps=1.5'),
    (lambda: SamplerPreview(den, steps=0), ValueError, 'steps=0'),
    (lambda: dn.sample(den, 8, steps=10**9), ValueError, 'steps=1,000,000,000'),
    (lambda: dn.Trainer(mlp(), 'vp', x, grad_clip=-1), ValueError, 'grad_clip=-1'),
    (lambda: dn.Trainer(mlp(), 'vp', x, warmup=-5), ValueError, 'warmup=-5'),
    (lambda: dn.Trainer(mlp(), 'vp', x, p_uncond=1.5), ValueError, 'p_uncond=1.5'),
    (lambda: dn.Trainer(mlp(), 'vp', x, folder='f', save_every=0), ValueError, 'save_every=0'),
    (lambda: dn.Trainer(mlp(), 'vp', x, keep=-1), ValueError, 'keep=-1'),
    (lambda: dn.Trainer(mlp(), 'vp', x, batch_size=65), ValueError, 'batch_size=65'),
    (lambda: dn.Trainer(mlp(), StackedPath([vp, dn.get_path('subvp')]), x, t_density='edm'), ValueError, "t_density='edm'"),
    (lambda: dn.sample(den, 8, 'ddim', grid=[0.5, 0.6], eta=0.5), ValueError, 'eta=0.5'),
    (lambda: dn.sample(den, 8, 'dpmpp_2m', grid=[0.5, 0.6]), ValueError, 'grid: times must be strictly decreasing'),
    (lambda: dn.sample(den, 8, grid=[0.5, float('nan'), 0.1]), ValueError, 'grid: times must be strictly decreasing'),
    (lambda: vp.alpha(torch.tensor([0.5, float('nan')])), ValueError, 'outside path'),
    (lambda: den.x0(torch.tensor(1.), 0.5), ValueError, 'x: a 0-d tensor'),
    (lambda: dn.sample(den, 8, dtype='float64'), ValueError, "dtype='float64': a floating-point torch dtype"),
    (lambda: dn.sample(den, 8, dtype=torch.int32), ValueError, 'dtype=torch.int32'),
    (lambda: dn.sample(den, 8, grid='karras'), ValueError, "grid='karras': the times themselves (a tensor or list); a kind of grid is chosen by name with kind='karras'"),
    (lambda: dn.sample(den, 8, callback=3), ValueError, 'callback=3'),
    (lambda: dn.sample(den, torch.randn(0, 2)), ValueError, 'a state of shape (0, 2)'),
    (lambda: dn.toy('moons', 100, seed='a'), ValueError, "seed='a': must be an integer >= 0, or None"),
    (lambda: dn.Trainer.load(None), ValueError, 'folder=None'),
    (lambda: dn.Trainer(mlp(), 'vp', torch.ones(64, 2)), ValueError, 'data: every value is the same (standard deviation 0)'),
    (lambda: dn.Trainer(dn.UNet.preset('tiny'), 'vp', image_data(torch.zeros(16, 1, 8, 8, dtype=torch.uint8))), ValueError, 'data: every value is the same'),
    (lambda: dn.sample(den, torch.tensor(8.)), ValueError, 'a state of shape ()'),
    (lambda: dn.Trainer.load(None, fallback=True), ValueError, 'folder=None'),
    (lambda: dn.sample(den, x.numpy()), ValueError, 'n_or_xT: a numpy ndarray; pass a tensor'),
    (lambda: dn.sample(den, 8, grid=torch.rand(3, 2)), ValueError, 'grid: shape (3, 2); a 1-D list or tensor of times'),
]

@pytest.mark.parametrize('call, kind, text', CASES, ids=[c[2] for c in CASES])
def test_bad_input_is_named(call, kind, text):
    with pytest.raises(kind) as e: call()
    assert text in str(e.value), str(e.value)

def test_checkpoint_mistakes_are_named(tmp_path):
    "Saving onto a file, and resuming on fewer points than the run's batch size, each say what to do."
    (tmp_path / 'f.pt').write_text('not a folder')
    tr = dn.Trainer(mlp(), 'vp', x, folder=tmp_path / 'run')
    with pytest.raises(ValueError, match="folder='.*f.pt': a file; a checkpoint is a folder"): tr.save(tmp_path / 'f.pt')
    with pytest.raises(ValueError, match="folder='.*f.pt': a file; a checkpoint is the folder Trainer.save writes"): dn.Trainer.load(tmp_path / 'f.pt')
    tr.fit(1, progress=False); tr.save(tmp_path / 'run')
    with pytest.raises(ValueError, match='trained with batch_size=64: pass batch_size= to Trainer.load'): dn.Trainer.load(tmp_path / 'run', data=x[:32])
    assert dn.Trainer.load(tmp_path / 'run', data=x[:32], batch_size=32).batch_size == 32
