"""Exact resume with real processes: a run killed with SIGKILL and resumed from its last full checkpoint
(`load_only_model_state: false`) logs the same per-step losses and ends with the same weights as an unbroken run."""
import os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from train_entry import make_workspace, tiny_config, write_run
from txc.checkpoint import load_checkpoint
from txc.loggers import read_csv

ENTRY = Path(__file__).with_name('train_entry.py')
ENV = {**os.environ, 'PYTHONUNBUFFERED': '1', 'WANDB_MODE': 'offline', 'OMP_NUM_THREADS': '1'}


def start(run_dir, sleep=0.0):
    return subprocess.Popen([sys.executable, str(ENTRY), str(run_dir / 'config.yaml'), str(run_dir), '--sleep', str(sleep)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (proc.returncode, out, err[-3000:])
    return out


def steps_logged(run_dir):
    p = run_dir / 'metrics/train/train.csv'
    return len(p.read_text().splitlines()) - 1 if p.exists() else 0


CASES = {  # kill_after 17 resumes mid-epoch from step 15; 13 resumes at the epoch boundary from step 10
    # MLM with dropout and accumulation: torch, collator and data-order state all matter
    'pretraining': dict(kind='pretraining', kill_after=17, batch_size=8, grad_accum_steps=2, checkpoint_every_n_steps=5),
    # finetuning with a freeze that lifts after epoch 0, layer-wise LR decay and early-stopping state
    'finetuning': dict(kind='finetuning', kill_after=13, batch_size=8, grad_accum_steps=2, checkpoint_every_n_steps=5, freeze=True,
                       freeze_epochs=1, layer_lr_decay=0.8, head_lr_mult=5, early_stopping_patience=5, eval_every_n_steps=4),
}


@pytest.mark.parametrize('case', list(CASES))
def test_sigkill_then_resume_is_exact(tmp_path, case):
    ws = make_workspace(tmp_path / 'ws')
    kw = dict(CASES[case]); kind, kill_after = kw.pop('kind'), kw.pop('kill_after')
    cfg = tiny_config(ws, kind, 'a', **kw)                 # 160 rows / 8 = 20 micro-batches = 10 steps per epoch
    cfg.training.epochs = 3                                # 30 steps
    a, b = tmp_path / 'a', tmp_path / 'b'
    write_run(cfg, a); cfg.experiment.name = 'b'; write_run(cfg, b)

    t0 = time.time(); finish(start(a)); t_a = time.time() - t0

    proc = start(b, sleep=0.25)
    deadline = time.time() + 180
    while steps_logged(b) < kill_after and proc.poll() is None and time.time() < deadline: time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    killed_at = steps_logged(b)
    ck = load_checkpoint(b / 'checkpoints/last.ckpt')['trainer']
    assert ck['step'] >= kill_after // 5 * 5 and ck['step'] < killed_at < 30, (ck, killed_at)
    assert (b / 'train.lock').read_text() == str(proc.pid)        # the dead run's lock is left behind

    cfg.training.resume = dict(is_resume=True, checkpoint_path='checkpoints/last.ckpt', load_only_model_state=False)
    write_run(cfg, b)
    finish(start(b))

    ra, rb = read_csv(a / 'metrics/train/train.csv'), read_csv(b / 'metrics/train/train.csv')
    assert [r['step'] for r in rb] == list(range(1, 31))           # rows after the checkpoint were replaced, not duplicated
    assert [r['loss'] for r in rb] == [r['loss'] for r in ra]      # every step, before and after the kill
    assert [r['lr'] for r in rb] == [r['lr'] for r in ra]
    va, vb = read_csv(a / 'metrics/eval/val.csv'), read_csv(b / 'metrics/eval/val.csv')
    assert [(r['step'], r['loss']) for r in vb] == [(r['step'], r['loss']) for r in va]
    wa, wb = load_checkpoint(a / 'checkpoints/model.ckpt')['model'], load_checkpoint(b / 'checkpoints/model.ckpt')['model']
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not (b / 'train.lock').exists()
    print(f'{case}: uninterrupted run {t_a:.1f}s; killed after step {killed_at}, resumed from step {ck["step"]}')
