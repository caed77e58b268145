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
