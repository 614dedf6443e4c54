"""Process-level checks of `txc.training.train`: W&B offline and the progress bar, the run-dir lock between two
real processes, resuming from another run's model.ckpt, and user errors as one `error:` line with exit code 2."""
import os, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from train_entry import make_workspace, tiny_config, write_run
from txc.checkpoint import load_checkpoint
from txc.loggers import read_csv

ENTRY = Path(__file__).with_name('train_entry.py')
ENV = {**os.environ, 'PYTHONUNBUFFERED': '1', 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true', 'OMP_NUM_THREADS': '1'}


def entry(run_dir, *extra, wait=True, timeout=240):
    cmd = [sys.executable, str(ENTRY), str(run_dir / 'config.yaml'), str(run_dir), *map(str, extra)]
    if not wait: return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def user_error(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr[-3000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'Traceback' not in res.stderr, res.stderr
    for n in needles: assert n in lines[0], (n, lines[0])


@pytest.fixture(scope='module')
def ws(tmp_path_factory): return make_workspace(tmp_path_factory.mktemp('ws'))


def test_wandb_offline_and_progress_bar(ws, tmp_path):
    run = tmp_path / 'fine'
    write_run(tiny_config(ws, 'finetuning', 'fine', logging=dict(use_wandb=True, wandb_mode='offline', progress_bar=True), epochs=1), run)
    res = entry(run)
    assert res.returncode == 0, res.stderr[-3000:]
    assert list((run / 'wandb').glob('offline-run-*')), sorted(p.name for p in run.rglob('*'))[:20]
    assert (run / 'wandb_id.txt').read_text().strip()
    assert '10/10' in res.stderr and 'tok_s=' in res.stderr             # the text bar reached the last step
    assert len(read_csv(run / 'metrics/eval/test.csv')) == 1              # the test split after finetuning
    assert {b'train/loss', b'val/loss', b'test/loss'} <= wandb_keys(run)


def wandb_keys(run, keys=(b'train/loss', b'val/loss', b'test/loss'))->set:
    "Which of `keys` the run's offline W&B record file holds (a tiny run's records are small and stored whole, so a key is a plain byte string there)."
    data = b''.join(p.read_bytes() for p in (run / 'wandb').glob('offline-run-*/*.wandb'))
    assert data, sorted(p.name for p in run.rglob('*'))[:20]
    return {k for k in keys if k in data}


def test_wandb_honours_the_metric_toggles(ws, tmp_path):
    "logging.log_train_metrics / log_eval_metrics: false keep those rows out of W&B as out of the CSVs."
    run = tmp_path / 'quiet'
    write_run(tiny_config(ws, 'finetuning', 'quiet', epochs=1, logging=dict(use_wandb=True, wandb_mode='offline', log_train_metrics=False,
                                                                          log_eval_metrics=False)), run)
    res = entry(run)
    assert res.returncode == 0, res.stderr[-3000:]
    assert wandb_keys(run) == set()
    assert not (run / 'metrics').exists()


def test_second_run_on_same_dir_is_refused(ws, tmp_path):
    run = tmp_path / 'busy'
    write_run(tiny_config(ws, 'pretraining', 'busy', epochs=3), run)
    first = entry(run, '--sleep', 0.3, wait=False)
    try:
        deadline = time.time() + 60
        while not (run / 'metrics/train/train.csv').exists() and time.time() < deadline: time.sleep(0.05)
        assert first.poll() is None
        user_error(entry(run), 'in use by another training run', f'PID {first.pid}')
    finally:
        first.kill(); first.wait()


def test_resume_weights_from_another_run(ws, tmp_path):
    old, new = tmp_path / 'pretraining/old', tmp_path / 'pretraining/new'
    write_run(tiny_config(ws, 'pretraining', 'old', epochs=1), old)
    assert entry(old).returncode == 0
    cfg = tiny_config(ws, 'pretraining', 'new', epochs=1, lr=1e-12, warmup_ratio=0.0)
    cfg.training.resume = dict(is_resume=True, resume_pretrainig_name='old')   # checkpoint_path defaults to ../old/checkpoints/model.ckpt
    write_run(cfg, new)
    res = entry(new)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = load_checkpoint(old / 'checkpoints/model.ckpt')['model'], load_checkpoint(new / 'checkpoints/model.ckpt')['model']
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)      # an LR of 1e-12 keeps the loaded weights
    old_steps = read_csv(old / 'metrics/train/train.csv')[-1]['step']
    assert read_csv(new / 'metrics/train/train.csv')[0]['step'] == old_steps + 1   # weights only: fresh optimizer, the step count goes on

    cfg.training.resume.load_only_model_state = False
    write_run(cfg, new)
    user_error(entry(new), 'holds weights only', 'last.ckpt')


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_user_errors(ws, tmp_path):
    run = tmp_path / 'gpu'
    write_run(tiny_config(ws, 'pretraining', 'gpu', device='cuda'), run)
    user_error(entry(run), 'training.device')
    cfg = tiny_config(ws, 'pretraining', 'missing')
    cfg.data.train.dataset_path = str(tmp_path / 'nope.pt')
    write_run(cfg, tmp_path / 'missing')
    user_error(entry(tmp_path / 'missing'), 'nope.pt', 'not found')
    cfg = tiny_config(ws, 'pretraining', 'noresume')
    cfg.training.resume = dict(is_resume=True, checkpoint_path='checkpoints/last.ckpt')
    write_run(cfg, tmp_path / 'noresume')
    user_error(entry(tmp_path / 'noresume'), 'training.resume.checkpoint_path')


@pytest.mark.parametrize('kind', ['pretraining', 'finetuning'])
def test_padded_layout_trains_the_same_model(ws, tmp_path, monkeypatch, kind):
    "The encoder's padded layout (its default on a GPU) and its packed one (on a CPU) give the same training run, without dropout."
    from txc.encoder import Encoder
    from txc.loggers import read_csv
    from txc.training import train
    losses = {}
    for unpad in (True, False):
        monkeypatch.setattr(Encoder, 'unpad', unpad)
        cfg = tiny_config(ws, kind, f'layout{unpad}', architecture=dict(dropout=0.0, attention_dropout=0.0),
                          head=dict(dropout=0.0) if kind == 'finetuning' else None, epochs=1)
        train(cfg, tmp_path / f'u{unpad}')
        losses[unpad] = [r['loss'] for r in read_csv(tmp_path / f'u{unpad}/metrics/train/train.csv')]
    assert len(losses[True]) == len(losses[False]) > 5
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-5)
