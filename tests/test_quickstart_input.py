"`txc quickstart --input FILE`: the whole pipeline on the user's own labelled file, end to end, and its refusals."
import json, random, shlex
from conftest import run_txc, assert_user_error

WORDS = dict(sport='goal match team coach referee league striker', food='bread soup salt cook oven recipe butter',
             tech='chip code disk byte server kernel compiler')
COMMON = 'the a of and with today new very'.split()

def labelled_csv(path, n=300, seed=0):
    "A csv of `n` texts in 3 classes: four words of the text's class among four common ones."
    rng = random.Random(seed)
    rows = [(c, ' '.join(rng.sample(rng.choices(WORDS[c].split(), k=4) + rng.choices(COMMON, k=4), 8))) for c in rng.choices(list(WORDS), k=n)]
    path.write_text('text,label\n' + ''.join(f'{t},{c}\n' for c, t in rows))
    return path

QS = ('quickstart', '--preset', 'smoke', '--no-progress', '--threads', '1')

def test_quickstart_on_a_labelled_csv(tmp_path):
    data, root = labelled_csv(tmp_path / 'tiny.csv'), tmp_path / 'R'
    res = run_txc(*QS, '--input', data, '--root', root, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines(); top = lines.index('txc quickstart (smoke)')
    assert lines[top + 1] == f'  --input {data}: 3 classes; 240 train, 30 val, 30 test texts', lines[top:]
    assert lines[top + 2].startswith('  MLM corpus: 228 texts, 12 more held out'), lines[top:]
    rows = lines[top + 5:top + 8]
    assert [l[:20].strip() for l in rows] == ['MLM + finetuning', 'from scratch', 'ensemble of both'], lines[top:]
    assert all(0 <= float(x) <= 1 for l in rows for x in l[20:].split())
    assert json.loads((root / 'data' / 'labelled' / 'labels.json').read_text()) == ['food', 'sport', 'tech']
    st = json.loads((root / 'quickstart.json').read_text())
    assert (st['input']['input'], st['input']['label_field'], st['input']['splits'], st['input']['seed']) == (str(data), 'label', [0.8, 0.1, 0.1], 0)
    predict = shlex.split(lines[-1].split(': ', 1)[1].replace('...', 'the striker scored a goal'))   # the printed ensemble command works
    assert predict[:2] == ['txc', 'predict'] and predict.count('-n') == 2, lines[-1]
    out = run_txc(*predict[1:], '--text', 'bread and soup')
    assert out.returncode == 0, out.stderr
    assert [json.loads(l)['label'] in ('food', 'sport', 'tech') for l in out.stdout.splitlines()] == [True, True]

    again = run_txc(*QS, '--input', data, '--root', root, '--resume')                  # all done: the same table, nothing redone
    assert again.returncode == 0 and '== tokenizer: finished before' in again.stdout, again.stderr
    other = labelled_csv(tmp_path / 'other.csv', seed=1)
    assert_user_error(run_txc(*QS, '--input', other, '--root', root, '--resume'), f'was started with --input {data} of sha256', 'pass --force')
    assert_user_error(run_txc(*QS, '--input', data, '--root', root, '--resume', '--label-field', 'text', '--text-field', 'label'),
                      '--text-field text, not label; --label-field label, not text')
    assert_user_error(run_txc(*QS, '--input', data, '--root', root, '--resume', '--seed', '1'), '--seed 0, not 1')
    assert_user_error(run_txc(*QS, '--root', root, '--resume'), f'was started with --input {data}, not the bundled corpus')
    with data.open('a') as f: f.write('one more text about bread,food\n')                # the same file, edited in place
    assert_user_error(run_txc(*QS, '--input', data, '--root', root, '--resume'), '(another file, or this one edited since)')

def test_quickstart_input_refusals(tmp_path):
    data = labelled_csv(tmp_path / 'tiny.csv', n=60)
    root = tmp_path / 'R'
    assert_user_error(run_txc(*QS, '--input', data, '--root', root, '--label-field', 'topic'), 'tiny.csv', "'topic'")
    (tmp_path / 'one.csv').write_text('text,label\n' + 'some text,x\n' * 30)
    assert_user_error(run_txc(*QS, '--input', tmp_path / 'one.csv', '--root', root), "holds one class ('x')")
    assert_user_error(run_txc(*QS, '--input', data, '--root', root, '--splits', '0.02,0.49,0.49'), 'no example in the train split')
    assert_user_error(run_txc(*QS, '--input', data, '--root', root, '--splits', '0.9,0,0.1'), 'both must be above 0')
    assert_user_error(run_txc(*QS, '--root', root, '--text-field', 'body', '--unlabelled', data), '--text-field, --unlabelled: only with --input FILE')
    assert_user_error(run_txc(*QS, '--input', 'bundled', '--root', root, '--seed', '2'), '--seed: only with --input FILE')
    assert not root.exists()                                                              # every refusal before any work
