"""torchrun DDP on CPU (gloo): 2 processes with half the batch each match 1 process with the whole batch,
step by step within 1e-4, and only rank 0 writes files; a 2-process job that dies and is resumed equals the unbroken one exactly."""
import os, subprocess, sys
from pathlib import Path

import torch

from train_entry import make_workspace, tiny_config, write_run
from txc.checkpoint import load_checkpoint
from txc.loggers import read_csv

ENTRY = Path(__file__).with_name('train_entry.py')
ENV = {**os.environ, 'PYTHONUNBUFFERED': '1', 'WANDB_MODE': 'offline', 'OMP_NUM_THREADS': '1'}


def run(cmd, timeout=300, rc=0):
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    assert (res.returncode == 0) == (rc == 0), (res.returncode, res.stdout[-2000:], res.stderr[-4000:])
    return res


def torchrun(run_dir, *extra, rc=0):
    return run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                str(ENTRY), str(run_dir / 'config.yaml'), str(run_dir), *map(str, extra)], rc=rc)


def files(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob('*') if p.is_file())


def test_torchrun_two_processes_match_one(tmp_path):
    ws = make_workspace(tmp_path / 'ws', n_train=96, n_val=24, n_test=24)
    # no dropout, so the two runs differ only in how the batch is split; accumulation exercises no_sync
    common = dict(epochs=2, grad_accum_steps=2, checkpoint_every_n_steps=4, eval_every_n_steps=3, lr=3e-3)
    arch = dict(dropout=0.0, attention_dropout=0.0)
    one, two = tmp_path / 'one', tmp_path / 'two'
    write_run(tiny_config(ws, 'finetuning', 'one', architecture=arch, head=dict(num_labels=2, dropout=0.0), batch_size=8, **common), one)
    two_cfg = tiny_config(ws, 'finetuning', 'two', architecture=arch, head=dict(num_labels=2, dropout=0.0), batch_size=4, **common)
    write_run(two_cfg, two)

    run([sys.executable, str(ENTRY), str(one / 'config.yaml'), str(one)])
    res = torchrun(two)
    assert res.stdout.count('done: step 12') == 2, res.stdout           # both ranks trained 12 steps: 96 / 8 / 2 * 2 epochs

    a, b = read_csv(one / 'metrics/train/train.csv'), read_csv(two / 'metrics/train/train.csv')
    assert [r['step'] for r in b] == list(range(1, 13))                   # one row per step: only rank 0 logs
    for ra, rb in zip(a, b):
        assert abs(ra['loss'] - rb['loss']) < 1e-4, (ra, rb)
        assert ra['lr'] == rb['lr']
    print(f"max |loss(1 proc) - loss(2 procs)| over {len(a)} steps: {max(abs(ra['loss'] - rb['loss']) for ra, rb in zip(a, b)):.2e}")
    va, vb = read_csv(one / 'metrics/eval/val.csv'), read_csv(two / 'metrics/eval/val.csv')
    assert [r['step'] for r in va] == [r['step'] for r in vb]
    for ra, rb in zip(va, vb): assert abs(ra['loss'] - rb['loss']) < 1e-4 and ra['accuracy'] == rb['accuracy'], (ra, rb)
    ta, tb = read_csv(one / 'metrics/eval/test.csv'), read_csv(two / 'metrics/eval/test.csv')
    assert len(tb) == 1 and abs(ta[0]['loss'] - tb[0]['loss']) < 1e-4

    assert files(one) == files(two)                                       # the same single set of files
    assert 'train.lock' not in files(two)
    wa, wb = load_checkpoint(one / 'checkpoints/model.ckpt')['model'], load_checkpoint(two / 'checkpoints/model.ckpt')['model']
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)
    last = load_checkpoint(two / 'checkpoints/last.ckpt')
    assert last['trainer']['world_size'] == 2 and len(last['rng']) == 2   # every rank's RNG and collator state

    # a torchrun job that dies after step 6 (last.ckpt at step 4), resumed by a new torchrun job, equals the unbroken one exactly
    three = tmp_path / 'three'
    write_run(two_cfg, three)
    torchrun(three, '--die-at', 6, rc=1)
    assert load_checkpoint(three / 'checkpoints/last.ckpt')['trainer']['step'] == 4
    two_cfg.training.resume = dict(is_resume=True, checkpoint_path='checkpoints/last.ckpt', load_only_model_state=False)
    write_run(two_cfg, three)
    torchrun(three)
    c = read_csv(three / 'metrics/train/train.csv')
    assert [r['step'] for r in c] == list(range(1, 13)) and [r['loss'] for r in c] == [r['loss'] for r in b]
    wc = load_checkpoint(three / 'checkpoints/model.ckpt')['model']
    assert all(torch.equal(wb[k], wc[k]) for k in wb)
