"The command line as a user meets it: each case of the first-hour audit, in a real subprocess on a real checkpoint."
import os, subprocess, sys
import numpy as np
import pytest
import torch

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'COLUMNS': '400'}   # help on one line per option

def cli(*args, cwd):
    return subprocess.run([sys.executable, '-m', 'diffnb', *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd, env=ENV)

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp('cli')
    r = cli('train', '--data', 'ring8', '--n', 2000, '--steps', 2, '--out', 'run', '--quiet', cwd=d)
    assert r.returncode == 0, r.stderr[-2000:]
    return d

def test_out_names_the_files_it_writes(run):
    r = cli('sample', 'run', '--out', 'pic.png', '-n', 50, '--quiet', cwd=run)
    assert r.returncode == 0 and 'pic.npz and pic.png' in r.stdout, r.stdout + r.stderr
    assert np.load(run / 'pic.npz')['samples'].shape == (50, 2) and (run / 'pic.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

def test_one_sample_is_a_sample(run):
    r = cli('sample', 'run', '-n', 1, '--out', 'one.npz', '--quiet', cwd=run)
    assert r.returncode == 0, r.stderr[-1000:]
    assert np.load(run / 'one.npz')['samples'].shape == (1, 2)

@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_without_cuda_is_a_message_not_a_traceback(run):
    r = cli('sample', 'run', '--device', 'cuda', '-n', 5, cwd=run)
    assert r.returncode != 0 and "device='cuda': CUDA is not available" in r.stderr and 'Traceback' not in r.stderr

def test_dopri5_says_it_chooses_its_steps(run):
    r = cli('sample', 'run', '--method', 'dopri5', '--steps', 5, '-n', 20, '--out', 'ad.npz', '--quiet', cwd=run)
    assert r.returncode == 0 and 'adaptive steps: --steps is not used' in r.stdout, r.stdout + r.stderr

def test_guidance_without_a_label_is_refused(run):
    r = cli('sample', 'run', '--guidance', 2, '-n', 5, cwd=run)
    assert r.returncode != 0 and '--guidance 2.0: classifier-free guidance needs --label' in r.stderr and 'Traceback' not in r.stderr

def test_a_bad_out_folder_fails_before_sampling(run):
    r = cli('sample', 'run', '--out', 'missing/dir/x.npz', '-n', 5, cwd=run)
    assert r.returncode != 0 and "the folder 'missing/dir' does not exist" in r.stderr and 'dpmpp_2m:' not in r.stderr

def test_help_shows_defaults_and_only_runnable_methods(run):
    h = cli('sample', '--help', cwd=run).stdout
    assert '(default: dpmpp_2m)' in h and '(default: 20)' in h and '(default: auto)' in h
    assert 'analytic_dpm' not in h and 'npr_dpm' not in h
    r = cli('sample', 'run', '--method', 'analytic_dpm', cwd=run)
    assert r.returncode == 2 and "invalid choice: 'analytic_dpm'" in r.stderr

def test_threads_option(run):
    r = cli('sample', 'run', '--threads', 1, '-n', 5, '--out', 't.npz', '--quiet', cwd=run)
    assert r.returncode == 0, r.stderr[-1000:]

def test_a_resumed_run_keeps_its_settings_and_its_files(tmp_path, capsys):
    "Resuming refuses an option the run was not trained with; asking for no more steps than it has leaves every file as it was; the same options resume."
    from diffnb.cli import main
    np.save(tmp_path / 'd.npy', np.random.default_rng(0).normal(size=(200, 2)))
    base = ['train', '--data', str(tmp_path / 'd.npy'), '--out', str(tmp_path / 'r'), '--quiet']
    assert main(base + ['--steps', '2']) == 0
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / 'r').rglob('*') if p.is_file()}
    for opt, msg in ((['--path', 've'], "trained with path='edm'"), (['--lr', '0.1'], 'trained with lr=0.002'), (['--batch-size', '100'], 'trained with batch_size=200')):
        assert main(base + ['--steps', '4', *opt]) == 2
        assert msg in capsys.readouterr().err
    assert main(['train', '--data', 'moons', '--out', str(tmp_path / 'r'), '--steps', '1', '--quiet']) == 0   # other data, no steps to take
    assert 'nothing to train' in capsys.readouterr().out
    assert {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / 'r').rglob('*') if p.is_file()} == before
    assert main(base + ['--steps', '3', '--path', 'edm', '--lr', '0.002']) == 0 and (tmp_path / 'r' / 'ckpt-00000003').is_dir()

def test_training_data_mistakes_are_one_line(tmp_path, capsys):
    from diffnb.cli import main
    np.save(tmp_path / 'd.npy', np.zeros((10, 2))); np.save(tmp_path / 's.npy', np.array(['a', 'b']))
    (tmp_path / 'junk.pt').write_bytes(b'not a tensor'); (tmp_path / 'file').write_text('x')
    cases = [(['--data', str(tmp_path / 'd.npy'), '--points', '100'], "--points 100: the size of a toy"),
             (['--data', str(tmp_path / 's.npy')], 'holds <U1 values; a .npy of numbers'),
             (['--data', str(tmp_path / 'junk.pt')], 'not a tensor saved by torch.save'),
             (['--out', str(tmp_path / 'file')], 'a file; name a folder for the checkpoints')]
    for opts, msg in cases:
        argv = ['train', '--steps', '1', '--quiet', *opts] + ([] if '--out' in opts else ['--out', str(tmp_path / 'o')])
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert msg in err and 'Traceback' not in err, err

def test_a_csv_trains_and_a_warning_is_one_line(tmp_path, capsys):
    "A CSV with a row of column names reads as the same points as the .npy; resuming on other data warns in one line, no source line."
    from diffnb.cli import main
    from diffnb.train import training_data
    pts = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    np.savetxt(tmp_path / 'p.csv', pts, delimiter=',', header='a,b,c', comments=''); np.save(tmp_path / 'p.npy', pts)
    assert torch.equal(training_data(str(tmp_path / 'p.csv')), training_data(str(tmp_path / 'p.npy')))
    (tmp_path / 'bom.csv').write_bytes('\ufeff'.encode() + (tmp_path / 'p.csv').read_bytes()[len('a,b,c\n'):])   # Excel's CSV UTF-8, no names
    assert torch.equal(training_data(str(tmp_path / 'bom.csv')), training_data(str(tmp_path / 'p.npy')))
    (tmp_path / 'bad.csv').write_text('a,b\n1,x\n'); (tmp_path / 'names.csv').write_text('a,b\n')
    with pytest.raises(ValueError, match="--data '.*bad.csv': a CSV of numbers"): training_data(str(tmp_path / 'bad.csv'))
    with pytest.raises(ValueError, match="--data '.*names.csv': no rows of numbers"): training_data(str(tmp_path / 'names.csv'))
    out = ['--out', str(tmp_path / 'r'), '--quiet']
    assert main(['train', '--data', str(tmp_path / 'p.csv'), '--steps', '1', *out]) == 0
    assert main(['train', '--data', str(tmp_path / 'p.npy'), '--steps', '1', *out]) == 0    # the same points: no warning
    assert 'warning' not in capsys.readouterr().err
    np.save(tmp_path / 'q.npy', pts + 1)
    assert main(['train', '--data', str(tmp_path / 'q.npy'), '--steps', '2', *out]) == 0
    err = capsys.readouterr().err
    assert 'diffnb train: warning: data: not the data this checkpoint was trained on (50 points now)' in err and 'warnings.warn' not in err, err

def test_resuming_on_fewer_points_than_the_batch_says_what_to_do(tmp_path, capsys):
    from diffnb.cli import main
    out = ['--out', str(tmp_path / 'r'), '--quiet']
    assert main(['train', '--data', 'ring8', '--points', '500', '--steps', '1', *out]) == 0              # batch size: all 500 points
    assert main(['train', '--data', 'ring8', '--points', '300', '--steps', '2', *out]) == 2
    err = capsys.readouterr().err
    assert 'the batch size the run in' in err and 'train it on at least that many points, or give a new --out' in err and 'Trainer.load' not in err, err
    assert main(['train', '--data', 'ring8', '--points', '500', '--steps', '2', *out]) == 0              # the same command resumes

def test_a_resumed_image_run_keeps_its_network(tmp_path, capsys):
    "--net names the run's own U-Net preset to resume it; another preset is refused."
    from diffnb.cli import main
    torch.save(torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1, tmp_path / 'im.pt')
    base = ['train', '--data', str(tmp_path / 'im.pt'), '--out', str(tmp_path / 'r'), '--quiet']
    assert main(base + ['--net', 'tiny', '--steps', '1']) == 0
    assert main(base + ['--net', 'digits', '--steps', '2']) == 2
    assert '--net digits: ' in capsys.readouterr().err
    assert main(base + ['--net', 'tiny', '--steps', '2']) == 0 and (tmp_path / 'r' / 'ckpt-00000002').is_dir()
