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


def test_train_py_ctrl_c_then_resume_flag_is_exact(tmp_path):
    "Ctrl-C in `train.py` saves the full state and says to pass --resume; `train.py ... --resume` then ends where an unbroken run does."
    ws = make_workspace(tmp_path / 'ws')
    cfg = tiny_config(ws, 'pretraining', 'full', epochs=40, checkpoint_every_n_steps=1000)   # 400 steps; last.ckpt only at Ctrl-C and the end
    for name in ('full', 'cut'): cfg.experiment.name = name; write_run(cfg, ws / 'experiments' / 'pretraining' / name)
    train = lambda name, *extra: [sys.executable, str(ENTRY.parent.parent / 'train.py'), '-n', name, '-m', 'pretraining', *extra]
    assert subprocess.run(train('full'), cwd=ws, env=ENV, capture_output=True, timeout=600).returncode == 0
    cut = ws / 'experiments' / 'pretraining' / 'cut'
    proc = subprocess.Popen(train('cut'), cwd=ws, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # even if CI started us with Ctrl-C ignored
    deadline = time.time() + 300
    while steps_logged(cut) < 20 and proc.poll() is None and time.time() < deadline: time.sleep(0.01)
    assert proc.poll() is None, ('the run ended before Ctrl-C', proc.communicate())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    last = err.strip().splitlines()[-1]
    assert proc.returncode == 130 and last.startswith('interrupted: stopped at step ') and last.endswith('run the same command with --resume'), err[-2000:]
    stopped = load_checkpoint(cut / 'checkpoints/last.ckpt')['trainer']['step']
    assert 20 <= stopped < 400 and not (cut / 'checkpoints/model.ckpt').exists()
    again = subprocess.run(train('cut'), cwd=ws, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and 'pass --resume' in again.stderr                 # without the flag it refuses to overwrite
    res = subprocess.run(train('cut', '--resume'), cwd=ws, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    full = ws / 'experiments' / 'pretraining' / 'full'
    assert [(r['step'], r['loss']) for r in read_csv(cut / 'metrics/train/train.csv')] == [(r['step'], r['loss']) for r in read_csv(full / 'metrics/train/train.csv')]
    wa, wb = load_checkpoint(full / 'checkpoints/model.ckpt')['model'], load_checkpoint(cut / 'checkpoints/model.ckpt')['model']
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert 'is_resume: false' in (cut / 'config.yaml').read_text()                  # the user's config is left as written
    done = subprocess.run(train('cut', '--resume'), cwd=ws, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and 'has finished' in done.stderr


def run_entry(run_dir, *extra, rc=0):
    res = subprocess.run([sys.executable, str(ENTRY), str(run_dir / 'config.yaml'), str(run_dir), *map(str, extra)],
                         capture_output=True, text=True, env=ENV, timeout=240)
    assert res.returncode == rc, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
    return res


def resume_and_compare(cfg, a, b):
    "Resume run `b` from its last.ckpt and check that its CSVs (bar the timing column) and final weights equal unbroken run `a`'s."
    cfg.training.resume = dict(is_resume=True, checkpoint_path='checkpoints/last.ckpt', load_only_model_state=False)
    write_run(cfg, b); run_entry(b)
    for f in sorted((a / 'metrics').rglob('*.csv')):
        ra, rb = read_csv(f), read_csv(b / f.relative_to(a))
        assert [{k: v for k, v in r.items() if k != 'tokens_per_s'} for r in rb] == [{k: v for k, v in r.items() if k != 'tokens_per_s'} for r in ra], f.name
    ma, mb = load_checkpoint(a / 'checkpoints/model.ckpt'), load_checkpoint(b / 'checkpoints/model.ckpt')
    assert ma['step'] == mb['step'] and all(torch.equal(ma['model'][k], mb['model'][k]) for k in ma['model'])


def test_early_stop_survives_a_kill_at_the_stopping_step(tmp_path):
    "Killed right after the step where early stopping fired (its last.ckpt written): the resumed run only finishes, as the unbroken one did."
    ws = make_workspace(tmp_path / 'ws')
    cfg = tiny_config(ws, 'finetuning', 'a', head=dict(num_labels=2), batch_size=16, epochs=6, lr=0.05, eval_every_n_steps=2,
                      eval_each_epoch=False, early_stopping_patience=1, checkpoint_every_n_steps=2)
    a, b = tmp_path / 'a', tmp_path / 'b'
    write_run(cfg, a); run_entry(a)
    stop = int(read_csv(a / 'metrics/train/train.csv')[-1]['step'])
    assert stop < 60 and stop % 2 == 0, stop                           # early stopping fired (10 steps an epoch, 6 epochs), at an evaluation
    cfg.experiment.name = 'b'; write_run(cfg, b)
    run_entry(b, '--die-at', stop, rc=137)
    assert not (b / 'checkpoints/model.ckpt').exists() and not (b / 'metrics/eval/test.csv').exists()
    resume_and_compare(cfg, a, b)


def test_kill_between_the_last_evaluations_writes_each_row_once(tmp_path):
    "max_steps ends mid-epoch on a periodic save; killed after the final val row, before the test one: no row twice after resuming."
    ws = make_workspace(tmp_path / 'ws')
    cfg = tiny_config(ws, 'finetuning', 'a', head=dict(num_labels=2), batch_size=8, epochs=3, max_steps=25, checkpoint_every_n_steps=5)
    a, b = tmp_path / 'a', tmp_path / 'b'
    write_run(cfg, a); run_entry(a)
    cfg.experiment.name = 'b'; write_run(cfg, b)
    run_entry(b, '--die-after-eval', 'val:25', rc=137)
    assert read_csv(b / 'metrics/eval/val.csv')[-1]['step'] == 25 and load_checkpoint(b / 'checkpoints/last.ckpt')['trainer']['step'] == 25
    resume_and_compare(cfg, a, b)
