"Bad-input catalogue and end-to-end checks for txc.data: prepare text files, load .pt files safely, fixed splits."
import json, os, pickle

import pytest
import torch
from torch.utils.data import TensorDataset

from txc.config import DataError
from txc.data import (SECTIONS, classification_splits, load_corpus, load_tensor_dataset, mlm_texts, prepare_dataset,
                      source_split, split_indices, validate_tensors)
from txc.tokenizer import WordPieceTokenizer

IDS = torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]])
PAD = torch.tensor([[False, False, False, False], [False, False, False, True]])


@pytest.fixture(scope='module')
def vocab(tmp_path_factory):
    d = tmp_path_factory.mktemp('vocab')
    WordPieceTokenizer.train(texts=mlm_texts()[:3000], vocab_size=512).save(d)
    return d


def save(path, *tensors):
    ds = TensorDataset(*tensors[:1])
    ds.tensors = tensors  # bypass TensorDataset's own size check, to write files with mismatched rows
    torch.save(ds, path)
    return path


# ---- the safe loader: bad .pt files ----

class Evil:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))


@pytest.mark.parametrize('how', ['torch.save', 'pickle.dump', 'in a dict beside a TensorDataset'])
def test_arbitrary_pickle_is_refused_and_never_executed(tmp_path, how):
    marker, path = tmp_path / 'MARKER', tmp_path / 'evil.pt'
    if how == 'torch.save': torch.save(Evil(marker), path)
    elif how == 'pickle.dump': path.write_bytes(pickle.dumps(Evil(marker)))
    else: torch.save({'ds': TensorDataset(IDS, PAD), 'x': Evil(marker)}, path)
    with pytest.raises(DataError, match='refuses to unpickle arbitrary objects') as e: load_tensor_dataset(path)
    assert str(path) in str(e.value)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Evil(marker)))  # the payload is live: unpickling it the unsafe way does create the marker
    assert marker.exists()


def test_garbage_file(tmp_path):
    (tmp_path / 'g.pt').write_bytes(b'not a torch file')
    with pytest.raises(DataError, match='g.pt is not a txc dataset'): load_tensor_dataset(tmp_path / 'g.pt')


def test_missing_and_wrong_container(tmp_path):
    with pytest.raises(DataError, match='nope.pt not found'): load_tensor_dataset(tmp_path / 'nope.pt')
    torch.save((IDS, PAD), tmp_path / 't.pt')
    with pytest.raises(DataError, match='holds a tuple, not TensorDataset'): load_tensor_dataset(tmp_path / 't.pt')
    p = save(tmp_path / 'one.pt', IDS)
    with pytest.raises(DataError, match='TensorDataset of 1 tensors'): load_tensor_dataset(p)


def test_mask_dtype_long(tmp_path):
    p = save(tmp_path / 'long.pt', IDS, PAD.long())
    with pytest.raises(DataError, match=r'long.pt: attention_mask has dtype torch.int64.*True = PAD.*mask.bool\(\)'): load_tensor_dataset(p)


def test_inverted_mask(tmp_path):
    p = save(tmp_path / 'inv.pt', IDS, ~PAD)
    with pytest.raises(DataError, match='looks inverted: txc uses True = PAD'): load_tensor_dataset(p)


def test_label_out_of_range(tmp_path):
    p = save(tmp_path / 'lab.pt', IDS, PAD, torch.tensor([0, 3]))
    assert len(load_tensor_dataset(p, num_labels=4)) == 2
    with pytest.raises(DataError, match=r'lab.pt: label 3 in row 1 is outside \[0, 3\)'): load_tensor_dataset(p, num_labels=3)
    p = save(tmp_path / 'neg.pt', IDS, PAD, torch.tensor([-1, 0]))
    with pytest.raises(DataError, match='label -1 in row 0'): load_tensor_dataset(p)


def test_mismatched_lengths_and_dtypes(tmp_path):
    with pytest.raises(DataError, match='labels must be a 1-D torch.long tensor with 2 rows'):
        load_tensor_dataset(save(tmp_path / 'a.pt', IDS, PAD, torch.tensor([0, 1, 1])))
    with pytest.raises(DataError, match='attention_mask shape'): validate_tensors(IDS, PAD[:, :3])
    with pytest.raises(DataError, match='torch.long'): load_tensor_dataset(save(tmp_path / 'b.pt', IDS.int(), PAD))
    with pytest.raises(DataError, match='labels must be'): load_tensor_dataset(save(tmp_path / 'c.pt', IDS, PAD, torch.tensor([0., 1.])))


def test_empty_dataset(tmp_path):
    p = save(tmp_path / 'e.pt', IDS[:0], PAD[:0])
    with pytest.raises(DataError, match='e.pt: is empty'): load_tensor_dataset(p)


def test_require_labels(tmp_path):
    mlm, lab = save(tmp_path / 'm.pt', IDS, PAD), save(tmp_path / 'l.pt', IDS, PAD, torch.tensor([1, 0]))
    with pytest.raises(DataError, match='no labels.*--label-field'): load_tensor_dataset(mlm, require_labels=True)
    assert len(load_tensor_dataset(lab, require_labels=False).tensors) == 2
    assert len(load_tensor_dataset(lab).tensors) == 3


# ---- prepare: bad input ----

def test_prepare_bad_input(tmp_path, vocab):
    out = tmp_path / 'out'
    (tmp_path / 'empty.csv').write_text('text,label\n')
    (tmp_path / 'blank.txt').write_text('\n   \n')
    (tmp_path / 'c.csv').write_text('title,body\nx,hello\n')
    (tmp_path / 'c.jsonl').write_text('{"body": "hello"}\n')
    (tmp_path / 'c.tsv').write_text('hello\n')
    cases = [
        (dict(input=tmp_path / 'nope.txt'), 'nope.txt not found'),
        (dict(input=tmp_path / 'empty.csv'), 'holds no texts'),
        (dict(input=tmp_path / 'blank.txt'), 'blank.txt holds no texts'),
        (dict(input=tmp_path / 'c.csv'), "c.csv has no text field 'text' (header: 'title', 'body'): pass --text-field"),
        (dict(input=tmp_path / 'c.csv', text_field='body', label_field='topic'), "no label field 'topic' (header: 'title', 'body')"),
        (dict(input=tmp_path / 'c.jsonl'), "c.jsonl, line 1 has no text field 'text' (fields on that line: 'body')"),
        (dict(input=tmp_path / 'c.tsv'), "unknown extension '.tsv'"),
        (dict(input=tmp_path / 'blank.txt', label_field='y'), 'no fields'),
        (dict(input=tmp_path / 'c.csv', text_field='body', splits=(0.9, 0.2, 0.1)), 'summing to 1'),
        (dict(input=tmp_path / 'c.csv', text_field='body', splits='0.8,0.2'), 'three fractions'),
        (dict(input=tmp_path / 'c.csv', text_field='body', tokenizer_dir=tmp_path / 'novocab'), 'novocab not found'),
    ]
    for kw, msg in cases:
        kw = dict(dict(tokenizer_dir=vocab, out=out), **kw)
        with pytest.raises(DataError) as e: prepare_dataset(**kw)
        assert msg in str(e.value), (kw, str(e.value))


# ---- prepare: small files end to end ----

def test_prepare_csv_jsonl_txt(tmp_path, vocab):
    rows = [(f'package number {i} plays sound' if i % 2 else f'package {i} edits text', 'sound' if i % 2 else 'text') for i in range(40)]
    (tmp_path / 'd.csv').write_text('id,body,topic\n' + ''.join(f'{i},"{t}",{y}\n' for i, (t, y) in enumerate(rows)))
    (tmp_path / 'd.jsonl').write_text(''.join(json.dumps(dict(body=t, topic=y)) + '\n' for t, y in rows))
    (tmp_path / 'd.txt').write_text(''.join(t + '\n\n' for t, _ in rows))
    for ext in ('csv', 'jsonl'):
        out = tmp_path / f'out-{ext}'
        info = prepare_dataset(tmp_path / f'd.{ext}', vocab, out, text_field='body', label_field='topic', seed=3, max_length=12)
        assert info['counts'] == dict(train=32, val=4, test=4) and info['task'] == 'classification'
        assert json.loads((out / 'labels.json').read_text()) == ['sound', 'text']
        got = [load_tensor_dataset(out / f'{k}.pt', num_labels=2, require_labels=True) for k in ('train', 'val', 'test')]
        assert all(ds.tensors[0].shape[1] <= 12 for ds in got)
        tok = WordPieceTokenizer.load(vocab)
        for ids, mask, y in zip(*got[0].tensors):  # each text kept its own label
            text = tok.decode(ids[~mask])
            assert ('plays' in text) == (y.item() == 0)
        meta = json.loads((out / 'prepare.json').read_text())
        assert (meta['seed'], meta['max_length'], meta['label_field']) == (3, 12, 'topic')
    a, b = (torch.load(tmp_path / f'out-{e}' / 'train.pt', weights_only=False).tensors for e in ('csv', 'jsonl'))
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # same rows, same seed -> same split
    info = prepare_dataset(tmp_path / 'd.txt', vocab, tmp_path / 'out-csv')
    assert info['task'] == 'mlm' and not (tmp_path / 'out-csv' / 'labels.json').exists()
    assert len(load_tensor_dataset(tmp_path / 'out-csv' / 'train.pt').tensors) == 2


def test_numeric_labels_keep_their_ids(tmp_path, vocab):
    (tmp_path / 'n.jsonl').write_text(''.join(json.dumps(dict(text=f'doc {i}', label=i % 11)) + '\n' for i in range(44)))
    prepare_dataset(tmp_path / 'n.jsonl', vocab, tmp_path / 'o', label_field='label', splits=(1, 0, 0))
    assert json.loads((tmp_path / 'o' / 'labels.json').read_text()) == [str(i) for i in range(11)]
    assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == ['labels.json', 'prepare.json', 'train.pt']


# ---- splits: determinism and no leakage ----

def test_split_determinism(tmp_path, vocab):
    assert split_indices(1000, (0.8, 0.1, 0.1), seed=7) == split_indices(1000, '0.8,0.1,0.1', seed=7)
    assert split_indices(1000, (0.8, 0.1, 0.1), seed=7) != split_indices(1000, (0.8, 0.1, 0.1), seed=8)
    (tmp_path / 'd.txt').write_text(''.join(f'line {i}\n' for i in range(50)))
    for run in ('a', 'b'): prepare_dataset(tmp_path / 'd.txt', vocab, tmp_path / run, seed=5)
    for k in ('train', 'val', 'test'):
        x, y = (load_tensor_dataset(tmp_path / run / f'{k}.pt').tensors for run in ('a', 'b'))
        assert all(torch.equal(u, v) for u, v in zip(x, y))
    # the source split is a fixed function of the name (md5), not of Python's hash seed or the corpus order
    assert [source_split(s) for s in ('0ad', 'linux', 'python3-defaults', 'emacs')] == \
           [source_split(s) for s in ('0ad', 'linux', 'python3-defaults', 'emacs')]


def test_bundled_splits():
    corpus = load_corpus()
    assert 60_000 < len(corpus) < 62_000
    assert SECTIONS[:3] == ['games', 'science', 'sound'] and len(SECTIONS) == 16
    sp = classification_splits()
    srcs = {k: {e.source for e in v} for k, v in sp.items()}
    assert not (srcs['train'] & srcs['val'] or srcs['train'] & srcs['test'] or srcs['val'] & srcs['test'])
    n = sum(map(len, sp.values()))
    assert 11_000 < n < 13_000 and 0.75 < len(sp['train']) / n < 0.85
    assert all(0 <= e.label < 16 for v in sp.values() for e in v)
    assert sp == classification_splits()
    held = {e.source for e in sp['val'] + sp['test']}
    mlm_sources = {r['source'] for r in corpus if source_split(r['source']) == 'train'}
    assert not (held & mlm_sources) and len(mlm_texts()) == sum(source_split(r['source']) == 'train' for r in corpus)


def test_prepare_whole_bundled_corpus(tmp_path, vocab):
    info = prepare_dataset('bundled', vocab, tmp_path / 'mlm')
    assert info['counts'] == dict(train=len(mlm_texts()), val=1000, test=1000)
    ds = load_tensor_dataset(tmp_path / 'mlm' / 'train.pt', require_labels=False)
    assert ds.tensors[0].shape == (len(mlm_texts()), 128)
