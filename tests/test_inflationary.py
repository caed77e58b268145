"Inflationary flows: schedules, PR, Gaussian closed forms, training objectives, round trips and coverage, against exact answers."
import math
import pytest
import torch
import diffnb as dn
from diffnb.inflationary import *
from diffnb.flows import encode, decode

F64 = torch.float64

def _gauss4():
    R = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=F64))[0]
    return dn.GaussianMixture(torch.zeros(1, 4), (R @ torch.diag(torch.tensor([3., 1, .5, .2], dtype=F64)) @ R.T)[None])

class Zero(torch.nn.Module):
    def forward(self, x, t): return torch.zeros_like(x)

@pytest.mark.parametrize('form', FORMS)
def test_derivatives_match_autograd(form):
    p = InflationaryPath(torch.tensor([3., 1, .5]), g=torch.tensor([1., .4, .2]) if form == 'paper' else torch.tensor([1., 0., -.5]), rho=1.3, form=form)
    t = torch.tensor([1e-3, .5, 3., 6.9], dtype=F64)
    for f, df in ((p._alpha, p._dalpha), (p._sigma, p._dsigma)):
        torch.testing.assert_close(df(t), torch.func.jacfwd(f)(t).diagonal(dim1=0, dim2=2).T, rtol=1e-9, atol=1e-12)

def test_participation_ratio_values():
    assert participation_ratio(torch.ones(7)).item() == pytest.approx(7)
    assert participation_ratio(torch.tensor([1., 0, 0])).item() == pytest.approx(1)
    assert participation_ratio(torch.tensor([3., 1, .5, .2])).item() == pytest.approx(4.7**2 / 10.29)
    with pytest.raises(ValueError, match='var'): participation_ratio(torch.tensor([1., -1.]))

def test_pr_constant_under_paper_prp_and_to_kept_block_under_prr():
    gm = _gauss4()
    t = torch.linspace(1e-4, 30., 50, dtype=F64)
    pr0 = participation_ratio(torch.tensor([3., 1, .5, .2], dtype=F64)).item()
    prp = inflationary_path(gm, 'prp', t_max=30.)
    torch.testing.assert_close(prp.pr(t), torch.full_like(t, pr0), rtol=1e-10, atol=0)
    for keep in (1, 2, 3):
        prr = inflationary_path(gm, 'prr', keep, t_max=30.)
        assert prr.pr(30.).item() == pytest.approx(participation_ratio(torch.tensor([3., 1, .5, .2][:keep])).item(), rel=1e-3)
        assert prr.pr(t).diff().max().item() <= 1e-12          # PR falls monotonically
        code = inflationary_path(gm, 'prr', keep, form='code', t_max=30.)
        assert code.pr(30.).item() == pytest.approx(keep, rel=1e-3)   # isotropic noise: PR -> the kept dimension
    assert inflationary_path(gm, 'prp', form='code', t_max=30.).pr(30.).item() == pytest.approx(4, rel=1e-3)

@pytest.mark.parametrize('form', FORMS)
def test_oracle_marginal_covariance_is_path_cov(form):
    gm = _gauss4()
    p = inflationary_path(gm, 'prr', 2, form=form)
    for t in (1e-3, 1., 5.):
        S = gm.marginal(p, t).covs[0]
        torch.testing.assert_close(p.basis.T @ S @ p.basis, torch.diag(p.cov(t)), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(p.prior_std(), p.cov(p.t_max).sqrt())

def test_prp_is_ou_on_whitened_data():
    gm = dn.GaussianMixture(torch.tensor([[-1., .5, 0.], [1.5, -.3, .4]]), torch.tensor([.3, .6]))
    rho = 1.5
    p, ou = inflationary_path(gm, 'prp', rho=rho), dn.get_path('ou')
    sq = p.xi.sqrt()
    white = dn.GaussianMixture(gm.means @ p.basis / sq, (p.basis.T @ gm.covs @ p.basis) / (sq[:, None] * sq), gm.weights)
    x = gm.marginal(p, 2.).sample(300, generator=torch.Generator().manual_seed(1), dtype=F64)
    v_if = p.to_basis(gm.denoiser(p).velocity(x, 2.))
    v_ou = white.denoiser(ou).velocity(p.to_basis(x) / sq, rho)
    torch.testing.assert_close(v_if, sq * rho / 2 * v_ou, rtol=1e-8, atol=1e-10)

@pytest.mark.parametrize('kind,keep', [('prp', None), ('prr', 2)])
def test_gaussian_encode_gives_predicted_latent(kind, keep):
    "The pfODE of Gaussian data scales eigen-coordinates by sqrt(v(t_max) / v(t_min)); PRP: identity."
    gm = _gauss4()
    p = inflationary_path(gm, kind, keep)
    x = gm.sample(64, generator=torch.Generator().manual_seed(2), dtype=F64)
    zT = p.to_basis(encode(if_denoiser(Zero(), p), x, method='rk4', steps=20)) * p.prior_std()
    torch.testing.assert_close(zT, p.to_basis(x) * (p.cov(p.t_max) / p.cov(p.t_min)).sqrt(), rtol=1e-4, atol=1e-6)
    if kind == 'prp': torch.testing.assert_close(p.cov(p.t_max), torch.tensor([3., 1, .5, .2], dtype=F64))

def test_precond_with_zero_net_is_gaussian_oracle():
    gm = _gauss4()
    for form in FORMS:
        p = inflationary_path(gm, 'prr', 1, form=form)
        x = gm.marginal(p, 2.).sample(16, generator=torch.Generator().manual_seed(3), dtype=F64)
        torch.testing.assert_close(if_denoiser(Zero(), p).x0(x, 2.), gm.x0(x, 2., p), rtol=1e-8, atol=1e-9)
    with pytest.raises(TypeError, match='path'): IFPrecond(Zero(), dn.get_path('vp'))

def test_fm_conditional_field_expectation_is_pfode_drift():
    gm = dn.GaussianMixture(torch.tensor([[-1., .5], [1.5, -.3]]), torch.tensor([.3, .6]))
    p, t = inflationary_path(gm, 'prr', 1), 1.
    xt = gm.marginal(p, t).sample(4, generator=torch.Generator().manual_seed(4), dtype=F64)
    x0 = gm.sample(200_000, generator=torch.Generator().manual_seed(5), dtype=F64)
    eps = (p.to_basis(xt)[:, None] - p._alpha(torch.tensor(t, dtype=F64)) * p.to_basis(x0)[None]) / p._sigma(torch.tensor(t, dtype=F64))
    w = torch.softmax(-0.5 * (eps**2).sum(-1), 1)
    _, u = conditional_field(p, x0.expand(4, -1, -1).reshape(-1, 2), p.from_basis(eps.reshape(-1, 2), eps.reshape(-1, 2)), t)
    Eu = (w.reshape(-1, 1) * u).reshape(4, -1, 2).sum(1)
    v = gm.denoiser(p).velocity(xt, t)
    torch.testing.assert_close(Eu, v, rtol=0, atol=0.03 * v.abs().max().item())

def test_fm_loss_is_trainers_native_velocity_loss():
    "dn.Trainer(param='velocity') on an inflationary path minimises exactly the flow-matching loss."
    x = dn.toy('moons', 64)
    p = inflationary_path(x, 'prr', 1)
    den = dn.Denoiser(dn.randomize_(dn.MLP(2, hidden=16, depth=1), generator=torch.Generator().manual_seed(0)), p, 'velocity')
    g = torch.Generator().manual_seed(1)
    t, eps = dn.sample_t(p, 64, 'uniform', g), torch.randn(64, 2, generator=g)
    torch.testing.assert_close(fm_loss(den, x, t, eps), dn.dsm_loss(den, x, t, eps), rtol=1e-4, atol=1e-6)
    xt, u = conditional_field(p, x, eps, t)
    torch.testing.assert_close(fm_loss(den, x, t, eps), (den.velocity(xt, t) - u).pow(2).mean(1), rtol=1e-4, atol=1e-6)

def test_training_learns_the_gaussian_optimum():
    "On Gaussian data the preconditioned net's optimum is F = 0; training from a random net must close most of the gap to it."
    R = torch.linalg.qr(torch.randn(2, 2, generator=torch.Generator().manual_seed(3), dtype=F64))[0]
    gm = dn.GaussianMixture(torch.zeros(1, 2), (R @ torch.diag(torch.tensor([2., .5], dtype=F64)) @ R.T)[None])
    p = inflationary_path(gm, 'prr', 1)
    x = gm.sample(2000, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(2)
    xe, te = gm.sample(4000, generator=g), dn.sample_t(p, 4000, 'uniform', g)
    ee = torch.randn(xe.shape, generator=g)
    den = if_denoiser(dn.randomize_(dn.MLP(2, hidden=32, depth=1), std=1., generator=torch.Generator().manual_seed(0)), p)
    with torch.no_grad():
        l_opt, l_init = if_loss(if_denoiser(Zero(), p), xe, te, ee).mean().item(), if_loss(den, xe, te, ee).mean().item()
    tr = IFTrainer(den.net.net, p, x, batch_size=128).fit(100, progress=False)
    with torch.no_grad(): l_fit = if_loss(tr.model(), xe, te, ee).mean().item()
    assert l_init > 1.2 * l_opt and l_fit - l_opt < 0.3 * (l_init - l_opt)
    assert len(tr.losses) == 100 and tr.model().path is p

def test_fit_if_objectives_make_their_denoisers():
    x = dn.toy('moons', 200)
    p = inflationary_path(x, 'prp')
    fm, pre = fit_if(dn.MLP(2, hidden=8, depth=1), p, x, 2, 'fm', batch_size=16), fit_if(dn.MLP(2, hidden=8, depth=1), p, x, 2, batch_size=16)
    assert (fm.path, fm.param, fm.event_shape) == (p, 'velocity', (2,)) and isinstance(pre.net, IFPrecond) and pre.param == 'x0'
    with pytest.raises(ValueError, match="objective='dsm'"): IFTrainer(dn.MLP(2), p, x, 'dsm')
    with pytest.raises(TypeError, match='InflationaryPath'): IFTrainer(dn.MLP(2), dn.get_path('vp'), x)

def test_round_trip_error_shrinks_with_order():
    gm = dn.ring_mixture(4, radius=2., stds=(.2, .4))
    p = inflationary_path(gm, 'prr', 1, t_max=5., t_min=1e-2)
    x = gm.sample(40, generator=torch.Generator().manual_seed(5), dtype=F64)
    e = {m: round_trip(gm.denoiser(p), x, method=m, steps=40).mean().item() for m in ('euler', 'heun', 'rk4')}
    assert e['euler'] > 10 * e['heun'] > 100 * e['rk4']

def test_compress_and_decompress_are_the_latent_split():
    gm = dn.ring_mixture(4, radius=2., stds=(.2, .4))
    x = gm.sample(40, generator=torch.Generator().manual_seed(6), dtype=F64)
    p = inflationary_path(gm, 'prr', 1, t_max=5., t_min=1e-2)
    den, kw = gm.denoiser(p), dict(method='rk4', steps=20)
    z = p.to_basis(encode(den, x, **kw))
    codes = compress(den, x, **kw)
    assert codes.shape == (40, 1)
    torch.testing.assert_close(codes, z[:, :1])
    torch.testing.assert_close(compress(den, x, 2, **kw), z)
    rest = torch.randn(40, 1, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch.testing.assert_close(decompress(den, codes, eps=1., generator=torch.Generator().manual_seed(1), **kw),
                               decode(den, p.from_basis(torch.cat([codes, rest], 1), x), **kw))
    # the compressed direction's latent is small in absolute units: exp(-rho gap t_max / 2) of the data's std (paper form)
    assert p.prior_std()[1].item() == pytest.approx(p.xi[1].sqrt().item() * math.exp(-0.9 * 5 / 2), rel=1e-6)
    with pytest.raises(ValueError, match='keep'): compress(den, x, 3, **kw)

@pytest.mark.parametrize('d', [2, 3])
def test_winding_number_inside_outside(d):
    V, F = sphere_mesh(d, 300)
    pts = torch.randn(2000, d, generator=torch.Generator().manual_seed(7), dtype=F64)
    w, r = winding_number(pts, 1.5 * V, F), pts.norm(dim=1)
    torch.testing.assert_close(w[r < 1.4], torch.ones_like(w[r < 1.4]), rtol=0, atol=1e-6)
    torch.testing.assert_close(w[r > 1.6], torch.zeros_like(w[r > 1.6]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match='d=4'): sphere_mesh(4)

def test_calibration_with_oracle_within_mc_error():
    "Latent coverage within Monte-Carlo error of nominal; generated and round trip count the same points and boundaries mapped by a bijection."
    gm = dn.ring_mixture(4, radius=2., stds=(.2, .4))
    den = gm.denoiser(inflationary_path(gm, 'prr', 1, t_max=5., t_min=1e-2))
    n = 800
    xd = gm.sample(n, generator=torch.Generator().manual_seed(8), dtype=F64)
    tab = calibration(den, radii=(1., 2.), n=n, n_boundary=100, data=xd, generator=torch.Generator().manual_seed(9), method='rk4', steps=20)
    assert ((tab['latent'] - tab['nominal']).abs() <= 4 * tab['stderr'] + 2e-3).all()
    for col in ('generated', 'round_trip'): assert ((tab[col] - tab['latent']).abs() * n <= 3 + 1e-9).all(), (col, tab)   # at most 3 of n points
    assert ((tab['data'] - tab['nominal_kept']).abs() <= 4 * tab['data_stderr'] + 0.01).all()

def test_bad_input_names_the_argument():
    x = dn.toy('moons', 100)
    for kw, name in ((dict(schedule='pca'), 'schedule'), (dict(schedule='prr'), 'keep'), (dict(schedule='prr', keep=2), 'keep'),
                     (dict(schedule='prr', keep=1, gap=1.), 'gap'), (dict(form='other'), 'form'), (dict(rho=-1.), 'rho')):
        with pytest.raises(ValueError, match=name): inflationary_path(x, **kw)
    with pytest.raises(ValueError, match='xi'): InflationaryPath(torch.tensor([1., 0.]))
    with pytest.raises(ValueError, match='g'): InflationaryPath(torch.tensor([1., 1.]), g=torch.tensor([1., 0.]))
    with pytest.raises(ValueError, match='n=-1'): next(IFTrainer(dn.MLP(2), inflationary_path(x), x).steps(-1))

def test_dpm_solvers_run_where_a_coordinates_log_snr_stands_still():
    "On the code form's PR-reducing path (g = -1 in the dropped direction) lambda does not move there; DPM-Solver++ 2M, 3M and 2M-SDE stay finite and sample the Gaussian."
    x = dn.toy('moons', 500)
    gm = dn.GaussianMixture(x.mean(0, keepdim=True).double(), torch.cov(x.T.double())[None])
    den = gm.denoiser(inflationary_path(x, 'prr', 1, form='code'))
    for m in ('dpmpp_2m', 'dpmpp_3m', 'dpmpp_2m_sde'):
        xs = dn.sample(den, 4000, m, steps=20, generator=0)
        assert bool(torch.isfinite(xs).all()), m
        torch.testing.assert_close(xs.std(0).double(), gm.covs[0].diagonal().sqrt(), rtol=0.1, atol=0.)

def test_log_t_grid_integrates_a_trained_flow_where_equal_t_steps_fail():
    "A trained IF network's velocity is rough near t_min (its x0 error over sigma ~ 0.01 sqrt(xi)); steps uniform in log t hold the round trip, equal t steps do not."
    x = dn.toy('moons', 1000)
    torch.manual_seed(0)
    den = fit_if(dn.MLP(2, hidden=32, depth=2), inflationary_path(x, 'prp'), x, 150, batch_size=128)
    xt = dn.toy('moons', 100, seed=3)
    with torch.no_grad():
        log_t, uniform = (round_trip(den, xt, method='rk4', steps=s, kind=k).mean().item() for k, s in (('log_t', 30), ('uniform', 60)))
    assert log_t < 1e-6 and uniform > 100 * log_t, (log_t, uniform)

def test_knn_preservation_exact_cases_and_flows():
    "1 for a similarity transform, k/(n-1) in expectation for a shuffle; the exact pfODE keeps most neighbourhoods, the forward SDE's endpoint about none."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=g, dtype=F64)
    R = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))[0]
    assert knn_preservation(x, 2.5 * x @ R.T + 1.) == 1.
    shuffles = [knn_preservation(x, x[torch.randperm(400, generator=g)], k=10) for _ in range(5)]
    assert abs(sum(shuffles) / 5 - 10 / 399) < 0.01, shuffles
    gm = dn.ring_mixture(4, radius=2., stds=(.2, .4))
    p = inflationary_path(gm, 'prr', 1, t_max=5.)
    den, xr = gm.denoiser(p), gm.sample(400, generator=g, dtype=F64)
    ode = knn_preservation(xr, encode(den, xr, method='rk4', steps=40, kind='log_t'))
    sde = knn_preservation(xr, p.noise(xr, p.t_max, generator=g)[0])
    assert ode > 0.5 and sde < 0.1, (ode, sde)
    with pytest.raises(ValueError, match='k='): knn_preservation(x, x, k=0)
    with pytest.raises(ValueError, match='z:'): knn_preservation(x, x[:10])

def test_latent_hmc_recovers_a_closed_form_posterior():
    "Two Gaussians and obs = x + N(0, 0.5^2 I): the posterior is a two-component mixture in closed form; HMC through the exact IF decoder matches its mean and covariance."
    gm = dn.GaussianMixture([[-1., -0.5], [1., 0.5]], [0.2, 0.3])
    den = gm.denoiser(inflationary_path(gm, 'prp'))
    y, s = torch.tensor([0.4, 0.], dtype=F64), 0.5
    post = latent_hmc(den, lambda x: -0.5 * ((x - y)**2).sum(1) / s**2, n_chains=128, n_samples=12, warmup=8, n_leapfrog=3,
                      generator=torch.Generator().manual_seed(1), method='rk4', steps=8, kind='log_t')
    I2, S, M, w = torch.eye(2, dtype=F64), gm.covs, gm.means, gm.weights
    Sp = torch.linalg.inv(torch.linalg.inv(S) + I2 / s**2)
    Mp = (Sp @ (torch.linalg.solve(S, M[..., None]) + y[:, None] / s**2))[..., 0]
    wp = torch.softmax(torch.log(w) + torch.distributions.MultivariateNormal(M, S + s**2 * I2).log_prob(y), 0)
    mean = wp @ Mp
    cov = (wp[:, None, None] * (Sp + Mp[:, :, None] * Mp[:, None, :])).sum(0) - mean[:, None] * mean
    xs, se = post.x.flatten(0, 1), post.x.mean(0).std(0) / math.sqrt(128)
    assert ((xs.mean(0) - mean).abs() < 4 * se).all(), (xs.mean(0), mean, se)
    assert (torch.cov(xs.T) - cov).abs().max() < 0.1 * cov.diagonal().max(), (torch.cov(xs.T), cov)
    assert 0.5 < post.accept < 0.95 and post.z.shape == (12, 128, 2) and post.nfe > 0
    # with an uninformative likelihood the posterior is the prior: z stays N(0, I)
    flat = latent_hmc(den, lambda x: torch.zeros(len(x), dtype=x.dtype), n_chains=256, n_samples=6, warmup=4, n_leapfrog=3,
                      generator=torch.Generator().manual_seed(2), method='rk4', steps=6, kind='log_t')
    zf = flat.z.flatten(0, 1)
    assert (zf.mean(0).abs() < 0.12).all() and ((zf.var(0) - 1).abs() < 0.15).all(), (zf.mean(0), zf.var(0))

def test_latent_hmc_bad_input():
    gm = dn.GaussianMixture([[-1., -0.5], [1., 0.5]], [0.2, 0.3]); den = gm.denoiser('vp')
    ll = lambda x: -x.pow(2).sum(1)
    with pytest.raises(TypeError, match='log_lik'): latent_hmc(den, 3.)
    for kw, name in ((dict(n_chains=0), 'n_chains'), (dict(warmup=-1), 'warmup'), (dict(step_size=0.), 'step_size'), (dict(target_accept=1.), 'target_accept')):
        with pytest.raises(ValueError, match=name): latent_hmc(den, ll, **kw)
