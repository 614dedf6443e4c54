"""A process entry point for the trainer tests, until `train.py` / `txc train` exist (issue 5).

`python tests/train_entry.py CONFIG RUN_DIR [--sleep S]` trains the run `CONFIG` describes into `RUN_DIR`
with `txc.training.train`, and turns a `TxcError` into one line `error: ...` with exit code 2, as the CLI does.
`--sleep` pauses after every optimizer step, so a test can kill the process mid-run; `--die-at N` exits
abruptly after step N on every rank (a kill that torchrun's workers all see at the same step).
The helpers `make_workspace` and `tiny_config` build a tiny vocab, datasets and configs for the tests.
"""
import argparse, os, sys, time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from txc.config import TxcConfig, TxcError, load_config, save_config

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


def main(argv=None):
    from txc.trainer import Callback
    from txc.training import train

    class Sleep(Callback):
        def __init__(self, s): self.s = s
        def after_step(self, t): time.sleep(self.s)

    class DieAt(Callback):
        order = 100                                        # after the checkpoint and the loggers of that step
        def __init__(self, step): self.step = step
        def after_step(self, t):
            if t.step == self.step: os._exit(137)          # like SIGKILL: no cleanup, the lock stays behind

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config'); p.add_argument('run_dir')
    p.add_argument('--sleep', type=float, default=0.0, help='seconds to pause after each optimizer step')
    p.add_argument('--die-at', type=int, default=None, help='exit abruptly (os._exit) right after this optimizer step')
    a = p.parse_args(argv)
    cbs = ([Sleep(a.sleep)] if a.sleep else []) + ([DieAt(a.die_at)] if a.die_at else [])
    try:
        t = train(load_config(a.config), a.run_dir, callbacks=cbs)
    except TxcError as e:
        print(f'error: {e}', file=sys.stderr); sys.exit(2)
    print(f'done: step {t.step}')


if __name__ == '__main__':
    main()
