"Process-level tests of the `txc` command: bad input gives one line `error: ...`, exit code 2, no traceback."
import json, os, shutil, subprocess, sys, time
import pytest
import torch
from torch.utils.data import TensorDataset
from conftest import run_txc, assert_user_error

def save_ds(path, *tensors): torch.save(TensorDataset(*tensors), path)

def good_tensors(n=4, t=6):
    ids = torch.randint(5, 100, (n, t)); mask = torch.zeros(n, t, dtype=torch.bool); mask[:, -2:] = True
    return ids, mask

def test_help_for_every_subcommand():
    for cmd in ('tokenizer', 'prepare', 'check'):
        res = run_txc(cmd, '--help')
        assert res.returncode == 0 and 'usage: txc ' + cmd in res.stdout

def test_config_key_typo(tmp_path):
    (tmp_path / 'config.yaml').write_text('training:\n  lrr: 0.001\n')
    assert_user_error(run_txc('check', tmp_path / 'config.yaml'), 'config.yaml', "'training.lrr'", "did you mean 'training.lr'")

def test_config_bad_value(tmp_path):
    (tmp_path / 'config.yaml').write_text('architecture:\n  hidden_size: 100\n  num_heads: 3\n')
    assert_user_error(run_txc('check', tmp_path / 'config.yaml'), 'config.yaml', 'num_heads=3')

def test_csv_without_text_field(tmp_path, tiny_vocab):
    (tmp_path / 'data.csv').write_text('body,label\nhello world,a\nbye now,b\n')
    res = run_txc('prepare', '--input', tmp_path / 'data.csv', '--tokenizer', tiny_vocab, '--out', tmp_path / 'out',
                  '--text-field', 'text', '--label-field', 'label')
    assert_user_error(res, 'data.csv', "'text'", 'body')
    assert not (tmp_path / 'out' / 'train.pt').exists()

def test_empty_input_file(tmp_path, tiny_vocab):
    (tmp_path / 'empty.txt').write_text('')
    res = run_txc('prepare', '--input', tmp_path / 'empty.txt', '--tokenizer', tiny_vocab, '--out', tmp_path / 'out')
    assert_user_error(res, 'empty.txt')
    assert_user_error(run_txc('tokenizer', '--input', tmp_path / 'empty.txt', '--out', tmp_path / 'v'), 'empty.txt')

def test_missing_tokenizer_dir(tmp_path):
    (tmp_path / 'a.txt').write_text('some text\n')
    res = run_txc('prepare', '--input', tmp_path / 'a.txt', '--tokenizer', tmp_path / 'nope', '--out', tmp_path / 'out')
    assert_user_error(res, 'nope')

def test_arbitrary_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / 'pwned'
    class Evil:
        def __reduce__(self): return (open, (str(marker), 'w'))
    torch.save({'x': Evil()}, tmp_path / 'evil.pt')
    assert not marker.exists()
    assert_user_error(run_txc('check', tmp_path / 'evil.pt'), 'evil.pt')
    assert not marker.exists()

def test_mask_dtype_long(tmp_path):
    ids, mask = good_tensors()
    save_ds(tmp_path / 'd.pt', ids, mask.long())
    assert_user_error(run_txc('check', tmp_path / 'd.pt'), 'd.pt', 'torch.int64')

def test_label_out_of_range(tmp_path):
    ids, mask = good_tensors()
    save_ds(tmp_path / 'd.pt', ids, mask, torch.tensor([0, 1, 5, 1]))
    assert_user_error(run_txc('check', tmp_path / 'd.pt', '--num-labels', 3), 'd.pt', '5')
    assert run_txc('check', tmp_path / 'd.pt', '--num-labels', 6).returncode == 0

def test_prepare_then_check_roundtrip(tmp_path, tiny_vocab):
    rows = [json.dumps(dict(text=f'alpha beta item{i} game', label='x' if i % 2 else 'y')) for i in range(50)]
    (tmp_path / 'd.jsonl').write_text('\n'.join(rows) + '\n')
    res = run_txc('prepare', '--input', tmp_path / 'd.jsonl', '--tokenizer', tiny_vocab, '--out', tmp_path / 'out', '--label-field', 'label')
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / 'out' / 'labels.json').read_text()) == ['x', 'y']
    for split in ('train', 'val', 'test'):
        assert run_txc('check', tmp_path / 'out' / f'{split}.pt', '--num-labels', 2).returncode == 0

def test_prepare_max_length_defaults_to_the_vocabs(tmp_path):
    "`txc tokenizer --max-length 8` is stored with the vocab: `txc prepare` uses it unless --max-length is given (it used 128)."
    (tmp_path / 'corpus.txt').write_text(''.join(f'alpha beta gamma delta kernel driver python library item{i}\n' for i in range(200)))
    assert run_txc('tokenizer', '--input', tmp_path / 'corpus.txt', '--vocab-size', 128, '--max-length', 8, '--out', tmp_path / 'v').returncode == 0
    for extra, n in (([], 8), (['--max-length', 12], 12)):
        out = tmp_path / f'out{n}'
        res = run_txc('prepare', '--input', tmp_path / 'corpus.txt', '--tokenizer', tmp_path / 'v', '--out', out, *extra)
        assert res.returncode == 0, res.stderr
        assert json.loads((out / 'prepare.json').read_text())['max_length'] == n
        assert torch.load(out / 'train.pt', weights_only=False).tensors[0].shape[1] == n

def test_prepare_warnings_are_one_line_each(tmp_path, tiny_vocab):
    "Blank texts skipped, texts repeated across splits, labels that differ only by case: warnings, and the datasets are written."
    rows = ['text,label'] + [f'alpha beta item{i % 10},{"pos" if i % 2 else "neg"}' for i in range(40)] + [',pos', '"  ",neg', 'gamma,Pos']
    (tmp_path / 'd.csv').write_text('\n'.join(rows) + '\n')
    res = run_txc('prepare', '--input', tmp_path / 'd.csv', '--tokenizer', tiny_vocab, '--out', tmp_path / 'out', '--label-field', 'label')
    assert res.returncode == 0 and (tmp_path / 'out' / 'train.pt').exists(), res.stderr
    lines = res.stderr.strip().splitlines()
    assert all(l.startswith('warning: ') for l in lines) and 'Traceback' not in res.stderr, res.stderr
    assert any("skipped 2 row(s) whose text field 'text' is blank or null (the first on line 42)" in l for l in lines), lines
    assert any("labels 'Pos' and 'pos' differ only by case" in l for l in lines), lines
    assert any('val/test text(s) also appear in train' in l for l in lines), lines

def test_tokenizer_bigger_than_asked_is_one_warning(tmp_path):
    "3,000 distinct CJK characters with --vocab-size 64: the vocab must keep them all; one warning line says so, with the numbers."
    (tmp_path / 'cjk.txt').write_text('\n'.join(''.join(chr(0x4e00 + (30 * i + j) % 3000) for j in range(30)) for i in range(400)) + '\n', encoding='utf-8')
    res = run_txc('tokenizer', '--input', tmp_path / 'cjk.txt', '--vocab-size', '64', '--out', tmp_path / 'v')
    assert res.returncode == 0 and 'vocab 3008' in res.stdout, res.stdout + res.stderr
    assert res.stderr.strip().splitlines() == ['warning: the tokenizer vocab has 3,008 tokens, 2,944 more than vocab_size 64 asks for: WordPiece keeps every character '
        'of the training text as a token, and this text has 3,000 distinct ones (CJK ideographs, say), '
        'so the vocab cannot be smaller; ask for vocab_size 3,008 or more to silence this (the model gets an embedding row per token either way)'], res.stderr
    assert len((tmp_path / 'v' / 'vocab.txt').read_text(encoding='utf-8').splitlines()) == 3008

def test_prepare_skips_texts_with_no_token(tmp_path, tiny_vocab):
    "A zero-width space or control characters alone encode to [CLS] [SEP]: skipped like blank rows, one warning naming the first line."
    rows = ['text,label'] + [f'alpha beta item{i},{"pos" if i % 2 else "neg"}' for i in range(20)] + ['\u200b,pos', '"\x00\u2060",neg']
    (tmp_path / 'd.csv').write_text('\n'.join(rows) + '\n', encoding='utf-8')
    res = run_txc('prepare', '--input', tmp_path / 'd.csv', '--tokenizer', tiny_vocab, '--out', tmp_path / 'out', '--label-field', 'label', '--splits', '1,0,0')
    assert res.returncode == 0 and '{"train": 20}' in res.stdout, res.stdout + res.stderr
    assert res.stderr.strip().splitlines() == [f"warning: {tmp_path / 'd.csv'}: skipped 2 text(s) that hold only characters the tokenizer drops (zero-width, control or format characters), "
                                               "so they encode to [CLS] [SEP] alone (the first on line 22: '\\u200b'); fill or drop them to silence this"], res.stderr
    ids, mask, y = torch.load(tmp_path / 'out' / 'train.pt', weights_only=False).tensors
    assert len(ids) == 20 and ((~mask).sum(1) > 2).all()

def test_quickstart_bad_threads_fails_before_any_work(tmp_path):
    assert_user_error(run_txc('quickstart', '--threads', '0', '--root', tmp_path / 'qs'), '--threads: 0: use 1 or more')
    assert not (tmp_path / 'qs').exists()


@pytest.mark.skipif(not os.path.exists('/proc/stat'), reason='busy_cores reads /proc/stat (Linux); elsewhere it falls back to the load average')
def test_busy_cores_sees_a_busy_loop_beside_it():
    "busy_cores samples the kernel's CPU counters: a process spinning on one core shows up as at least most of a core."
    from txc.quickstart import busy_cores
    spin = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        time.sleep(0.3)                                                    # let it start spinning
        assert busy_cores(1.0) >= 0.7
    finally: spin.kill(); spin.wait()


def test_output_into_a_closed_pipe_is_quiet(tmp_path):
    "`txc ... | head -1`: the reader leaves early, and txc ends without a BrokenPipeError traceback, as a shell's SIGPIPE would (141)."
    (tmp_path / 'config.yaml').write_text('training:\n  lr: 0.001\n')
    exe = shutil.which('txc')
    proc = subprocess.Popen([exe, 'check', '--show', '--schema-only', *[str(tmp_path / 'config.yaml')] * 300], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(10)                              # some output, then the reader goes (300 YAML dumps: far over a pipe's buffer)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == '', (proc.returncode, err[-2000:])


def test_check_loads_the_files_a_config_names(tmp_path):
    "`txc check CONFIG` catches what would stop the run at its start: a misspelt dataset path, a pretrained run of another architecture."
    from train_entry import make_workspace, tiny_config, write_run
    ws = make_workspace(tmp_path / 'ws', n_train=16, n_val=8, n_test=8)
    good = write_run(tiny_config(ws, 'pretraining', 'pre'), tmp_path / 'pre')
    res = run_txc('check', good)
    assert res.returncode == 0 and res.stdout.startswith(f'ok {good}: pretraining'), res.stderr
    cfg = tiny_config(ws, 'pretraining', 'typo'); cfg.data.train.dataset_path = str(ws / 'data' / 'trian.pt')
    assert_user_error(run_txc('check', write_run(cfg, tmp_path / 'typo')), 'data.train.dataset_path', 'trian.pt')
    assert run_txc('check', '--schema-only', tmp_path / 'typo' / 'config.yaml').returncode == 0


def test_check_a_pipeline_before_and_after_its_pretraining_run(tmp_path):
    "A finetuning config whose pretraining run has not run yet is ok with a note; once that run has written to its output_dir, it is loaded from there."
    from train_entry import make_workspace, tiny_config, write_run
    ws, root = make_workspace(tmp_path / 'ws', n_train=16, n_val=8, n_test=8), tmp_path / 'experiments'
    pre = tiny_config(ws, 'pretraining', 'pre', epochs=1); pre.experiment.output_dir = str(tmp_path / 'outs' / 'pre')
    ft = tiny_config(ws, 'finetuning', 'ft', head=dict(num_labels=2), epochs=1); ft.pretrained_experiment = dict(name='pre')
    write_run(pre, root / 'pretraining' / 'pre'); write_run(ft, root / 'finetuning' / 'ft')
    res = run_txc('check', root / 'pretraining' / 'pre' / 'config.yaml', root / 'finetuning' / 'ft' / 'config.yaml')
    assert res.returncode == 0 and 'is not there yet' in res.stdout.splitlines()[1], (res.stdout, res.stderr)
    assert run_txc('train', '-n', 'pre', '-m', 'pretraining', '--root', root).returncode == 0
    assert (tmp_path / 'outs' / 'pre' / 'checkpoints' / 'model.ckpt').is_file()
    res = run_txc('check', root / 'finetuning' / 'ft' / 'config.yaml')
    assert res.returncode == 0 and res.stdout == f"ok {root / 'finetuning' / 'ft' / 'config.yaml'}: finetuning config 'ft'\n", (res.stdout, res.stderr)
