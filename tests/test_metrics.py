"Feature-space metrics against closed forms: the Fréchet distance, KID and its standard error, precision and recall, floors on real data."
import math
import numpy as np
import pytest
import scipy.linalg
import torch
import diffnb as dn
from diffnb.metrics import kid, precision_recall, Estimate

def gen(s): return torch.Generator().manual_seed(s)

def test_frechet_distance_is_the_closed_form_for_gaussian_features():
    "Non-commuting covariances in 5-D; the reference uses scipy's sqrtm, not diffnb's eigen-decomposition."
    g = gen(0)
    A, B = torch.randn(5, 5, generator=g, dtype=torch.float64), torch.randn(5, 5, generator=g, dtype=torch.float64)
    Ca, Cb, ma, mb = A @ A.T / 5 + 0.1 * torch.eye(5, dtype=torch.float64), B @ B.T / 5, torch.zeros(5, dtype=torch.float64), torch.full((5,), 0.3, dtype=torch.float64)
    cross = scipy.linalg.sqrtm(Cb.numpy() @ Ca.numpy()).real
    exact = float(((ma - mb)**2).sum()) + float(np.trace(Ca.numpy() + Cb.numpy() - 2 * cross))
    n = 200_000
    fa = ma + torch.randn(n, 5, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(Ca).T
    fb = mb + torch.randn(n, 5, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(Cb).T
    assert dn.frechet_distance(fa, fb) == pytest.approx(exact, rel=0.02)
    assert dn.frechet_distance(fa, fa) == pytest.approx(0., abs=1e-9)

def test_kid_standard_error_matches_the_spread_of_independent_runs():
    "Unbiased around the closed form, and its reported standard error is the scatter of repeated independent estimates."
    g, vals, ses = gen(1), [], []
    for _ in range(40):
        e = kid(0.3 + torch.randn(2000, 1, generator=g), torch.randn(2000, 1, generator=g), subset_size=200, generator=g)
        vals.append(e.value); ses.append(e.se)
    mom = lambda m, s: (m, m * m + s * s, m**3 + 3 * m * s * s)
    ek = lambda p, q: p[2] * q[2] + 3 * p[1] * q[1] + 3 * p[0] * q[0] + 1
    x, y = mom(0.3, 1.), mom(0., 1.)
    exact = ek(x, x) + ek(y, y) - 2 * ek(x, y)
    spread, se = float(np.std(vals, ddof=1)), float(np.mean(ses))
    assert abs(np.mean(vals) - exact) < 4 * spread / math.sqrt(len(vals)), (np.mean(vals), exact)
    assert 0.6 < se / spread < 1.6, (se, spread)

def test_precision_and_recall_of_overlapping_intervals():
    "Real U[0, 1] against generated U[0.5, 1.5]: half of each lies on the other's support."
    g = gen(2)
    real, fake = torch.rand(4000, 1, generator=g), 0.5 + torch.rand(4000, 1, generator=g)
    pr = precision_recall(real, fake)
    assert pr.precision == pytest.approx(0.5, abs=0.03) and pr.recall == pytest.approx(0.5, abs=0.03)
    same = precision_recall(real, torch.rand(4000, 1, generator=g))
    assert same.precision > 0.95 and same.recall > 0.95

def test_noise_floor_on_real_data_uses_disjoint_halves():
    "On data, the floor of the Fréchet distance is the metric between two halves: near zero, and of the size 1/n predicts."
    g = gen(3)
    x = torch.randn(8000, 4, generator=g, dtype=torch.float64)
    floor = dn.noise_floor(dn.frechet_distance, x, 4000, reps=3, generator=g)
    assert 0 < floor < 0.02                          # E[FD] ~ d (d + 1) / (2 n) = 0.0025 for unit covariance
    assert float(Estimate(0.5, 0.1)) == 0.5
    with pytest.raises(ValueError, match='needs a GaussianMixture'): dn.noise_floor(dn.mode_coverage, x, 100)

@pytest.fixture(scope='module')
def standin_inception(tmp_path_factory):
    "A stand-in for torch-fidelity's FID weights file: random weights with the real checkpoint's keys and shapes, from its own model definition."
    from diffnb.metrics import _fidelity_inception
    cls = _fidelity_inception()                                      # imports without torchvision: the module needs only torch
    class Blank(cls):
        def load_state_dict(self, sd, strict=True): return None      # keep the initial weights (the constructor always loads a file)
    root = tmp_path_factory.mktemp('inception')
    torch.save({}, root / 'empty.pth')
    layout = Blank('inception-v3-compat', ['2048'], feature_extractor_weights_path=str(root / 'empty.pth')).state_dict()
    g, sd = gen(5), {}
    for k, v in layout.items():
        if k.endswith('num_batches_tracked'): continue                # the checkpoint converted from TensorFlow holds none
        if k.endswith('conv.weight'): v = torch.randn(v.shape, generator=g) * math.sqrt(2 / v[0].numel())   # He: features keep their scale through 94 layers
        elif k.endswith(('bn.weight', 'running_var')): v = torch.ones_like(v)
        elif k.endswith(('bn.bias', 'running_mean')): v = torch.zeros_like(v)
        else: v = torch.randn(v.shape, generator=g) * 0.01
        sd[k] = v
    torch.save(sd, root / dn.metrics.INCEPTION_WEIGHTS)
    return root / dn.metrics.INCEPTION_WEIGHTS, sd

def test_inception_features_run_on_a_standin_weights_file(standin_inception):
    "The real compute path: (n, 2048) features, deterministic; any size, grayscale as three channels, uint8 or float; FD 0 on one set, > 0 on a shifted one."
    w, sd = standin_inception
    convs = [k for k in sd if k.endswith('conv.weight')]
    assert len(sd) == 472 and len(convs) == 94 and sum(v.numel() for v in sd.values()) == 23_885_392     # 94 conv + batch-norm layers and the 1008-way fc
    assert sd['Conv2d_1a_3x3.conv.weight'].shape == (32, 3, 3, 3) and sd['fc.weight'].shape == (1008, 2048)
    g = gen(6)
    x = (torch.nn.functional.interpolate(torch.rand(6, 3, 4, 4, generator=g), size=32, mode='bilinear') * 2 - 1 + 0.1 * torch.randn(6, 3, 32, 32, generator=g)).clamp(-1, 1)
    f = dn.metrics.inception_features(x, w, batch_size=4)
    assert f.shape == (6, 2048) and f.dtype == torch.float64 and torch.isfinite(f).all() and (f.std(0) > 0).sum() > 1000
    gray = x[:2, :1, :20, :28]                                       # not square, not 299, one channel
    a = dn.metrics.inception_features(gray, w)
    b = dn.metrics.inception_features(((gray + 1) * 127.5).round().to(torch.uint8).expand(-1, 3, -1, -1), w)
    assert a.shape == (2, 2048) and torch.equal(a, b)                # a second call, uint8 three-channel input: bit for bit
    shifted = dn.metrics.inception_features((x + 0.5).clamp(-1, 1), w)
    same, apart = dn.frechet_distance(f, f), dn.frechet_distance(f, shifted)
    assert abs(same) < 1e-6 * apart and apart > 0, (same, apart)
    bad = w.with_name('bad.pth'); torch.save({'fc.weight': torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="bad.pth'?: does not fit Inception-v3"): dn.metrics.inception_features(x, bad)

def test_frechet_distance_with_fewer_points_than_dimensions_takes_the_gram_route_to_the_same_number():
    "n < d (a quick check on 2048 Inception features): n x n Gram matrices give what gaussian_w2 on the d x d moments gives, in a fraction of the time."
    from diffnb.metrics import gaussian_w2
    g = gen(7)
    a = torch.randn(30, 80, generator=g, dtype=torch.float64)
    b = 0.2 + torch.randn(45, 80, generator=g, dtype=torch.float64) @ torch.randn(80, 80, generator=g, dtype=torch.float64) / 9
    dd = gaussian_w2(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))**2
    assert dn.frechet_distance(a, b) == pytest.approx(dd, rel=1e-7) and dn.frechet_distance(b, a) == pytest.approx(dd, rel=1e-7)
    assert dn.frechet_distance(a, a) == pytest.approx(0., abs=1e-9)

def test_sliced_wasserstein_sorts_rows_as_torch_does():
    "The CPU route of the quantiles' sort (numpy's) gives torch.sort's values, ties included; a tensor needing gradients keeps torch's."
    from diffnb.metrics import _sort_rows
    v = torch.randn(64, 1000, generator=gen(3), dtype=torch.float64)
    v[:, ::7] = 0.25                                                        # ties
    assert torch.equal(_sort_rows(v), v.sort(-1).values)
    w = v.clone().requires_grad_(True)
    assert _sort_rows(w).requires_grad and torch.equal(_sort_rows(w).detach(), v.sort(-1).values)
