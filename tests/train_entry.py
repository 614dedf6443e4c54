"""A process entry point for the trainer tests, until `train.py` / `txc train` exist (issue 5).

`python tests/train_entry.py CONFIG RUN_DIR [--sleep S]` trains the run `CONFIG` describes into `RUN_DIR`
with `txc.training.train`, and turns a `TxcError` into one line `error: ...` with exit code 2 and Ctrl-C into `interrupted: ...`
with exit code 130, through the CLI's own `guarded`.
`--sleep` pauses after every optimizer step, so a test can kill the process mid-run; `--die-at N` exits
abruptly after step N on every rank (a kill that torchrun's workers all see at the same step). For
tests/test_reliability.py: `--kill-at N` sends itself SIGKILL in the middle of step N + 1 (after its first micro-batch);
`--die-after-eval SPLIT:N` exits abruptly right after the evaluation of SPLIT at step N has been logged;
`--pause-write NAME:K` stops the K-th write of checkpoints/NAME half-way (half its bytes in the temp file), records
`{tmp, before}` (the temp file, the sha256 of NAME then) in `--flag`, and sleeps until killed; `--nan-at N` turns a
weight into NaN before step N, so that step's loss is NaN; `--record FILE` writes the sha256 of every checkpoint file
to FILE after each step.
The helpers `make_workspace` and `tiny_config` build a tiny vocab, datasets and configs for the tests.
"""
import argparse, hashlib, io, json, os, signal, sys, time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from txc.cli import finish, guarded
from txc.config import TxcConfig
from txc.config_io import load_config, save_config

WORDS = 'alpha beta gamma delta kernel driver python library game sound video network editor font mail chess puzzle'.split()
GAME_WORDS = ('game', 'chess', 'puzzle')


def make_workspace(d, n_train=160, n_val=40, n_test=40, max_length=24):
    "A tiny vocab (d/vocab) and train/val/test .pt datasets with binary labels (d/data); returns d."
    from txc.tokenizer import WordPieceTokenizer
    d = Path(d)
    n = n_train + n_val + n_test
    texts = [' '.join(WORDS[(i * k + i // 7) % len(WORDS)] for k in range(1, 2 + i % 9)) for i in range(n)]
    tok = WordPieceTokenizer.train(texts=texts, vocab_size=64, min_frequency=1, max_length=max_length)
    tok.save(d / 'vocab')
    enc = tok.encode(texts)
    y = torch.tensor([int(any(w in t.split() for w in GAME_WORDS)) for t in texts])
    (d / 'data').mkdir(parents=True, exist_ok=True)
    bounds = dict(train=(0, n_train), val=(n_train, n_train + n_val), test=(n_train + n_val, n))
    for split, (a, b) in bounds.items():
        torch.save(TensorDataset(enc['input_ids'][a:b], enc['attention_mask'][a:b], y[a:b]), d / 'data' / f'{split}.pt')
    (d / 'data' / 'labels.json').write_text('["other", "games"]')
    return d


def tiny_config(ws, kind='pretraining', name='run', architecture=None, logging=None, head=None, **training)->TxcConfig:
    "A config over workspace `ws` with a 2-layer, hidden-32 model; keyword args go to `training`."
    from txc.tokenizer import WordPieceTokenizer
    ws = Path(ws)
    V = WordPieceTokenizer.load(ws / 'vocab').vocab_size
    arch = dict(vocab_size=V, hidden_size=32, num_heads=2, num_layers=2, max_position_embeddings=32) | (architecture or {})
    fine = kind == 'finetuning'
    return TxcConfig(
        experiment=dict(name=name, kind=kind, seed=0), architecture=arch,
        tokenizer=dict(vocab_dir=str(ws / 'vocab'), max_length=24),
        logging=dict(progress_bar=False, log_every_n_steps=1) | (logging or {}),
        training=dict(lr=3e-3, batch_size=16, epochs=2, warmup_ratio=0.1, device='cpu', num_threads=1) | training,
        **({'classification_head': head} if head else {}),
        data={s: {'dataset_path': str(ws / 'data' / f'{s}.pt')} for s in ('train', 'val', 'test')}
             | ({'labels_path': str(ws / 'data' / 'labels.json')} if fine else {}))


def write_run(cfg:TxcConfig, run_dir)->Path:
    "Write `cfg` as `run_dir/config.yaml`; returns that path."
    save_config(cfg, Path(run_dir) / 'config.yaml')
    return Path(run_dir) / 'config.yaml'


def sha256(p): return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def pause_write(name, k, flag):
    "Patch torch.save: the k-th write of checkpoint `name` puts half its bytes in the temp file, records it in `flag`, sleeps."
    real, seen = torch.save, [0]
    def save(obj, f, *args, **kw):
        tmp = Path(os.readlink(f'/proc/self/fd/{f.fileno()}')) if hasattr(f, 'fileno') else None
        if tmp is None or not tmp.name.startswith(f'.{name}.'): return real(obj, f, *args, **kw)
        seen[0] += 1
        if seen[0] != int(k): return real(obj, f, *args, **kw)
        buf = io.BytesIO(); real(obj, buf, *args, **kw)
        f.write(buf.getvalue()[:len(buf.getvalue()) // 2]); f.flush(); os.fsync(f.fileno())
        dest = tmp.parent / name
        Path(flag).write_text(json.dumps(dict(tmp=str(tmp), before=sha256(dest) if dest.exists() else None)))
        time.sleep(600)
    torch.save = save


def main(argv=None):
    from txc.trainer import Callback
    from txc.training import train

    class KillAt(Callback):
        def __init__(self, step): self.step = step
        def before_batch(self, t):                         # the second micro-batch of step `step` + 1: gradients half accumulated
            if t.step == self.step and t.batch_in_epoch % t.grad_accum == 1: os.kill(os.getpid(), signal.SIGKILL)

    class NaNAt(Callback):
        def __init__(self, step): self.step = step
        def before_batch(self, t):
            if t.step + 1 == self.step:
                with torch.no_grad(): next(t.raw_model.parameters()).fill_(float('nan'))

    class Record(Callback):
        order = 100                                        # after evaluation and the checkpoint callback
        def __init__(self, ckpt_dir, path): self.dir, self.path = Path(ckpt_dir), Path(path)
        def after_step(self, t):
            files = {p.name: sha256(p) for p in sorted(self.dir.glob('*.ckpt'))}
            self.path.write_text(json.dumps(dict(step=t.step, files=files)))

    class Sleep(Callback):
        def __init__(self, s): self.s = s
        def after_step(self, t): time.sleep(self.s)

    class DieAt(Callback):
        order = 100                                        # after the checkpoint and the loggers of that step
        def __init__(self, step): self.step = step
        def after_step(self, t):
            if t.step == self.step: os._exit(137)          # like SIGKILL: no cleanup, the lock stays behind

    class DieAfterEval(Callback):
        order = 100                                        # after the loggers have written the evaluation's row
        def __init__(self, split, step): self.split, self.step = split, int(step)
        def after_eval(self, t):
            if t.eval_metrics['split'] == self.split and t.step == self.step: os._exit(137)

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config'); p.add_argument('run_dir')
    p.add_argument('--sleep', type=float, default=0.0, help='seconds to pause after each optimizer step')
    p.add_argument('--die-at', type=int, default=None, help='exit abruptly (os._exit) right after this optimizer step')
    p.add_argument('--die-after-eval', default=None, help='SPLIT:N: exit abruptly right after the evaluation of SPLIT at step N')
    p.add_argument('--kill-at', type=int, default=None, help='SIGKILL itself in the middle of the step after this one')
    p.add_argument('--pause-write', default=None, help='NAME:K: stop the K-th write of checkpoints/NAME half-way and sleep')
    p.add_argument('--flag', default=None, help='where --pause-write records the temp file and the previous sha256')
    p.add_argument('--nan-at', type=int, default=None, help='make the loss of this optimizer step NaN')
    p.add_argument('--record', default=None, help='JSON file: sha256 of every checkpoint file, rewritten after each step')
    a = p.parse_args(argv)
    cbs = ([Sleep(a.sleep)] if a.sleep else []) + ([DieAt(a.die_at)] if a.die_at else [])
    cbs += ([KillAt(a.kill_at)] if a.kill_at else []) + ([NaNAt(a.nan_at)] if a.nan_at else [])
    cbs += [Record(Path(a.run_dir) / 'checkpoints', a.record)] if a.record else []
    cbs += [DieAfterEval(*a.die_after_eval.split(':'))] if a.die_after_eval else []
    if a.pause_write: pause_write(*a.pause_write.split(':'), a.flag)
    def run():                                             # errors and Ctrl-C end as the CLI's do: one line, exit 2 or 130
        print(f'done: step {train(load_config(a.config), a.run_dir, callbacks=cbs).step}')
    sys.exit(finish(guarded(run)))   # as train.py: under torchrun, no interpreter teardown after the run


if __name__ == '__main__':
    main()
