"""Crash-proof runs, with real processes: SIGKILL at random steps and in the middle of a checkpoint write, then an exact
resume; a stale lock of a killed run is taken over and a live one refuses; resume into another architecture, strict and
not; a non-finite loss stops the run with its step and leaves the checkpoints as they were; Ctrl-C (SIGINT) saves the step
in progress and the resumed run is the unbroken one.

The kills and pauses come from hooks in `tests/train_entry.py` (`--kill-at`, `--pause-write`, `--nan-at`, `--record`),
so txc itself carries no test-only code; the rest goes through the real `train.py`."""
import json, os, random, shutil, signal, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import bad_inputs as bi
from train_entry import make_workspace, sha256, tiny_config, write_run
from txc.checkpoint import load_checkpoint
from txc.config import DataError
from txc.loggers import read_csv

ROOT = Path(__file__).resolve().parents[1]
ENTRY = Path(__file__).with_name('train_entry.py')
ENV = {**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
STEPS = 20                                            # 160 rows / batch 16 / accumulation 2 = 5 steps per epoch, 4 epochs
POOL = min(3, os.cpu_count() or 2)


def entry(run_dir, *extra, timeout=240):
    "Run tests/train_entry.py on run_dir/config.yaml; returns the CompletedProcess."
    cmd = [sys.executable, str(ENTRY), str(run_dir / 'config.yaml'), str(run_dir), *map(str, extra)]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def train_py(ws, name, mode='pretraining', timeout=240):
    "The real `python train.py -n name -m mode`, run in workspace ws."
    return subprocess.run([sys.executable, str(ROOT / 'train.py'), '-n', name, '-m', mode], cwd=ws, capture_output=True,
                          text=True, env=ENV, timeout=timeout)


def ok(res):
    assert res.returncode == 0, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
    return res


def one_error_line(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'Traceback' not in res.stderr + res.stdout, res.stderr
    for n in needles: assert n in lines[0], (n, lines[0])
    return lines[0]


def config(ws, name, **kw):
    "Pretraining with dropout, MLM masking, accumulation, eval every 3 steps and a full checkpoint every 2."
    return tiny_config(ws, 'pretraining', name, architecture=dict(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32),
                       batch_size=16, grad_accum_steps=2, epochs=4, checkpoint_every_n_steps=2, eval_every_n_steps=3, **kw)


def resume_config(cfg):
    cfg.training.resume = dict(is_resume=True, checkpoint_path='checkpoints/last.ckpt', load_only_model_state=False)
    return cfg


def paused_then_killed(run_dir, target, flag):
    "Start a run whose write `target` (NAME:K) stops half-way; SIGKILL it there. Returns what the hook recorded."
    proc = subprocess.Popen([sys.executable, str(ENTRY), str(run_dir / 'config.yaml'), str(run_dir), '--pause-write', target,
                             '--flag', str(flag)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 240
    while not flag.exists() and proc.poll() is None and time.time() < deadline: time.sleep(0.05)
    time.sleep(0.1)                                   # the flag is written just before the sleep
    assert proc.poll() is None, ('the run ended before the paused write', proc.communicate())
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    return json.loads(flag.read_text())


@pytest.fixture(scope='module')
def ws(tmp_path_factory): return make_workspace(tmp_path_factory.mktemp('ws'))


@pytest.fixture(scope='module')
def runs_template(tmp_path_factory):
    "The catalogue's workspace: vocab, data and the finished runs experiments/pretraining/pre and finetuning/ft."
    return bi.make_workspace(tmp_path_factory.mktemp('runs'))


def copy_of(template, tmp_path)->Path:
    shutil.copytree(template, tmp_path / 'ws'); return tmp_path / 'ws'


def weights(run_dir): return load_checkpoint(run_dir / 'checkpoints/model.ckpt')['model']


def test_sigkill_at_random_steps_and_mid_write_then_exact_resume(ws, tmp_path):
    kill_steps = sorted(random.Random(8).sample(range(2, STEPS - 1), 3))          # seeded: the same three steps every run
    pauses = {'pause_last': 'last.ckpt:3', 'pause_best': 'best-model.ckpt:2'}     # the 3rd write of last.ckpt, the 2nd of best
    runs = {'ref': tmp_path / 'ref', **{f'kill_{s}': tmp_path / f'kill_{s}' for s in kill_steps}, **{k: tmp_path / k for k in pauses}}
    for name, d in runs.items(): write_run(config(ws, name), d)

    def crash(name):
        d = runs[name]
        if name == 'ref': return ok(entry(d))
        if name.startswith('kill_'):
            res = entry(d, '--kill-at', name.split('_')[1])
            assert res.returncode == -signal.SIGKILL, (res.returncode, res.stderr[-2000:])
            return res
        return paused_then_killed(d, pauses[name], tmp_path / f'{name}.json')
    with ThreadPoolExecutor(POOL) as pool: crashed = dict(zip(runs, pool.map(crash, runs)))

    for name in runs:
        if name == 'ref': continue
        d = runs[name]
        assert (d / 'train.lock').exists() and not (d / 'checkpoints/model.ckpt').exists()   # really killed, before the end
        if name in pauses:                            # killed inside atomic_save: a torn temp file beside an intact checkpoint
            tmp, target = Path(crashed[name]['tmp']), pauses[name].split(':')[0]
            assert tmp.parent == d / 'checkpoints' and tmp.name.startswith(f'.{target}.') and tmp.suffix == '.tmp'
            with pytest.raises(DataError, match='is unreadable'): load_checkpoint(tmp)          # the partial file is not a checkpoint
            assert sha256(d / 'checkpoints' / target) == crashed[name]['before']              # the previous one, byte for byte
        for ck in (d / 'checkpoints').glob('*.ckpt'): load_checkpoint(ck)                      # every checkpoint on disk loads
        write_run(resume_config(config(ws, name)), d)

    resumable = [n for n in runs if n != 'ref']
    with ThreadPoolExecutor(POOL) as pool: resumed = dict(zip(resumable, pool.map(lambda n: ok(entry(runs[n])), resumable)))

    ref_loss = [r['loss'] for r in read_csv(runs['ref'] / 'metrics/train/train.csv')]
    ref_w = weights(runs['ref'])
    assert len(ref_loss) == STEPS
    for name in resumable:
        d = runs[name]
        rows = read_csv(d / 'metrics/train/train.csv')
        assert [r['step'] for r in rows] == list(range(1, STEPS + 1)), name               # rows after the checkpoint replaced, none lost
        assert [r['loss'] for r in rows] == ref_loss, name                                 # every step's loss, exactly
        w = weights(d)
        assert w.keys() == ref_w.keys() and all(torch.equal(w[k], ref_w[k]) for k in w), name
        assert not (d / 'train.lock').exists() and not list((d / 'checkpoints').glob('.*.tmp')), name   # stale lock taken over, torn write removed
        if name in pauses: assert 'removed 1 partial checkpoint write' in resumed[name].stdout
    print(f'killed at steps {kill_steps} and inside writes {list(pauses.values())}; all resumed exactly')


def test_nonfinite_loss_stops_with_its_step_and_checkpoints_stay(ws, tmp_path):
    run = tmp_path / 'nan'
    cfg = config(ws, 'nan', max_steps=10); cfg.training.eval_every_n_steps = 2
    write_run(cfg, run)
    res = entry(run, '--nan-at', 7, '--record', tmp_path / 'record.json')
    one_error_line(res, 'training loss is nan at step 7', 'training.lr')
    rec = json.loads((tmp_path / 'record.json').read_text())
    assert rec['step'] == 6 and set(rec['files']) == {'last.ckpt', 'best-model.ckpt'}    # both existed before the NaN step
    now = {p.name: sha256(p) for p in (run / 'checkpoints').glob('*.ckpt')}
    assert now == rec['files']                                                            # byte-identical to after step 6
    assert load_checkpoint(run / 'checkpoints/last.ckpt')['trainer']['step'] == 6
    assert not (run / 'train.lock').exists() and not list((run / 'checkpoints').glob('.*'))


def test_absurd_lr_through_train_py(runs_template, tmp_path):
    "The real path: lr 1e30 overflows at step 2; the error names it, the step-1 checkpoint stays, no NaN model is written."
    ws = copy_of(runs_template, tmp_path)
    bi.write_config(ws, 'pretraining', 'boom', bi.set_keys(training__lr=1e30, training__warmup_ratio=0.0, training__max_steps=4,
                                                         training__checkpoint_every_n_steps=1, training__eval_every_n_steps=1))
    one_error_line(train_py(ws, 'boom'), 'training loss is', 'at step 2', 'training.lr')
    ck = ws / 'experiments/pretraining/boom/checkpoints'
    assert load_checkpoint(ck / 'last.ckpt')['trainer']['step'] == 1
    assert sorted(p.name for p in ck.iterdir()) == ['last.ckpt']      # a NaN val loss is never "best"; no final model.ckpt
    assert not (ck.parent / 'train.lock').exists()


def test_stale_lock_is_taken_over_and_live_lock_refused(runs_template, tmp_path):
    ws = copy_of(runs_template, tmp_path)
    run = ws / 'experiments/pretraining/locked'
    bi.write_config(ws, 'pretraining', 'locked')
    dead = subprocess.Popen([sys.executable, '-c', 'pass']); dead.wait()
    (run / 'train.lock').write_text(str(dead.pid))                   # left by a run that was SIGKILLed: its PID is gone
    ok(train_py(ws, 'locked'))
    assert (run / 'checkpoints/model.ckpt').exists() and not (run / 'train.lock').exists()

    live = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
    try:
        bi.write_config(ws, 'pretraining', 'busy')
        (ws / 'experiments/pretraining/busy/train.lock').write_text(str(live.pid))
        before = bi.snapshot(ws)
        one_error_line(train_py(ws, 'busy'), 'in use by another training run', f'PID {live.pid}', 'train.lock')
        assert bi.snapshot_diff(before, bi.snapshot(ws)) == []         # nothing written, the other run's lock untouched
    finally:
        live.kill(); live.wait()


def test_resume_into_another_architecture(runs_template, tmp_path):
    "A 1-layer learned-position checkpoint into a 2-layer RoPE model: strict lists both kinds of keys; not strict loads the rest."
    ws = copy_of(runs_template, tmp_path)
    arch = lambda strict: lambda c: (bi.set_keys(architecture__num_layers=2, architecture__position_encoding='rope', training__lr=1e-12,
                                             training__warmup_ratio=0.0)(c), bi.resume_keys(checkpoint_path='../pre/checkpoints/last.ckpt', strict=strict)(c))
    bi.write_config(ws, 'pretraining', 'strict', arch(True))
    one_error_line(train_py(ws, 'strict'), 'last.ckpt does not match the model', 'missing keys: encoder.blocks.1.',
                   'unexpected keys: encoder.embeddings.pos.weight', 'strict: false')
    bi.write_config(ws, 'pretraining', 'loose', arch(False))
    res = ok(train_py(ws, 'loose'))
    assert 'partially; skipped missing keys: encoder.blocks.1.' in res.stdout and 'unexpected keys: encoder.embeddings.pos.weight' in res.stdout
    old = load_checkpoint(ws / 'experiments/pretraining/pre/checkpoints/last.ckpt')['model']
    new = load_checkpoint(ws / 'experiments/pretraining/loose/checkpoints/model.ckpt')['model']
    shared = [k for k in new if k in old]
    assert any(k.startswith('encoder.blocks.0.') for k in shared) and any(k.startswith('encoder.blocks.1.') for k in new)
    assert all(torch.allclose(old[k], new[k], atol=1e-6) for k in shared)   # lr 1e-12: what matched was loaded and kept


def test_ctrl_c_saves_the_step_in_progress_and_resumes_exactly(runs_template, tmp_path):
    "SIGINT to the real train.py: the step ends, last.ckpt holds it, exit 130 with one `interrupted:` line; resuming gives the unbroken run."
    ws = copy_of(runs_template, tmp_path)
    long = bi.set_keys(training__epochs=60, training__max_steps=None)          # no periodic checkpoints: only Ctrl-C writes last.ckpt
    for name in ('full', 'cut'): bi.write_config(ws, 'pretraining', name, long)
    ok(train_py(ws, 'full'))
    run, total = ws / 'experiments/pretraining/cut', len(read_csv(ws / 'experiments/pretraining/full/metrics/train/train.csv'))
    proc = subprocess.Popen([sys.executable, str(ROOT / 'train.py'), '-n', 'cut', '-m', 'pretraining'], cwd=ws,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # even if CI started us with Ctrl-C ignored
    csv, deadline = run / 'metrics/train/train.csv', time.time() + 120
    while (not csv.exists() or len(csv.read_text().splitlines()) < 20) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, ('the run ended before Ctrl-C', proc.communicate())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    lines = [l for l in err.splitlines() if l.strip()]
    assert proc.returncode == 130 and 'Traceback' not in err, (proc.returncode, err[-3000:])
    assert lines[0].startswith('Ctrl-C: stopping after this step') and lines[-1].startswith('interrupted: stopped at step '), lines
    assert lines[-1].endswith('run the same command with --resume'), lines[-1]   # the flag; the config edit below is the other way
    step = int(lines[-1].split()[4])
    assert 20 <= step < total, (step, total)
    assert load_checkpoint(run / 'checkpoints/last.ckpt')['trainer']['step'] == step == read_csv(csv)[-1]['step']   # nothing lost
    assert not (run / 'checkpoints/model.ckpt').exists() and not (run / 'train.lock').exists()

    one_error_line(train_py(ws, 'cut'), 'checkpoints/last.ckpt')          # starting it again unchanged would overwrite the saved state
    bi.write_config(ws, 'pretraining', 'cut', lambda c: (long(c), bi.resume_keys(checkpoint_path='checkpoints/last.ckpt',
                                                                                 load_only_model_state=False)(c)))
    ok(train_py(ws, 'cut'))
    full = ws / 'experiments/pretraining/full'
    assert [(r['step'], r['loss']) for r in read_csv(csv)] == [(r['step'], r['loss']) for r in read_csv(full / 'metrics/train/train.csv')]
    assert read_csv(run / 'metrics/eval/val.csv') == read_csv(full / 'metrics/eval/val.csv')
    wa, wb = weights(full), weights(run)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
