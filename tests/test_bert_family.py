"""BERT-family checkpoints beyond BERT: DistilBERT, ELECTRA (embedding_size != hidden_size) and tanh-GELU BERTs.

Tiny random transformers models saved to temporary dirs (no download): `Encoder.from_bert` must match their hidden
states, `import_bert` their MLM logits, and `txc import-bert` + finetuning must run end to end. Also a txc architecture
with `embedding_size` set, pretrained and finetuned through train.py, and the model types txc refuses.
"""
import json
import pytest
import torch
import yaml

from txc.config import DataError
from txc.encoder import Encoder

transformers = pytest.importorskip('transformers')
from transformers import (AlbertConfig, AlbertModel, BertConfig, BertForMaskedLM, BertModel, DistilBertConfig, DistilBertForMaskedLM,
                          DistilBertModel, ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining, ElectraModel, RobertaConfig, RobertaModel)
from conftest import ROOT, run_txc, assert_user_error
from test_model import ragged_batch, max_diff_at_real, threads
from test_workflow import edit_config, rows, run_py

WORDS = 'kernel driver python library sound video network editor font mail synth audio codec chess game'.split()
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', *WORDS, *'abcdefghijklmnopqrstuvwxyz', *(f'##{c}' for c in 'abcdefghijklmnopqrstuvwxyz')]
V = len(VOCAB)  # 72


def randomised(m, seed=0):
    "`m` in eval mode with every weight moved off its init (LayerNorms and biases included), so no mapping mistake can hide."
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters(): p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


def distilbert(cls=DistilBertModel, **kw):
    return randomised(cls(DistilBertConfig(**{**dict(vocab_size=V, dim=48, n_layers=2, n_heads=4, hidden_dim=96, max_position_embeddings=64), **kw})))


def electra(cls=ElectraModel, **kw):
    return randomised(cls(ElectraConfig(**{**dict(vocab_size=V, embedding_size=24, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                                  intermediate_size=96, max_position_embeddings=64), **kw})))


def bert(cls=BertModel, **kw):
    return randomised(cls(BertConfig(**{**dict(vocab_size=V, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                              intermediate_size=96, max_position_embeddings=64), **kw})))


def save(m, d, lower=True):
    "save_pretrained plus what a hub checkpoint dir also holds: vocab.txt and tokenizer_config.json."
    m.save_pretrained(d)
    (d / 'vocab.txt').write_text('\n'.join(VOCAB) + '\n')
    (d / 'tokenizer_config.json').write_text(json.dumps(dict(do_lower_case=lower)))
    return d


def base(m):
    "The bare encoder inside a transformers *ForMaskedLM / *ForPreTraining."
    return getattr(m, m.base_model_prefix, m)


# ---------------------------------------------------------------- hidden states

@pytest.mark.parametrize('name,make', [
    ('DistilBertModel', lambda: distilbert()),
    ('DistilBertForMaskedLM (prefix distilbert., a head to drop)', lambda: distilbert(DistilBertForMaskedLM)),
    ('DistilBertModel, sinusoidal_pos_embds, gelu_new', lambda: distilbert(sinusoidal_pos_embds=True, activation='gelu_new')),
    ('ElectraModel, embedding_size 24 < hidden 48', lambda: electra()),
    ('ElectraForMaskedLM (a generator)', lambda: electra(ElectraForMaskedLM)),
    ('ElectraForPreTraining (a discriminator), embedding_size = hidden', lambda: electra(ElectraForPreTraining, embedding_size=48)),
    ('BertModel, gelu_new', lambda: bert(hidden_act='gelu_new')),
    ('BertModel, gelu_pytorch_tanh', lambda: bert(hidden_act='gelu_pytorch_tanh'))])
def test_hidden_states_match_transformers(tmp_path, name, make):
    hf = make()
    enc = Encoder.from_bert(save(hf, tmp_path))
    ids, pad = ragged_batch(V, [40, 23, 5, 1], 40, seed=1, cls_id=2, sep_id=3)
    with threads(1): diff = max_diff_at_real(enc, base(hf), ids, pad)
    print(f'{name}: max |diff| at non-PAD = {diff:.2e}')
    assert diff < 1e-4
    c, mt = enc.config, hf.config.model_type
    assert (c.norm_position, c.position_encoding, c.num_layers, c.hidden_size) == ('post', 'learned', 2, 48)
    assert c.type_vocab_size == (0 if mt == 'distilbert' else 2) and c.norm_eps == 1e-12
    assert c.embed_size == (hf.config.embedding_size if mt == 'electra' else 48)
    assert (enc.embeddings.proj is None) == (c.embed_size == 48)
    act = getattr(hf.config, 'hidden_act', None) or hf.config.activation
    assert c.activation == ('gelu' if act == 'gelu' else 'gelu_tanh')


def test_tanh_gelu_is_not_read_as_exact(tmp_path):
    "The tanh GELU matters: the same weights read as exact GELU miss transformers' hidden states (so the test above can fail)."
    hf = bert(hidden_act='gelu_new')
    enc = Encoder.from_bert(save(hf, tmp_path))
    exact = Encoder(enc.config.model_copy(update=dict(activation='gelu'))).eval()
    exact.load_state_dict(enc.state_dict())
    ids, pad = ragged_batch(V, [30, 12], 30, seed=2)
    assert max_diff_at_real(exact, hf, ids, pad) > 1e-4 > max_diff_at_real(enc, hf, ids, pad)


# ---------------------------------------------------------------- MLM heads through import_bert

@pytest.mark.parametrize('make', [lambda: distilbert(DistilBertForMaskedLM), lambda: distilbert(DistilBertForMaskedLM, activation='gelu_new'),
                                  lambda: electra(ElectraForMaskedLM), lambda: bert(BertForMaskedLM, hidden_act='gelu_new')],
                         ids=['distilbert', 'distilbert-gelu_new', 'electra-generator', 'bert-gelu_new'])
def test_import_bert_mlm_logits_match_transformers(tmp_path, make):
    from txc.checkpoint import load_checkpoint
    from txc.config_io import load_config
    from txc.experiments import import_bert, RunDir
    from txc.heads import MaskedLM
    hf = make()
    cfg = load_config(import_bert(save(hf, tmp_path / 'hf'), 'imp', root=tmp_path / 'exp'))
    m = MaskedLM(cfg.architecture, cfg.mlm_head).eval()
    m.load_state_dict(load_checkpoint(RunDir.of('imp', 'pretraining', tmp_path / 'exp').model_ckpt)['model'])
    ids, pad = ragged_batch(V, [20, 13, 4], 20, seed=3, cls_id=2, sep_id=3)
    with torch.no_grad(), threads(1):
        ref = hf(input_ids=ids, attention_mask=(~pad).long()).logits[~pad]     # (N, V) at every real token
        out = m(ids, pad)[0]
    assert (out - ref).abs().max() < 1e-4, (out - ref).abs().max()
    assert m.head.decoder.weight is m.encoder.embeddings.tok.weight              # tied, as in the checkpoint


# ---------------------------------------------------------------- refused

@pytest.mark.parametrize('make,needle', [
    (lambda: RobertaModel(RobertaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)),
     "model_type='roberta' is not supported (its byte-level BPE vocab"),
    (lambda: AlbertModel(AlbertConfig(vocab_size=V, embedding_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)),
     "model_type='albert' is not supported (every layer shares one set of weights"),
    (lambda: electra(hidden_act='gelu_new'), "hidden_act='gelu_new' is not supported; from_bert reads 'gelu' for model_type 'electra'"),
    (lambda: distilbert(activation='relu'), "activation='relu' is not supported"),
    (lambda: bert(hidden_act='silu'), "hidden_act='silu' is not supported")])
def test_refused_with_one_clear_line(tmp_path, make, needle):
    save(make(), tmp_path)
    with pytest.raises(DataError) as e: Encoder.from_bert(tmp_path)
    assert needle in str(e.value) and str(tmp_path / 'config.json') in str(e.value) and '\n' not in str(e.value), str(e.value)
    assert "from_bert reads" in str(e.value)


def test_import_bert_cli_refuses_roberta(tmp_path):
    save(RobertaModel(RobertaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)), tmp_path / 'rob')
    res = run_txc('import-bert', tmp_path / 'rob', '-p', 'rob', '--root', tmp_path / 'exp', cwd=tmp_path)
    assert_user_error(res, f"{tmp_path / 'rob' / 'config.json'}: model_type='roberta' is not supported", "'bert', 'distilbert' or 'electra'")
    assert not (tmp_path / 'exp' / 'pretraining' / 'rob' / 'checkpoints').exists()


# ---------------------------------------------------------------- end to end through the CLI

def labelled_data(d):
    "A labelled jsonl over WORDS (3 labels)."
    lines = [('chess game ' if i % 2 else '') + ' '.join(WORDS[(i * k + j) % 13] for j in range(6)) for i in range(60) for k in (1, 3)]
    label = lambda l: 'games' if l.startswith('chess') else 'audio' if 'audio' in l else 'other'
    (d / 'labelled.jsonl').write_text('\n'.join(json.dumps(dict(text=l, label=label(l))) for l in lines) + '\n')


def small_run(data):
    "Config edits for a few CPU steps on `data` (a dir with train/val/test.pt and labels.json)."
    def edit(c):
        c['logging'].update(log_metrics_csv=True, progress_bar=False, log_every_n_steps=1)
        c['training'].update(epochs=1, max_steps=4, batch_size=16, eval_every_n_steps=2, device='cpu', num_threads=1)
        c['data'] = {s: {'dataset_path': str(data / f'{s}.pt')} for s in ('train', 'val', 'test')} | {'labels_path': str(data / 'labels.json')}
    return edit


@pytest.mark.parametrize('make,arch', [(lambda: distilbert(DistilBertForMaskedLM), ('post', 0, None)), (lambda: electra(ElectraForPreTraining), ('post', 2, 24))],
                         ids=['distilbert', 'electra-discriminator'])
def test_import_bert_then_finetune(tmp_path, make, arch):
    "`txc import-bert` -> `txc prepare` with its vocab -> generate_finetuning_experiment.py -p -> train.py: the cheat sheet's BERT route."
    d = tmp_path
    save(make(), d / 'hf')
    res = run_txc('import-bert', d / 'hf', '-p', 'imp', cwd=d)
    assert res.returncode == 0, res.stderr
    vocab = d / 'experiments' / 'pretraining' / 'imp' / 'vocab'
    labelled_data(d)
    res = run_txc('prepare', '--input', d / 'labelled.jsonl', '--label-field', 'label', '--tokenizer', vocab, '--out', d / 'data' / 'finetuning', '--max-length', 24, cwd=d)
    assert res.returncode == 0, res.stderr
    run_py('experiments/generate_finetuning_experiment.py', '-f', 'ft', '-p', 'imp', cwd=d)
    ft = d / 'experiments' / 'finetuning' / 'ft'
    edit_config(ft / 'config.yaml', small_run(d / 'data' / 'finetuning'))   # num_labels: the generator's, from the template's labels.json
    run_py('train.py', '-n', 'ft', '-m', 'finetuning', cwd=d)
    assert (ft / 'checkpoints' / 'model.ckpt').is_file()
    test = rows(ft / 'metrics' / 'eval' / 'test.csv')
    assert len(test) == 1 and 0 <= float(test[0]['accuracy']) <= 1
    a = yaml.safe_load((ft / 'config.yaml').read_text())['architecture']                # the checkpoint's, copied by the generator
    assert (a['norm_position'], a['type_vocab_size'], a['embedding_size']) == arch
    res = run_txc('predict', '-n', 'ft', '--text', 'chess game engine', cwd=d)
    assert res.returncode == 0 and json.loads(res.stdout)['label'] in ('games', 'audio', 'other'), res.stderr


def test_embedding_size_pretrain_then_finetune(tmp_path):
    "A txc architecture with embedding_size < hidden_size: MLM pretraining and finetuning through train.py, checkpoints and configs round-trip."
    from test_workflow import make_data, tiny
    from txc.checkpoint import load_checkpoint
    d = tmp_path
    make_data(d)
    exp = d / 'experiments'
    def narrow(kind, data_dir):
        def edit(c):
            tiny(d, data_dir, kind)(c)
            c['architecture']['embedding_size'] = 16                                    # hidden_size 32
        return edit
    run_py('experiments/generate_pretraining_experiment.py', '-p', 'pre', cwd=d)
    edit_config(exp / 'pretraining' / 'pre' / 'config.yaml', narrow('pretraining', 'mlm'))
    run_py('train.py', '-n', 'pre', '-m', 'pretraining', cwd=d)
    ck = load_checkpoint(exp / 'pretraining' / 'pre' / 'checkpoints' / 'model.ckpt')
    assert ck['config']['architecture']['embedding_size'] == 16
    assert ck['model']['encoder.embeddings.tok.weight'].shape == (128, 16) and ck['model']['encoder.embeddings.proj.weight'].shape == (32, 16)
    assert ck['model']['head.dense.weight'].shape == (16, 32)
    run_py('experiments/generate_finetuning_experiment.py', '-f', 'ft', '-p', 'pre', cwd=d)
    cfg = yaml.safe_load((exp / 'finetuning' / 'ft' / 'config.yaml').read_text())
    assert cfg['architecture']['embedding_size'] == 16                                # copied with the architecture
    edit_config(exp / 'finetuning' / 'ft' / 'config.yaml', lambda c: (tiny(d, 'data/finetuning', 'finetuning')(c), c['architecture'].update(embedding_size=16)))
    run_py('train.py', '-n', 'ft', '-m', 'finetuning', cwd=d)
    fine = load_checkpoint(exp / 'finetuning' / 'ft' / 'checkpoints' / 'model.ckpt')
    assert fine['model']['encoder.embeddings.proj.weight'].shape == (32, 16)
    # the same finetuning config without embedding_size: refused by name, not a shape error deep in torch
    edit_config(exp / 'finetuning' / 'ft' / 'config.yaml', lambda c: c['architecture'].pop('embedding_size'))
    run_py('experiments/generate_finetuning_experiment.py', '-f', 'ft2', '-p', 'pre', cwd=d)
    edit_config(exp / 'finetuning' / 'ft2' / 'config.yaml', lambda c: (tiny(d, 'data/finetuning', 'finetuning')(c)))
    res = run_txc('train', '-n', 'ft2', '-m', 'finetuning', cwd=d)
    assert_user_error(res, 'embedding_size: 16 (pretrained) vs 32 (this run)')
