"""The catalogue of bad inputs: one `Case` per user mistake, the workspace they run in, and a runner.

Shared by `tests/test_bad_inputs.py` (each case through the real CLI in a subprocess) and `nbs/12_errors.ipynb`
(the same cases through the same entry points in-process, rendered as the docs' table). Each case runs in its own
copy of a workspace that holds finished runs, and must end with one line `error: ...` on stderr naming `needles`,
exit code 2, no traceback, and no file in its workspace written, changed or left behind (checkpoints, metrics and the
lock file of every run dir included). Paths in configs and commands are relative to the workspace, the working dir.
"""
from __future__ import annotations
import contextlib, hashlib, io, json, os, py_compile, shlex, shutil, subprocess, sys, traceback, unittest.mock
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import yaml
from torch.utils.data import TensorDataset

ROOT = Path(__file__).resolve().parents[1]
WORDS = 'alpha beta gamma delta kernel driver python library game sound video network editor font mail chess puzzle'.split()
MARKER = 'PWNED'  # the file a hostile pickle tries to create in the workspace


class Evil:
    "Unpickling this creates the marker file: what a hostile .pt or .ckpt would do instead."
    def __init__(self, path): self.path = str(path)
    def __reduce__(self): return (open, (self.path, 'w'))


# ---- the workspace: a vocab, datasets and two finished runs that no bad input may touch ----

def base_config(kind:str='pretraining', name:str='run')->dict:
    "A tiny, valid config as the plain dict a user edits (1 layer, hidden 16)."
    fine = kind == 'finetuning'
    cfg = dict(
        experiment=dict(name=name, kind=kind, seed=0),
        logging=dict(progress_bar=False, log_every_n_steps=1),
        tokenizer=dict(vocab_dir='vocab', max_length=24),
        architecture=dict(vocab_size=64, hidden_size=16, num_heads=2, num_layers=1, intermediate_size=32, max_position_embeddings=32),
        training=dict(lr=1e-3, batch_size=16, epochs=1, max_steps=2, device='cpu', num_threads=1),
        data={s: {'dataset_path': f'data/{s}.pt'} for s in ('train', 'val')})
    if fine:
        cfg['classification_head'] = dict(num_labels=2)
        cfg['pretrained_experiment'] = dict(name='pre')
        cfg['data']['labels_path'] = 'data/labels.json'
    return cfg


def write_config(ws:Path, kind:str, name:str, edit:Optional[Callable]=None, text:Optional[str]=None)->Path:
    "experiments/<kind>/<name>/config.yaml from `base_config`, changed by `edit(dict)` (or raw `text`)."
    p = ws / 'experiments' / kind / name / 'config.yaml'
    p.parent.mkdir(parents=True, exist_ok=True)
    if text is None:
        cfg = base_config(kind, name)
        if edit: edit(cfg)
        text = yaml.safe_dump(cfg, sort_keys=False)
    p.write_text(text)
    return p


@contextlib.contextmanager
def workdir(path):
    "Run the block with `path` as the working dir."
    old = os.getcwd(); os.chdir(path)
    try: yield
    finally: os.chdir(old)


def save_ds(path:Path, *tensors)->Path:
    "torch.save a TensorDataset of `tensors`, even when their lengths disagree (TensorDataset's own check is bypassed)."
    ds = TensorDataset(tensors[0]); ds.tensors = tensors
    path.parent.mkdir(parents=True, exist_ok=True); torch.save(ds, path)
    return path


def make_workspace(ws)->Path:
    "vocab/, data/{train,val}.pt + labels.json, and the finished runs experiments/pretraining/pre and finetuning/ft."
    from txc.tokenizer import WordPieceTokenizer
    from txc.config import TxcConfig
    from txc.training import train
    ws = Path(ws)
    texts = [' '.join(WORDS[(i * k + i // 7) % len(WORDS)] for k in range(1, 2 + i % 9)) for i in range(96)]
    tok = WordPieceTokenizer.train(texts=texts, vocab_size=64, min_frequency=1, max_length=24)
    tok.save(ws / 'vocab')
    enc = tok.encode(texts)
    y = torch.tensor([int(any(w in t.split() for w in ('game', 'chess', 'puzzle'))) for t in texts])
    save_ds(ws / 'data' / 'train.pt', enc['input_ids'][:64], enc['attention_mask'][:64], y[:64])
    save_ds(ws / 'data' / 'val.pt', enc['input_ids'][64:], enc['attention_mask'][64:], y[64:])
    (ws / 'data' / 'labels.json').write_text('["other", "games"]')
    (ws / 'texts.txt').write_text('chess game\nsound driver\n')
    for kind, name in (('pretraining', 'pre'), ('finetuning', 'ft')):
        p = write_config(ws, kind, name)
        with workdir(ws), contextlib.redirect_stdout(io.StringIO()):
            train(TxcConfig.model_validate(yaml.safe_load(p.read_text())), p.parent.relative_to(ws))
    write_config(ws, 'pretraining', 'pre_untrained')   # generated but never trained: no checkpoints
    return ws


# ---- snapshots: nothing written, changed or left behind ----

def snapshot(ws:Path)->dict:
    "Every file (bytes hash, mtime) and directory under `ws`."
    snap = {}
    for p in sorted(ws.rglob('*')):
        rel = str(p.relative_to(ws))
        snap[rel] = 'dir' if p.is_dir() else (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return snap


def snapshot_diff(before:dict, after:dict)->list[str]:
    "What changed between two snapshots: 'new: x', 'gone: x', 'changed: x'."
    return ([f'new: {k}' for k in after if k not in before] + [f'gone: {k}' for k in before if k not in after]
            + [f'changed: {k}' for k in before if k in after and before[k] != after[k]])


# ---- the cases ----

@dataclass
class Case:
    name: str                       # pytest id
    input: str                      # the mistake, in words (the table's first column)
    argv: list                      # command: first item 'txc', 'train.py', 'gen-pre' or 'gen-ft'; paths relative to the workspace
    needles: tuple = ()             # each must appear in the error line
    setup: Optional[Callable] = None  # setup(ws) writes the bad input
    env: Optional[Callable] = None    # env(ws) -> environment variables the command runs with (a stub package on PYTHONPATH, an empty HOME)
    def command(self)->str:
        "The command line as a user types it in the workspace."
        head = {'txc': 'txc', 'train.py': 'python train.py', 'gen-pre': 'python experiments/generate_pretraining_experiment.py',
                'gen-ft': 'python experiments/generate_finetuning_experiment.py'}[self.argv[0]]
        return ' '.join([head, *(shlex.quote(str(a)) for a in self.argv[1:])])


PREP = ['txc', 'prepare', '--tokenizer', 'vocab', '--out', 'prep', '--input']
QS = ['txc', 'quickstart', '--preset', 'smoke', '--threads', '1', '--no-progress']

def _cfg(kind, name, edit=None, text=None):
    return lambda ws: write_config(ws, kind, name, edit, text)

def _yaml_text(kind, name, old, new):
    "A setup: the generated config as YAML text, its first `old` replaced by `new` (or `new` appended when `old` is '')."
    text = yaml.safe_dump(base_config(kind, name), sort_keys=False)
    return _cfg(kind, name, text=text.replace(old, new, 1) if old else text + new)

def set_keys(**dotted):
    "An edit that sets config keys given as `training__lr=...` (`__` for a dot)."
    def edit(cfg):
        for key, value in dotted.items():
            *parents, leaf = key.split('__')
            d = cfg
            for k in parents: d = d.setdefault(k, {})
            d[leaf] = value
    return edit

def _train(kind, name, edit=None, **kw):
    "A case `train.py -n name -m kind` whose generated config is changed by `edit`."
    return dict(argv=['train.py', '-n', name, '-m', kind], setup=_cfg(kind, name, edit), **kw)

def _bad(ws, name, content=None)->Path:
    "ws/bad/name, written with `content` (str or bytes) when given."
    p = ws / 'bad' / name; p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes): p.write_bytes(content)
    elif content is not None: p.write_text(content)
    return p

def _rel(ws, p:Path)->str: return str(p.relative_to(ws))

def _val(ws):
    "input_ids, attention_mask, labels of the workspace's val set (32 rows)."
    from txc.data import load_tensor_dataset
    return load_tensor_dataset(ws / 'data' / 'val.pt').tensors

def _with_train(kind, name, make, **kw):
    "A `kind` run whose train set is the .pt that `make(ws)` writes."
    def setup(ws): write_config(ws, kind, name, set_keys(data__train__dataset_path=_rel(ws, make(ws))))
    return dict(argv=['train.py', '-n', name, '-m', kind], setup=setup, **kw)

def _retrain_vocab(ws, into='vocab'):
    "ws/vocab trained again in place on other texts (`txc tokenizer --out vocab` once more), or into another dir: the same size, and the ids name other tokens."
    from txc.tokenizer import WordPieceTokenizer
    other = [' '.join(reversed(WORDS[i % 7:])) for i in range(96)]               # 64 tokens too, 13 of them with other ids
    WordPieceTokenizer.train(texts=other, vocab_size=64, min_frequency=1, max_length=24).save(ws / into)

def _other_vocab_dataset(ws)->Path:
    "A train.pt that `txc prepare` made with another vocab (bad/vocab2) than the runs' ws/vocab."
    from txc.data import prepare_dataset
    _retrain_vocab(ws, 'bad/vocab2')
    prepare_dataset(ws / 'texts.txt', ws / 'bad' / 'vocab2', ws / 'bad' / 'stale', splits=(1, 0, 0), max_length=24)
    return ws / 'bad' / 'stale' / 'train.pt'

def _stale_vocab(ws)->Path:
    "A train.pt that `txc prepare` made with ws/vocab, which is then trained again in place."
    from txc.data import prepare_dataset
    prepare_dataset(ws / 'texts.txt', ws / 'vocab', ws / 'bad' / 'stale', splits=(1, 0, 0), max_length=24)
    _retrain_vocab(ws)
    return ws / 'bad' / 'stale' / 'train.pt'

def _retrained_then(*setups):
    "A setup: the vocab trained again in place, then `setups` (configs that use it)."
    def setup(ws):
        _retrain_vocab(ws)
        for s in setups: s(ws)
    return setup

def _evil(ws, name)->Path:
    "A file whose unpickling creates ws/PWNED: a .pt, or a checkpoint-shaped dict for .ckpt."
    p = _bad(ws, name)
    torch.save(Evil(ws / MARKER) if p.suffix == '.pt' else {'model': {}, 'config': Evil(ws / MARKER)}, p)
    return p

def _evil_run(ws)->Path:
    "ws/bad/evilrun: a run dir whose checkpoints/model.ckpt is hostile."
    run = ws / 'bad' / 'evilrun'; (run / 'checkpoints').mkdir(parents=True, exist_ok=True)
    torch.save({'model': {}, 'config': Evil(ws / MARKER)}, run / 'checkpoints' / 'model.ckpt')
    return run

def _relabelled_run(ws)->Path:
    "ws/bad/ft_swapped: the finished run ft, its two class names in the other order."
    from txc.checkpoint import atomic_save, load_checkpoint
    ck = load_checkpoint(ws / 'experiments' / 'finetuning' / 'ft' / 'checkpoints' / 'model.ckpt')
    names = json.loads((ws / 'data' / 'labels.json').read_text())
    ck['config']['data']['labels_path'] = _rel(ws, _bad(ws, 'labels_swapped.json', json.dumps(names[::-1])))
    ck['label_names'] = names[::-1]                                   # what its training recorded
    run = ws / 'bad' / 'ft_swapped'
    atomic_save(ck, run / 'checkpoints' / 'model.ckpt')
    return run

def _unimportable(ws, module:str)->Path:
    "ws/bad/no<module>: a `module` package whose import fails, as where it is not installed (wandb and transformers are in the dev extra only)."
    p = ws / 'bad' / f'no{module}' / module / '__init__.py'; p.parent.mkdir(parents=True)
    p.write_text(f'raise ImportError("No module named {module!r}")\n')
    py_compile.compile(str(p), doraise=True)         # its bytecode now, so importing it writes no __pycache__ during the case
    return p.parent.parent

def _pythonpath(*dirs)->str: return os.pathsep.join([*map(str, dirs), *filter(None, [os.environ.get('PYTHONPATH')])])

def _wandb_logged_out(ws)->dict:
    "W&B with no API key, no netrc or settings (an empty HOME), no error reports and a local server URL: nothing can reach the network."
    home = ws / 'bad' / 'home'
    return dict(HOME=str(home), WANDB_CONFIG_DIR=str(home), WANDB_API_KEY='', WANDB_ERROR_REPORTING='false', WANDB_BASE_URL='http://127.0.0.1:9')

def resume_keys(**kw):
    "An edit that turns on `training.resume` with these keys."
    return set_keys(training__resume=dict(is_resume=True, **kw))


CASES = [
    # -- config.yaml: keys, types, ranges, YAML
    Case('misspelt_key', 'misspelt key `training.lrr`', **_train('pretraining', 'typo', set_keys(training__lrr=1e-3)),
         needles=('config.yaml', "'training.lrr'", "did you mean 'training.lr'")),
    Case('misspelt_section', 'misspelt section `architcture:`',
         **_train('pretraining', 'typo2', lambda c: c.__setitem__('architcture', c.pop('architecture'))),
         needles=("'architcture'", "did you mean 'architecture'")),
    Case('inf_lr', '`training.lr: .inf`', **_train('pretraining', 'inf_lr', set_keys(training__lr=float('inf'))),
         needles=('training.lr', 'finite number, not inf')),
    Case('negative_lr', '`training.lr: -0.001`', **_train('pretraining', 'neg_lr', set_keys(training__lr=-1e-3)),
         needles=('training.lr', '-0.001', 'greater than 0')),
    Case('warmup_ratio', '`training.warmup_ratio: 1.5`', **_train('pretraining', 'warmup', set_keys(training__warmup_ratio=1.5)),
         needles=('training.warmup_ratio', '1.5', 'less than or equal to 1')),
    Case('heads', '`hidden_size: 30` with `num_heads: 4`', **_train('pretraining', 'heads', set_keys(architecture__hidden_size=30, architecture__num_heads=4)),
         needles=('architecture', 'hidden_size=30', 'num_heads=4')),
    Case('wrong_type', '`training.batch_size: sixteen`', **_train('pretraining', 'bs_type', set_keys(training__batch_size='sixteen')),
         needles=('training.batch_size', "'sixteen'", 'valid integer')),
    Case('bool_lr', '`training.lr: true` (a boolean for a number)', **_train('pretraining', 'lr_bool', set_keys(training__lr=True)),
         needles=('training.lr', '= True', 'valid number, not a boolean')),
    Case('bool_epochs', '`training.epochs: true` (a boolean for an integer)', **_train('pretraining', 'ep_bool', set_keys(training__epochs=True)),
         needles=('training.epochs', '= True', 'valid integer, not a boolean')),
    Case('seed_range', '`experiment.seed: 18446744073709551616` (beyond 64 bits)', **_train('pretraining', 'seed_big', set_keys(experiment__seed=2**64)),
         needles=('experiment.seed', '18446744073709551616', 'less than 9223372036854775808')),
    Case('bad_choice', '`architecture.position_encoding: rotary`', **_train('pretraining', 'pos', set_keys(architecture__position_encoding='rotary')),
         needles=('architecture.position_encoding', "'rotary'", "'rope'")),
    Case('max_length', '`tokenizer.max_length: 64` > `architecture.max_position_embeddings: 32`',
         **_train('pretraining', 'maxlen', set_keys(tokenizer__max_length=64)), needles=('tokenizer.max_length = 64', 'max_position_embeddings = 32')),
    Case('yaml_syntax', 'YAML syntax error (a tab on line 3)', argv=['train.py', '-n', 'yaml', '-m', 'pretraining'],
         setup=_cfg('pretraining', 'yaml', text='experiment:\n  name: yaml\n\tkind: pretraining\n'), needles=('yaml/config.yaml', 'not valid YAML', 'line 3')),
    Case('dup_section', 'section `training:` written twice (YAML keeps the last)', argv=['train.py', '-n', 'dup_section', '-m', 'pretraining'],
         setup=_yaml_text('pretraining', 'dup_section', '', 'training:\n  epochs: 2\n'),
         needles=('dup_section/config.yaml', 'line 30', "key 'training' is written twice (lines 18 and 30)")),
    Case('dup_key', '`training.lr` written twice in its section', argv=['train.py', '-n', 'dup_key', '-m', 'pretraining'],
         setup=_yaml_text('pretraining', 'dup_key', '  lr: 0.001\n', '  lr: 0.001\n  lr: 0.01\n'),
         needles=('dup_key/config.yaml', 'line 20', "key 'lr' is written twice (lines 19 and 20)")),
    Case('wrong_mode', 'a finetuning config under `-m pretraining`', **_train('pretraining', 'kind', set_keys(experiment__kind='finetuning')),
         needles=('experiment.kind', "'finetuning'", '-m pretraining')),
    Case('device_cuda', '`training.device: cuda` on a machine without CUDA', **_train('pretraining', 'cuda', set_keys(training__device='cuda')),
         needles=('training.device', 'CUDA is not available', "'cpu'")),
    Case('class_weights', '`training.class_weights` with 3 values for 2 labels', **_train('finetuning', 'cw', set_keys(training__class_weights=[1, 2, 3])),
         needles=('training.class_weights', '3 values', 'num_labels')),
    Case('class_weights_neg', '`training.class_weights: [-1, 1]`', **_train('finetuning', 'cw_neg', set_keys(training__class_weights=[-1.0, 1.0])),
         needles=('training.class_weights = [-1.0, 1.0]', 'use weights >= 0')),
    Case('freeze_layers', '`training.freeze_n_layers: 3` for a 1-layer encoder', **_train('finetuning', 'freeze', set_keys(training__freeze=True, training__freeze_n_layers=3)),
         needles=('training.freeze_n_layers = 3 exceeds architecture.num_layers = 1',)),
    Case('patience_no_val', '`early_stopping_patience` without a val set',
         **_train('finetuning', 'patience', set_keys(training__early_stopping_patience=2, data__val__dataset_path=None)), needles=('early_stopping_patience', 'data.val.dataset_path')),
    Case('no_train_path', '`data.train.dataset_path: null`', **_train('pretraining', 'notrain', set_keys(data__train__dataset_path=None)),
         needles=('data.train.dataset_path', 'txc prepare')),
    Case('wandb_missing', '`logging.use_wandb: true` where wandb is not installed', argv=['train.py', '-n', 'wb_missing', '-m', 'pretraining'],
         setup=lambda ws: (_unimportable(ws, 'wandb'), write_config(ws, 'pretraining', 'wb_missing', set_keys(logging__use_wandb=True))),
         env=lambda ws: dict(PYTHONPATH=_pythonpath(ws / 'bad' / 'nowandb')),
         needles=('logging.use_wandb', 'wandb cannot be imported', 'pip install wandb', 'logging.use_wandb: false')),
    Case('wandb_online_no_key', '`logging.wandb_mode: online` without a W&B API key',
         argv=['train.py', '-n', 'wb_online', '-m', 'pretraining'],
         setup=lambda ws: ((ws / 'bad' / 'home').mkdir(parents=True),
                           write_config(ws, 'pretraining', 'wb_online', set_keys(logging__use_wandb=True, logging__wandb_mode='online'))),
         env=_wandb_logged_out, needles=("logging.wandb_mode 'online'", 'No API key configured', 'wandb login', 'logging.wandb_mode: offline')),
    Case('wrapper_path', '`tokenizer.wrapper_path` naming a missing module', **_train('pretraining', 'wrapper', set_keys(tokenizer__wrapper_path='mytok:Tokenizer')),
         needles=('tokenizer.wrapper_path', "'mytok:Tokenizer'")),
    # -- datasets
    Case('missing_dataset', '`data.train.dataset_path` that does not exist', **_train('pretraining', 'nodata', set_keys(data__train__dataset_path='data/nope.pt')),
         needles=('data.train.dataset_path', 'data/nope.pt', 'not found')),
    Case('stale_vocab', 'the vocab trained again in place after `txc prepare`', **_with_train('pretraining', 'stale', _stale_vocab),
         needles=('data.train.dataset_path', 'bad/stale/train.pt was tokenized with another vocab than vocab', 'txc prepare')),
    Case('retrained_vocab_finetune', 'finetuning from a pretraining run whose vocab was since trained again in place',
         argv=['train.py', '-n', 'ft_again', '-m', 'finetuning'], setup=_retrained_then(_cfg('finetuning', 'ft_again')),
         needles=('pretrained_experiment', 'pre/checkpoints/model.ckpt was trained with another vocab than vocab', 'tokenizer.vocab_dir')),
    Case('retrained_vocab_resume', 'resuming a run whose vocab was since trained again in place',
         argv=['train.py', '-n', 'pre_again', '-m', 'pretraining'],
         setup=_retrained_then(_cfg('pretraining', 'pre_again', set_keys(training__resume=dict(is_resume=True, checkpoint_path='../pre/checkpoints/last.ckpt', load_only_model_state=False)))),
         needles=('training.resume.checkpoint_path', 'pre/checkpoints/last.ckpt was trained with another vocab than vocab')),
    Case('mask_long', 'attention mask of dtype long', **_with_train('pretraining', 'mask_long', lambda ws: save_ds(_bad(ws, 'long.pt'), _val(ws)[0], _val(ws)[1].long())),
         needles=('long.pt', 'torch.int64', 'True = PAD')),
    Case('mask_inverted', 'inverted mask (position 0 marked PAD)', **_with_train('pretraining', 'mask_inv', lambda ws: save_ds(_bad(ws, 'inv.pt'), _val(ws)[0], ~_val(ws)[1])),
         needles=('inv.pt', 'position 0', 'inverted')),
    Case('length_mismatch', 'input_ids of 32 rows, attention_mask of 31', **_with_train('pretraining', 'rows', lambda ws: save_ds(_bad(ws, 'rows.pt'), _val(ws)[0], _val(ws)[1][:-1])),
         needles=('rows.pt', 'attention_mask shape (31, 24) differs from input_ids shape (32, 24)')),
    Case('labels_rows', '31 labels for 32 rows', **_with_train('finetuning', 'lab_rows', lambda ws: save_ds(_bad(ws, 'labrows.pt'), *_val(ws)[:2], _val(ws)[2][:-1])),
         needles=('labrows.pt', 'labels', '32 rows')),
    Case('empty_dataset', 'a dataset with 0 rows', **_with_train('pretraining', 'empty', lambda ws: save_ds(_bad(ws, 'empty.pt'), _val(ws)[0][:0], _val(ws)[1][:0])),
         needles=('empty.pt', 'empty')),
    Case('token_ids', 'token ids >= `architecture.vocab_size` (another tokenizer)', **_with_train('pretraining', 'ids', lambda ws: save_ds(_bad(ws, 'ids.pt'), _val(ws)[0] + 100, _val(ws)[1])),
         needles=('ids.pt', 'token id', 'architecture.vocab_size = 64', 'txc prepare')),
    Case('labels_range', 'label 5 with `num_labels: 2`', **_with_train('finetuning', 'labels', lambda ws: save_ds(_bad(ws, 'lab5.pt'), *_val(ws)[:2], torch.full((32,), 5))),
         needles=('lab5.pt', 'label 5', 'num_labels')),
    Case('no_labels', 'finetuning on a dataset without labels', **_with_train('finetuning', 'nolabels', lambda ws: save_ds(_bad(ws, 'nolab.pt'), *_val(ws)[:2])),
         needles=('nolab.pt', 'no labels', '--label-field')),
    Case('not_tensordataset', 'a .pt holding a dict of tensors', argv=['txc', 'check', 'bad/dict.pt'],
         setup=lambda ws: torch.save(dict(input_ids=_val(ws)[0], attention_mask=_val(ws)[1]), _bad(ws, 'dict.pt')), needles=('dict.pt', 'holds a dict', 'txc prepare')),
    Case('csv_as_dataset', 'a CSV of texts where a .pt dataset belongs', argv=['txc', 'check', 'bad/texts.csv'],
         setup=lambda ws: _bad(ws, 'texts.csv', 'text,label\nchess game,games\n'), needles=('bad/texts.csv is a text file, not a txc dataset', 'txc prepare --input bad/texts.csv')),
    Case('labels_json', 'labels.json with 3 names, `num_labels: 2`',
         argv=['train.py', '-n', 'names', '-m', 'finetuning'],
         setup=lambda ws: write_config(ws, 'finetuning', 'names', set_keys(data__labels_path=_rel(ws, _bad(ws, 'labels.json', '["a", "b", "c"]')))),
         needles=('labels.json', '3 labels', 'num_labels is 2')),
    Case('labels_json_syntax', 'labels.json that is not JSON', argv=['train.py', '-n', 'names2', '-m', 'finetuning'],
         setup=lambda ws: write_config(ws, 'finetuning', 'names2', set_keys(data__labels_path=_rel(ws, _bad(ws, 'names.json', "['a', 'b']")))),
         needles=('data.labels_path', 'names.json', 'JSON list')),
    # -- tokenizer
    Case('missing_vocab', '`tokenizer.vocab_dir` that does not exist', **_train('pretraining', 'novocab', set_keys(tokenizer__vocab_dir='nope/vocab')),
         needles=('nope/vocab', 'tokenizer.vocab_dir')),
    Case('vocab_size', "`architecture.vocab_size: 32` below the tokenizer's 64", **_train('pretraining', 'vocab', set_keys(architecture__vocab_size=32)),
         needles=('architecture.vocab_size = 32', 'set it to 64')),
    # -- runs, resume, generators, predict
    Case('wrong_flag', '`train.py -m pretrain` (a bad choice)', argv=['train.py', '-n', 'pre', '-m', 'pretrain'], needles=('-m/--mode', "'pretrain'", '--help')),
    Case('no_experiment', '`train.py -n` of an experiment never generated', argv=['train.py', '-n', 'ghost', '-m', 'finetuning'],
         needles=('experiments/finetuning/ghost', '`python experiments/generate_finetuning_experiment.py -f ghost -p PRETRAINED`')),
    Case('no_experiment_root', '`train.py -n` of an experiment never generated, under `--root`', argv=['train.py', '-n', 'ghost', '-m', 'pretraining', '--root', 'bad/exps'],
         needles=('bad/exps/pretraining/ghost', '`python experiments/generate_pretraining_experiment.py -p ghost --root bad/exps`')),
    Case('pretrained_arch', "a finetuning run's hidden_size edited away from its pretraining run's", **_train('finetuning', 'ft_arch', set_keys(architecture__hidden_size=64, architecture__num_heads=2)),
         needles=('pretrained_experiment', 'pre/checkpoints/model.ckpt', 'hidden_size: 16 (pretrained) vs 64 (this run)', "pretraining run's architecture section")),
    Case('no_pretrained_ckpt', 'finetuning from a pretraining run never trained', **_train('finetuning', 'ft_nockpt', set_keys(pretrained_experiment__name='pre_untrained')),
         needles=('pretrained_experiment', 'pre_untrained/checkpoints/model.ckpt', 'not found')),
    Case('pretrained_ckpt_name', '`pretrained_experiment.checkpoint` naming a file the run does not have', **_train('finetuning', 'ft_ckname', set_keys(pretrained_experiment__checkpoint='checkpoints/nope.ckpt')),
         needles=('pre/checkpoints/nope.ckpt', 'not found', 'pretrained_experiment.name', "pretrained_experiment.checkpoint ('checkpoints/nope.ckpt')")),
    Case('resume_missing', '`training.resume.checkpoint_path` that does not exist', **_train('pretraining', 'res_missing', resume_keys(checkpoint_path='checkpoints/last.ckpt')),
         needles=('training.resume.checkpoint_path', 'last.ckpt', 'not found')),
    Case('resume_weights_only', '`load_only_model_state: false` from a weights-only model.ckpt',
         **_train('pretraining', 'res_full', resume_keys(checkpoint_path='../pre/checkpoints/model.ckpt', load_only_model_state=False)),
         needles=('load_only_model_state', 'holds weights only', 'last.ckpt')),
    Case('resume_arch', 'resuming a 1-layer checkpoint into 2 layers (`strict: true`)',
         **_train('pretraining', 'res_arch', lambda c: (set_keys(architecture__num_layers=2)(c), resume_keys(checkpoint_path='../pre/checkpoints/last.ckpt')(c))),
         needles=('last.ckpt does not match the model', 'missing keys: encoder.blocks.1.', 'strict: false')),
    Case('resume_partial_full', 'continuing the full state of a 1-layer run into 2 layers with `strict: false` (a full resume continues a run exactly; its settings must not change)',
         **_train('pretraining', 'res_part', lambda c: (set_keys(architecture__num_layers=2)(c), resume_keys(checkpoint_path='../pre/checkpoints/last.ckpt', strict=False, load_only_model_state=False)(c))),
         needles=('last.ckpt holds a run with other settings than this config (architecture.num_layers: 1 -> 2)', 'load_only_model_state: true')),
    Case('resume_edited', 'a full resume after `training.lr` and `batch_size` were edited in config.yaml',
         **_train('pretraining', 'res_edit', lambda c: (set_keys(training__lr=1e-4, training__batch_size=4)(c), resume_keys(checkpoint_path='../pre/checkpoints/last.ckpt', load_only_model_state=False)(c))),
         needles=('other settings than this config (training.batch_size: ', 'training.lr: ', 'put those values back', 'load_only_model_state: true')),
    Case('rerun_finished', '`train.py` again on a finished run (a reused or mistyped name)', argv=['train.py', '-n', 'pre', '-m', 'pretraining'],
         needles=('experiments/pretraining/pre has finished', 'training it again would overwrite', '-p NEW -rp pre')),
    Case('rerun_finished_own', 'a finished run set to resume from its own `best-model.ckpt`', argv=['train.py', '-n', 'pre', '-m', 'pretraining'],
         setup=_cfg('pretraining', 'pre', set_keys(training__resume=dict(is_resume=True, checkpoint_path='checkpoints/best-model.ckpt', load_only_model_state=False))),
         needles=('experiments/pretraining/pre has finished', 'from its own checkpoints/best-model.ckpt would overwrite', '-p NEW -rp pre')),
    Case('restart_own_weights', 'a killed run restarted from its own `last.ckpt` with `load_only_model_state: true`', argv=['train.py', '-n', 'pre', '-m', 'pretraining'],
         setup=lambda ws: (ws / 'experiments/pretraining/pre/checkpoints/model.ckpt').unlink() or _cfg('pretraining', 'pre', set_keys(training__resume=dict(
             is_resume=True, checkpoint_path='checkpoints/last.ckpt', load_only_model_state=True)))(ws),
         needles=('load_only_model_state: true starts a new optimizer', 'set load_only_model_state: false')),
    Case('resume_finished', '`train.py --resume` of a run that has finished', argv=['train.py', '-n', 'pre', '-m', 'pretraining', '--resume'],
         needles=('--resume', 'experiments/pretraining/pre has finished', '-rp')),
    Case('resume_unstarted', '`train.py --resume` of a run that never reached a checkpoint',
         argv=['train.py', '-n', 'fresh', '-m', 'pretraining', '--resume'], setup=_cfg('pretraining', 'fresh'),
         needles=('--resume', 'experiments/pretraining/fresh holds no checkpoints/last.ckpt', 'leave out --resume')),
    Case('rp_missing', '`-rp` of a run that does not exist', argv=['gen-pre', '-p', 'newrun', '-rp', 'ghost'], needles=('-rp ghost', 'experiments/pretraining/ghost')),
    Case('name_exists', 'generating an experiment name that exists', argv=['gen-pre', '-p', 'pre'], needles=('experiments/pretraining/pre', 'already exists', '--force')),
    Case('name_slash', 'an experiment name with a slash', argv=['gen-ft', '-f', '../ft2', '-p', 'pre'], needles=("'../ft2'", 'no slashes')),
    Case('ft_one_label', '`generate_finetuning_experiment.py` where labels.json lists one class', argv=['gen-ft', '-f', 'ft2', '-p', 'pre'],
         setup=lambda ws: (ws / 'data' / 'finetuning').mkdir() or (ws / 'data' / 'finetuning' / 'labels.json').write_text('["only"]'),   # where the template looks
         needles=('data/finetuning/labels.json', 'classification_head.num_labels = 1', 'at least 2 classes', 'data.labels_path')),
    Case('ft_missing_pre', '`generate_finetuning_experiment.py -p` of a missing run', argv=['gen-ft', '-f', 'ft2', '-p', 'ghost'], needles=('-p ghost', 'experiments/pretraining/ghost')),
    Case('predict_pretraining', '`txc predict` on a pretraining run', argv=['txc', 'predict', '-n', 'experiments/pretraining/pre', '--text', 'hi'],
         needles=('pretraining/pre is a pretraining run', 'finetuning')),
    Case('predict_ghost', '`txc predict -n` of a run that does not exist', argv=['txc', 'predict', '-n', 'ghost', '--text', 'hi'], needles=('experiments/finetuning/ghost', 'not found')),
    Case('predict_input', '`txc predict --input` of a missing file', argv=['txc', 'predict', '-n', 'ft', '--input', 'nope.txt'], needles=('--input', 'nope.txt', 'not found')),
    Case('predict_input_blank', '`txc predict --input` of a file with only blank lines', argv=['txc', 'predict', '-n', 'ft', '--input', 'bad/blank.txt'],
         setup=lambda ws: _bad(ws, 'blank.txt', '\n   \n'), needles=('--input bad/blank.txt', 'no text to label')),
    Case('predict_non_utf8', '`txc predict --input` of a Latin-1 file', argv=['txc', 'predict', '-n', 'ft', '--input', 'bad/latin1.txt'],
         setup=lambda ws: _bad(ws, 'latin1.txt', 'caf\xe9 menu editor\n'.encode('latin-1')), needles=('latin1.txt', 'UTF-8', 'iconv')),
    Case('predict_empty_text', '`txc predict --text` of an empty string', argv=['txc', 'predict', '-n', 'ft', '--text', ''],
         needles=("--text ''", 'nothing to label')),
    Case('predict_score_missing', '`txc predict --score` of a dataset that does not exist', argv=['txc', 'predict', '-n', 'ft', '--score', 'nope.pt'],
         needles=('nope.pt', 'not found')),
    Case('predict_score_stale', '`txc predict --score` of a dataset made with another vocab than the run\'s', argv=['txc', 'predict', '-n', 'ft', '--score', 'bad/stale/train.pt'],
         setup=_other_vocab_dataset, needles=('bad/stale/train.pt was tokenized with another vocab than vocab', 'txc prepare')),
    Case('predict_score_classes', '`txc predict --score` of a dataset whose labels.json has a class the run does not predict', argv=['txc', 'predict', '-n', 'ft', '--score', 'bad/cls/val.pt'],
         setup=lambda ws: (_bad(ws, 'cls/labels.json', '["other", "boats"]'), shutil.copy(ws / 'data' / 'val.pt', ws / 'bad' / 'cls' / 'val.pt')),
         needles=("classes the run(s) do not predict ('boats'", "'other', 'games'")),
    Case('import_bert_missing', '`txc import-bert` of a directory that holds no BERT checkpoint', argv=['txc', 'import-bert', 'vocab', '-p', 'bert'],
         needles=('vocab: no config.json', 'BERT checkpoint directory')),
    Case('import_bert_roberta', '`txc import-bert` of a RoBERTa checkpoint (byte-level BPE vocab)', argv=['txc', 'import-bert', 'bad/roberta', '-p', 'rob'],
         setup=lambda ws: _bad(ws, 'roberta/config.json', json.dumps(dict(model_type='roberta', vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                                                          num_attention_heads=2, intermediate_size=32, max_position_embeddings=34))),
         needles=("bad/roberta/config.json: model_type='roberta' is not supported", 'byte-level BPE', "'bert', 'distilbert' or 'electra'")),
    Case('import_bert_again', '`txc import-bert` into a name that already holds an imported checkpoint', argv=['txc', 'import-bert', 'vocab', '-p', 'pre'],
         needles=('experiments/pretraining/pre already holds checkpoints', 'import the checkpoint under another name')),   # not 'pass --force', which could not help
    Case('bench_device', '`txc bench --device gpu`', argv=['txc', 'bench', '--device', 'gpu'], needles=('--device', "'gpu'", 'cpu, cuda or cuda:N')),
    Case('bench_no_transformers', '`txc bench` where transformers is not installed', argv=['txc', 'bench', '--preset', 'tiny', '--task', 'mlm', '--repeats', '1', '--steps', '1'],
         setup=lambda ws: _unimportable(ws, 'transformers'), env=lambda ws: dict(PYTHONPATH=_pythonpath(ws / 'bad' / 'notransformers')),
         needles=('transformers', 'cannot be imported', "pip install 'transformers>=4.44'")),
    Case('predict_retrained_vocab', '`txc predict` of a run whose vocab was since trained again in place', argv=['txc', 'predict', '-n', 'ft', '--text', 'chess game'],
         setup=_retrain_vocab, needles=('ft/checkpoints/model.ckpt was trained with another vocab than vocab', 'tokenizer.vocab_dir')),
    Case('predict_ensemble', '`txc predict -n ft -n OTHER` of runs with different class names', argv=['txc', 'predict', '-n', 'ft', '-n', 'bad/ft_swapped', '--text', 'hi'],
         setup=_relabelled_run, needles=('disagree on the classes', 'same labels.json')),
    # -- text files for `txc prepare` / `txc tokenizer`
    Case('csv_no_text', 'a CSV without the text column', argv=['txc', 'prepare', '--input', 'bad/notext.csv', '--tokenizer', 'vocab', '--out', 'prep'],
         setup=lambda ws: _bad(ws, 'notext.csv', 'body,label\nhello,a\nbye,b\n'), needles=('notext.csv', "'text'", "'body', 'label'", '--text-field')),
    Case('csv_extra_fields', 'a CSV row with an unquoted comma in its text (more fields than the header)', argv=[*PREP, 'bad/comma.csv', '--label-field', 'label'],
         setup=lambda ws: _bad(ws, 'comma.csv', 'text,label\ngood film,pos\ngreat movie, loved it,pos\nbad film,neg\n'),
         needles=('comma.csv, line 3', '3 fields but the header has 2', 'must be quoted')),
    Case('csv_short_row', 'a CSV row with fewer fields than the header (no label)', argv=[*PREP, 'bad/short.csv', '--label-field', 'label'],
         setup=lambda ws: _bad(ws, 'short.csv', 'text,label\ngood film,pos\nno label here\nbad film,neg\n'), needles=('short.csv, line 3', '1 field(s) but the header has 2')),
    Case('csv_dup_column', 'a CSV header that names a column twice (`text,text,label`)', argv=[*PREP, 'bad/dup.csv', '--label-field', 'label'],
         setup=lambda ws: _bad(ws, 'dup.csv', 'text,text,label\n' + ''.join(f'title {i},body {i},{"ab"[i % 2]}\n' for i in range(10))), needles=('dup.csv', "names the column 'text' twice")),
    Case('csv_unclosed_quote', 'a CSV quote left open, which would swallow the rows after it', argv=[*PREP, 'bad/quote.csv', '--label-field', 'label'],
         setup=lambda ws: _bad(ws, 'quote.csv', 'text,label\n"unclosed quote movie,pos\nbad film,neg\ngood film,pos\n'),
         needles=('quote.csv, line 2', 'not valid csv', 'quote left open')),
    Case('jsonl_list_text', 'a JSONL text that is a list, not a string', argv=[*PREP, 'bad/list.jsonl'],
         setup=lambda ws: _bad(ws, 'list.jsonl', '{"text": "fine"}\n{"text": ["a", "b"]}\n' + '{"text": "more"}\n' * 10), needles=('list.jsonl, line 2', "text field 'text' holds a list", 'JSON string')),
    Case('jsonl_float_label', 'JSONL labels `1` and `1.0` (would be two classes)', argv=[*PREP, 'bad/float.jsonl', '--label-field', 'label'],
         setup=lambda ws: _bad(ws, 'float.jsonl', '{"text": "a", "label": 1}\n{"text": "b", "label": 1.0}\n' + ''.join(f'{{"text": "t{i}", "label": {i % 2}}}\n' for i in range(10))),
         needles=('float.jsonl, line 2', "label field 'label' holds a number (1.0)", 'strings or integers')),
    Case('jsonl_missing_label', 'a JSONL line without the label key the others have', argv=[*PREP, 'bad/nolabel.jsonl', '--label-field', 'label'],
         setup=lambda ws: _bad(ws, 'nolabel.jsonl', '{"text": "a", "label": "x"}\n{"text": "b"}\n'),
         needles=("nolabel.jsonl, line 2 has no label field 'label'", "(fields on that line: 'text')")),
    Case('one_class', '`txc prepare --label-field` on data with a single class', argv=[*PREP, 'bad/one.csv', '--label-field', 'label'],
         setup=lambda ws: _bad(ws, 'one.csv', 'text,label\n' + ''.join(f'text {i},pos\n' for i in range(10))),
         needles=('one.csv', "label field 'label' holds one class ('pos')", 'at least 2')),
    Case('prepare_tokenizer_file', '`txc prepare --tokenizer` naming a file, not a vocab dir', argv=['txc', 'prepare', '--input', 'texts.txt', '--tokenizer', 'texts.txt', '--out', 'prep'],
         needles=('tokenizer vocab dir texts.txt is a file', 'txc tokenizer --out')),
    Case('tokenizer_input_dir', '`txc tokenizer --input` naming a directory', argv=['txc', 'tokenizer', '--input', 'bad', '--out', 'vocab2'],
         setup=lambda ws: _bad(ws, 'x.txt', 'hi\n'), needles=('input file bad is a directory', '.txt, .csv or .jsonl')),
    Case('tokenizer_control_chars', '`txc tokenizer --input` of a file that holds only control characters', argv=['txc', 'tokenizer', '--input', 'bad/ctl.txt', '--out', 'vocab2'],
         setup=lambda ws: _bad(ws, 'ctl.txt', '\x01\x02\x7f\n\x1b\x07\n'), needles=('--input bad/ctl.txt', 'no text to train the tokenizer', 'control characters')),
    Case('predict_json', '`txc predict --input` of a .json file', argv=['txc', 'predict', '-n', 'ft', '--input', 'bad/texts.json'],
         setup=lambda ws: _bad(ws, 'texts.json', '[{"text": "chess game"}]\n'), needles=("--input bad/texts.json has unknown extension '.json'", '.jsonl')),
    Case('predict_blank_row', '`txc predict --input` of a CSV with a row whose text is blank', argv=['txc', 'predict', '-n', 'ft', '--input', 'bad/rows.csv'],
         setup=lambda ws: _bad(ws, 'rows.csv', 'id,text\n1,chess game\n2,\n3,sound driver\n'), needles=('rows.csv, line 3', "text field 'text' is blank", 'one line per row')),
    Case('predict_zero_width_text', '`txc predict --text` of a text that is only a zero-width space (U+200B)', argv=['txc', 'predict', '-n', 'ft', '--text', '\u200b'],
         needles=("--text '\\u200b'", 'characters the tokenizer drops', 'nothing to label')),
    Case('predict_zero_width_line', '`txc predict --input` of a .txt file with a line of zero-width spaces', argv=['txc', 'predict', '-n', 'ft', '--input', 'bad/zw.txt'],
         setup=lambda ws: _bad(ws, 'zw.txt', 'chess game\n\u200b\u200b\nsound driver\n'), needles=('bad/zw.txt, line 2', "'\\u200b\\u200b'", 'nothing to label')),
    Case('predict_control_row', '`txc predict --input` of a CSV row whose text is only control and format characters', argv=['txc', 'predict', '-n', 'ft', '--input', 'bad/ctl.csv'],
         setup=lambda ws: _bad(ws, 'ctl.csv', 'id,text\n1,chess game\n2,"\x00\ufeff\x7f"\n'), needles=('bad/ctl.csv, line 3', 'nothing to label')),
    Case('prepare_no_token', '`txc prepare --input` of a file whose every text holds only zero-width or control characters', argv=[*PREP, 'bad/zw0.txt'],
         setup=lambda ws: _bad(ws, 'zw0.txt', '\u200b\n\x00\x01\n\ufeff\u2060\n'), needles=('bad/zw0.txt: all its 3 text(s)', 'none holds a token')),
    Case('non_utf8', 'a Latin-1 .txt file', argv=['txc', 'prepare', '--input', 'bad/latin1.txt', '--tokenizer', 'vocab', '--out', 'prep'],
         setup=lambda ws: _bad(ws, 'latin1.txt', 'caf\xe9 cr\xe8me br\xfbl\xe9e\n'.encode('latin-1')), needles=('latin1.txt', 'UTF-8', 'iconv')),
    Case('non_utf8_tokenizer', 'a Latin-1 .csv for `txc tokenizer`', argv=['txc', 'tokenizer', '--input', 'bad/latin1.csv', '--out', 'vocab2'],
         setup=lambda ws: _bad(ws, 'latin1.csv', 'text\ncaf\xe9\n'.encode('latin-1')), needles=('latin1.csv', 'UTF-8')),
    Case('tokenizer_out_file', '`txc tokenizer --out` naming a file', argv=['txc', 'tokenizer', '--input', 'texts.txt', '--out', 'texts.txt'],
         needles=('--out texts.txt is a file', 'directory')),
    Case('prepare_out_file', '`txc prepare --out` naming a file', argv=['txc', 'prepare', '--input', 'texts.txt', '--tokenizer', 'vocab', '--out', 'texts.txt'],
         needles=('out dir texts.txt is a file', 'directory')),
    Case('bad_splits', '`txc prepare --splits 0.5,0.5`', argv=['txc', 'prepare', '--input', 'texts.txt', '--tokenizer', 'vocab', '--out', 'prep', '--splits', '0.5,0.5'],
         needles=("splits '0.5,0.5'", 'three fractions')),
    Case('nan_splits', '`txc prepare --splits 0.8,nan,0.1`', argv=['txc', 'prepare', '--input', 'texts.txt', '--tokenizer', 'vocab', '--out', 'prep', '--splits', '0.8,nan,0.1'],
         needles=("splits '0.8,nan,0.1'", 'finite numbers')),
    Case('tokenizer_out_under_file', '`txc tokenizer --out` inside a file', argv=['txc', 'tokenizer', '--input', 'texts.txt', '--out', 'texts.txt/vocab'],
         needles=('--out texts.txt/vocab', 'lies under texts.txt, which is a file')),
    Case('prepare_out_under_file', '`txc prepare --out` inside a file', argv=['txc', 'prepare', '--input', 'texts.txt', '--tokenizer', 'vocab', '--out', 'texts.txt/prep'],
         needles=('out dir texts.txt/prep', 'lies under texts.txt, which is a file')),
    # -- txc quickstart --root: a file, someone's files, a record cut short (--threads 1: no busy-machine warning line)
    Case('quickstart_root_file', '`txc quickstart --root` naming a file, with --force', argv=[*QS, '--root', 'texts.txt', '--force'],
         needles=('--root texts.txt is a file',)),
    Case('quickstart_root_under_file', '`txc quickstart --root` inside a file', argv=[*QS, '--root', 'texts.txt/qs'],
         needles=('--root texts.txt/qs', 'lies under texts.txt, which is a file')),
    Case('quickstart_force_other', '`txc quickstart --root . --force` in a dir that is not a quickstart', argv=[*QS, '--root', '.', '--force'],
         needles=('--root . is not empty and is not a quickstart', 'choose an empty or new --root')),
    Case('quickstart_input_flags', '`txc quickstart --label-field y` with no `--input FILE`', argv=[*QS, '--root', 'qs', '--label-field', 'y'],
         needles=('--label-field', '--input FILE')),
    Case('quickstart_input_label', '`txc quickstart --input` of a CSV without the label column', argv=[*QS, '--root', 'qs', '--input', 'bad/nolabel.csv'],
         setup=lambda ws: _bad(ws, 'nolabel.csv', 'text,section\n' + ''.join(f'chess game {i},games\n' for i in range(30))),
         needles=('bad/nolabel.csv', "'label'", '--label-field')),
    Case('quickstart_partial_state', '`txc quickstart --resume` of a root whose quickstart.json a kill cut short', argv=[*QS, '--root', 'qs', '--resume'],
         setup=lambda ws: (ws / 'qs').mkdir() or (ws / 'qs' / 'quickstart.json').write_text('{"preset": "smoke", "thr'),
         needles=('qs/quickstart.json is unreadable', 'pass --force instead of --resume')),
    # -- hostile files: refused, never executed
    Case('evil_check', '`txc check` of a .pt that runs code when unpickled', argv=['txc', 'check', 'bad/evil.pt'], setup=lambda ws: _evil(ws, 'evil.pt'),
         needles=('evil.pt', 'refuses to unpickle', 'it needs io.open')),
    Case('evil_dataset', 'a hostile .pt as `data.train.dataset_path`', **_with_train('pretraining', 'evil_data', lambda ws: _evil(ws, 'evil.pt')),
         needles=('data.train.dataset_path', 'evil.pt', 'refuses to unpickle')),
    Case('evil_resume', 'a hostile .ckpt as `training.resume.checkpoint_path`', argv=['train.py', '-n', 'evil_resume', '-m', 'pretraining'],
         setup=lambda ws: write_config(ws, 'pretraining', 'evil_resume', resume_keys(checkpoint_path='../../../' + _rel(ws, _evil(ws, 'evil.ckpt')))),
         needles=('evil.ckpt', 'needs arbitrary pickle', 'refused')),
    Case('evil_pretrained', "a hostile pretraining run's model.ckpt", argv=['train.py', '-n', 'evil_ft', '-m', 'finetuning'],
         setup=lambda ws: write_config(ws, 'finetuning', 'evil_ft', set_keys(pretrained_experiment__run_dir=_rel(ws, _evil_run(ws)))),
         needles=('evilrun/checkpoints/model.ckpt', 'needs arbitrary pickle', 'refused')),
    Case('evil_predict', '`txc predict` on a run with a hostile model.ckpt', argv=['txc', 'predict', '-n', 'bad/evilrun', '--text', 'hi'],
         setup=_evil_run, needles=('evilrun/checkpoints/model.ckpt', 'needs arbitrary pickle', 'refused')),
]


# ---- running a case ----

SCRIPTS = {'train.py': 'train.py', 'gen-pre': 'experiments/generate_pretraining_experiment.py', 'gen-ft': 'experiments/generate_finetuning_experiment.py'}

def run_subprocess(case:Case, ws:Path, timeout:int=180)->tuple[int, str, str]:
    "(exit code, stdout, stderr) of the case's real command (`txc` console script or repo script), run in `ws`."
    head, rest = case.argv[0], [str(a) for a in case.argv[1:]]
    cmd = ['txc', *rest] if head == 'txc' else [sys.executable, str(ROOT / SCRIPTS[head]), *rest]
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
    env |= case.env(ws) if case.env else {}
    res = subprocess.run(cmd, cwd=ws, capture_output=True, text=True, timeout=timeout, env=env)
    return res.returncode, res.stdout, res.stderr


@contextlib.contextmanager
def environment(env:dict):
    "Run the block with `env` in os.environ; packages in new PYTHONPATH dirs shadow the imported ones, as they would in a new process."
    dirs = [d for d in env.get('PYTHONPATH', '').split(os.pathsep) if d and d not in sys.path]
    names = {p.stem for d in dirs for p in Path(d).iterdir()}
    def ours(m): return m.split('.')[0] in names
    hidden, path = {m: sys.modules.pop(m) for m in [m for m in sys.modules if ours(m)]}, list(sys.path)
    sys.path[:0] = dirs
    try:
        with unittest.mock.patch.dict(os.environ, env): yield
    finally:
        sys.path[:] = path
        for m in [m for m in sys.modules if ours(m)]: del sys.modules[m]
        sys.modules.update(hidden)


def run_in_process(case:Case, ws:Path)->tuple[int, str, str]:
    "(exit code, stdout, stderr) of the entry point the command calls, run in this process with `ws` as working dir."
    from txc.cli import main, train_main, generate_pretraining_main, generate_finetuning_main
    fn = {'txc': main, 'train.py': train_main, 'gen-pre': generate_pretraining_main, 'gen-ft': generate_finetuning_main}[case.argv[0]]
    out, err = io.StringIO(), io.StringIO()
    with workdir(ws), environment(case.env(ws) if case.env else {}), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = fn([str(a) for a in case.argv[1:]])
        except SystemExit as e: rc = e.code
        except BaseException: rc = 1; traceback.print_exc()
    return rc, out.getvalue(), err.getvalue()


def run_case(case:Case, template:Path, ws:Path, run=run_subprocess)->dict:
    "Copy workspace `template` to `ws`, write the case's bad input, run it; return what `check_result` checks."
    shutil.copytree(template, ws)
    if case.setup: case.setup(ws)
    before = snapshot(ws)
    rc, out, err = run(case, ws)
    return dict(rc=rc, out=out, err=err, changed=snapshot_diff(before, snapshot(ws)), marker=(ws / MARKER).exists())


def check_result(case:Case, r:dict)->str:
    "Assert the contract on `run_case`'s result; return the error line."
    rc, out, err = r['rc'], r['out'], r['err']
    lines = err.strip().splitlines()
    assert rc == 2 and 'Traceback' not in out + err, f'{case.name}: exit {rc}\n{out[-2000:]}\n{err[-3000:]}'
    assert len(lines) == 1 and lines[0].startswith('error: '), f'{case.name}: stderr is not one error line:\n{err}'
    for n in case.needles: assert str(n) in lines[0], f'{case.name}: {n!r} not in {lines[0]!r}'
    assert not r['changed'], f'{case.name}: files written or changed: {r["changed"]}'
    assert not r['marker'], f'{case.name}: the hostile pickle ran'
    return lines[0]
