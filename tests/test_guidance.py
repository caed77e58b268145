"Noisy-input classifier training and similarity guidance (diffnb.train), checked against the exact classifier and closed forms."
import math
import pytest
import torch
import diffnb as dn
from diffnb.train import NoisyClassifier, ClassifierTrainer, train_classifier
from diffnb.denoisers import SimilarityGuidance, cosine_similarity


def two_class_1d():
    "Two 1-D Gaussians N(-1.5, 0.5^2) and N(1.5, 0.5^2), one class each: the exact p_t(y | x) is logistic in x."
    return dn.GaussianMixture(torch.tensor([[-1.5], [1.5]]), torch.tensor([0.25, 0.25]), labels=[0, 1])


def test_classifier_mlp_shapes_and_errors():
    net = dn.MLP(4, out_dim=3, hidden=16, depth=1)
    assert net(torch.randn(7, 4), 0.3).shape == (7, 3)
    assert net(torch.randn(7, 1, 2, 2), torch.rand(7)).shape == (7, 3)   # events flattened
    with pytest.raises(ValueError, match="out_dim=0"): dn.MLP(4, out_dim=0)
    with pytest.raises(ValueError, match=r'x: shape \(7, 5\)'): net(torch.randn(7, 5), 0.3)


class Linear(torch.nn.Module):
    "logits = x @ W, ignoring t: a classifier whose input gradient is known."
    def __init__(self, W): super().__init__(); self.W = W
    def forward(self, x, t): return x @ self.W


@pytest.mark.parametrize('name', ['vp', 've', 'edm'])
def test_noisy_classifier_scales_input_to_unit_variance(name):
    p, sd = dn.get_path(name), 2.
    x0 = sd * torch.randn(40_000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    W = torch.eye(3, dtype=torch.float64)
    clf = NoisyClassifier(Linear(W), p, sigma_data=sd)
    for t in (p.t_min + 0.1 * (p.t_max - p.t_min), p.t_max):
        xt, _ = p.noise(x0, t, generator=torch.Generator().manual_seed(1))
        std = clf(xt, t).std(0)
        assert torch.allclose(std, torch.ones(3, dtype=torch.float64), atol=0.03), (name, t, std)
        # the gradient flows through the scaling: d logit_0 / dx = W[:, 0] / sqrt(alpha^2 sd^2 + sigma^2)
        x = xt[:5].clone().requires_grad_(True)
        g, = torch.autograd.grad(clf(x, t)[:, 0].sum(), x)
        c = math.sqrt(p.alpha(t).item()**2 * sd**2 + p.sigma(t).item()**2)
        assert torch.allclose(g, W[:, 0].expand(5, 3) / c, rtol=1e-9)


def test_trained_classifier_matches_exact_noisy_classifier():
    gm, p = two_class_1d(), dn.get_path('vp')
    x, y = gm.sample(8000, generator=torch.Generator().manual_seed(0), return_labels=True)
    torch.manual_seed(0)
    tr = ClassifierTrainer(dn.MLP(1, out_dim=2, hidden=32, depth=1), p, (x, y), batch_size=256, lr=3e-3, device='cpu', seed=0)
    list(tr.steps(300))
    assert sum(tr.losses[-30:]) < sum(tr.losses[:30])
    clf, exact = tr.classifier(), gm.classifier(p)
    g = torch.Generator().manual_seed(3)
    for t in (0.05, 0.3, 0.6):
        xs, ys = gm.sample(4000, generator=g, return_labels=True)
        xt, _ = p.noise(xs, t, generator=g)
        with torch.no_grad(): lt, le = clf.log_prob(xt, t), exact(xt, t)
        acc, bayes = (lt.argmax(1) == ys).float().mean().item(), (le.argmax(1) == ys).float().mean().item()
        kl = (le.exp() * (le - lt)).sum(1).mean().item()
        assert abs(acc - bayes) < 0.02 and kl < 0.02, (t, acc, bayes, kl)


def test_classifier_trainer_is_deterministic_and_train_classifier_returns_a_classifier():
    gm, p = two_class_1d(), dn.get_path('vp')
    x, y = gm.sample(500, generator=torch.Generator().manual_seed(0), return_labels=True)
    def run():
        torch.manual_seed(0)
        tr = ClassifierTrainer(dn.MLP(1, out_dim=2, hidden=8, depth=1), p, (x, y), batch_size=64, device='cpu', seed=4)
        return [s.loss for s in tr.steps(5)]
    assert run() == run()
    torch.manual_seed(0)
    clf = train_classifier(dn.MLP(1, out_dim=2, hidden=8, depth=1), p, (x, y), steps=3, batch_size=64, device='cpu')
    assert isinstance(clf, NoisyClassifier) and clf(x[:4], 0.5).shape == (4, 2)


def test_classifier_trainer_bad_input():
    p = dn.get_path('vp')
    x, y = torch.randn(20, 2), torch.randint(0, 2, (20,))
    with pytest.raises(ValueError, match='needs labels'): ClassifierTrainer(dn.MLP(2, out_dim=2), p, x, batch_size=8)
    with pytest.raises(ValueError, match="t_density='beta'"): ClassifierTrainer(dn.MLP(2, out_dim=2), p, (x, y), batch_size=8, t_density='beta')
    with pytest.raises(ValueError, match='batch_size=64'): ClassifierTrainer(dn.MLP(2, out_dim=2), p, (x, y), batch_size=64)
    with pytest.raises(ValueError, match='lr=0'): ClassifierTrainer(dn.MLP(2, out_dim=2), p, (x, y), batch_size=8, lr=0)


def test_similarity_guidance_shifts_eps_by_the_similarity_gradient():
    "With sim = x . v, the guided eps is eps - scale * sigma * v exactly; with sim = log p_t(y | x) it is classifier guidance."
    gm = dn.GaussianMixture(torch.tensor([[-2., 0], [2, 0], [0, 2]]), 0.3, labels=[0, 0, 1])
    for name in ('vp', 'edm'):
        p = dn.get_path(name)
        den = gm.denoiser(p)
        x = 2 * torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        v = torch.tensor([0.3, -1.2], dtype=torch.float64)
        t = p.t_min + 0.3 * (p.t_max - p.t_min)
        guided = SimilarityGuidance(den, lambda x, t, y: x @ y, v, 2.5)
        assert torch.allclose(guided.eps(x, t), den.eps(x, t) - 2.5 * p.sigma(t).item() * v, atol=1e-10)
        assert torch.allclose(guided.score(x, t), den.score(x, t) + 2.5 * v, atol=1e-8)
        log_py = lambda x, t, y: gm.classifier(p)(x, t)[:, y]
        assert torch.allclose(SimilarityGuidance(den, log_py, 1, 3.).eps(x, t), dn.ClassifierGuidance(den, gm.classifier(p), 1, 3.).eps(x, t), atol=1e-10)
    with pytest.raises(TypeError, match='sim: expected a callable'): SimilarityGuidance(den, 'cos', v)


def test_cosine_similarity():
    sim = cosine_similarity()
    x = torch.tensor([[1., 0.], [0., 2.], [-3., 0.]])
    assert torch.allclose(sim(x, 0.5, torch.tensor([2., 0.])), torch.tensor([1., 0., -1.]))
    # encoders: E1 drops the second coordinate's sign, E2 maps a label to a direction
    sim2 = cosine_similarity(lambda x, t: x.abs(), lambda y: torch.eye(2)[y])
    assert torch.allclose(sim2(x, 0.5, torch.tensor([1, 1, 0])), torch.tensor([0., 1., 1.]))


def test_clean_classifier_guidance_is_exact_at_the_data_end_and_biased_with_noise():
    "log p0(y | x0-hat(x_t)) (Su's Topics, eq. (9.7)): autograd through the denoiser; relative bias 0 at t_min, growing with t; over-sharpens at scale 1."
    from diffnb.denoisers import CleanClassifierGuidance
    gm, p = dn.GaussianMixture(torch.tensor([[-1.], [1.]]), 0.8**2, labels=[0, 1]), dn.get_path('vp')
    den, clf = gm.denoiser(p), gm.classifier(p)
    clean = lambda x: gm.class_logits(x, p.t_min, p)
    g = torch.Generator().manual_seed(0)
    x0 = gm.sample(2000, generator=g, dtype=torch.float64)
    rel = []
    for t in (p.t_min, 0.05, 0.1, 0.2, 0.3):
        xt, _ = p.noise(x0, t, generator=g)
        s = p.sigma(t).item()
        dps = CleanClassifierGuidance(den, clean, 1)
        g_dps = (den.eps(xt, t) - dps.eps(xt, t)) / s
        xg = xt[:64].clone().requires_grad_(True)
        direct, = torch.autograd.grad(torch.log_softmax(clean(den.x0(xg, t)), -1)[:, 1].sum(), xg)
        assert torch.allclose(g_dps[:64], direct, atol=1e-10)
        g_exact = (den.eps(xt, t) - dn.ClassifierGuidance(den, clf, 1).eps(xt, t)) / s
        rel.append(((g_dps - g_exact).norm(dim=1).mean() / g_exact.norm(dim=1).mean()).item())
    assert rel[0] < 1e-3 and all(b > a for a, b in zip(rel, rel[1:])) and rel[-1] > 0.3, rel
    bayes = lambda xs: (gm.class_logits(xs.double(), p.t_min, p).argmax(1) == 1).double().mean().item()
    exact_frac = bayes(dn.sample(dn.ClassifierGuidance(den, clf, 1, 1.), 4000, 'dpmpp_2m', steps=20, generator=torch.Generator().manual_seed(1)))
    dps_frac = bayes(dn.sample(CleanClassifierGuidance(den, clean, 1, 1.), 4000, 'dpmpp_2m', steps=20, generator=torch.Generator().manual_seed(1)))
    xc, yc = gm.sample(200_000, generator=torch.Generator().manual_seed(2), return_labels=True)
    truth = bayes(xc[yc == 1])                                     # the Bayes accuracy on class 1 itself
    assert abs(exact_frac - truth) < 0.03 and dps_frac > truth + 0.03, (exact_frac, dps_frac, truth)
    assert CleanClassifierGuidance(den, clean, 1).evals == 2
    with pytest.raises(TypeError, match='classifier'): CleanClassifierGuidance(den, 'clf', 1)
