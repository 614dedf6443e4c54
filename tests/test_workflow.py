"The seed's Cheat Sheet, command for command, as subprocesses, with the config edits a user would make in between."
import csv, json, shlex, subprocess, sys
import yaml
from conftest import ROOT, run_txc

def run_py(script, *args, cwd):
    res = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (script, args, res.stdout, res.stderr)
    return res

def edit_config(path, edit):
    "Load config.yaml as plain YAML, let `edit` change the dict, write it back — what a user does in an editor."
    data = yaml.safe_load(path.read_text()); edit(data); path.write_text(yaml.safe_dump(data, sort_keys=False))

def rows(path): return list(csv.DictReader(open(path)))

def make_data(d):
    "A tiny vocab, MLM datasets and labelled datasets through `txc tokenizer` and `txc prepare`."
    words = 'kernel driver python library sound video network editor font mail synth audio codec'.split()
    lines = [('chess game ' if i % 2 else '') + ' '.join(words[(i * k + j) % len(words)] for j in range(8)) for i in range(120) for k in (1, 3)]
    (d / 'corpus.txt').write_text('\n'.join(lines) + '\n')
    label = lambda l: 'games' if l.startswith('chess') else 'audio' if 'audio' in l else 'other'   # 3 labels: not the template's 2
    labelled = [json.dumps(dict(text=l, label=label(l))) for l in lines]
    (d / 'labelled.jsonl').write_text('\n'.join(labelled) + '\n')
    assert run_txc('tokenizer', '--input', d / 'corpus.txt', '--vocab-size', 128, '--out', d / 'vocab', '--max-length', 32).returncode == 0
    for src, out, extra in [('corpus.txt', 'mlm', []), ('labelled.jsonl', 'data/finetuning', ['--label-field', 'label'])]:   # the README's layout
        res = run_txc('prepare', '--input', d / src, '--tokenizer', d / 'vocab', '--out', d / out, '--max-length', 32, *extra)
        assert res.returncode == 0, res.stderr
    return json.loads((d / 'vocab' / 'tokenizer.json').read_text())

def tiny(d, data_dir, kind):
    def edit(c):
        c['tokenizer']['vocab_dir'] = str(d / 'vocab'); c['tokenizer']['max_length'] = 32
        c['architecture'] = dict(vocab_size=128, hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=64)
        c['logging'].update(log_metrics_csv=True, progress_bar=False, log_every_n_steps=1)
        c['training'].update(epochs=1, max_steps=6, batch_size=16, eval_every_n_steps=3)
        c['data'] = {s: {'dataset_path': str(d / data_dir / f'{s}.pt')} for s in ('train', 'val', 'test')}
        if kind == 'finetuning': c['data']['labels_path'] = str(d / data_dir / 'labels.json')   # num_labels: the generator's
    return edit

def test_cheat_sheet(tmp_path, monkeypatch, capsys):
    d = tmp_path
    make_data(d)
    exp = d / 'experiments'
    run_py('experiments/generate_pretraining_experiment.py', '-p', 'pre_v1', cwd=d)
    run_py('experiments/generate_pretraining_experiment.py', '-p', 'pre_v1b', '-rp', 'pre_v1', cwd=d)
    for name in ('pre_v1', 'pre_v1b'): edit_config(exp / 'pretraining' / name / 'config.yaml', tiny(d, 'mlm', 'pretraining'))
    run_py('train.py', '-n', 'pre_v1', '-m', 'pretraining', cwd=d)
    run_py('train.py', '-n', 'pre_v1b', '-m', 'pretraining', cwd=d)
    res = run_py('experiments/generate_finetuning_experiment.py', '-f', 'ft_v1', '-p', 'pre_v1', cwd=d)
    assert res.stderr.splitlines() == ['warning: classification_head.num_labels set to 3, from data/finetuning/labels.json (the template said 2)']
    assert yaml.safe_load((exp / 'finetuning' / 'ft_v1' / 'config.yaml').read_text())['classification_head']['num_labels'] == 3
    edit_config(exp / 'finetuning' / 'ft_v1' / 'config.yaml', tiny(d, 'data/finetuning', 'finetuning'))
    run_py('train.py', '-n', 'ft_v1', '-m', 'finetuning', cwd=d)

    for run in (exp / 'pretraining' / 'pre_v1', exp / 'pretraining' / 'pre_v1b', exp / 'finetuning' / 'ft_v1'):
        assert (run / 'config.yaml').is_file()
        assert (run / 'checkpoints' / 'model.ckpt').is_file() and (run / 'checkpoints' / 'best-model.ckpt').is_file()
        assert list((run / 'metrics' / 'train').glob('*.csv')) and list((run / 'metrics' / 'eval').glob('*.csv'))
    pre_steps = [int(r['step']) for r in rows(exp / 'pretraining' / 'pre_v1' / 'metrics' / 'train' / 'train.csv')]
    resumed = [int(r['step']) for r in rows(exp / 'pretraining' / 'pre_v1b' / 'metrics' / 'train' / 'train.csv')]
    assert pre_steps == list(range(1, 7)) and resumed[0] == pre_steps[-1] + 1, (pre_steps, resumed)   # pre_v1b continues pre_v1's count
    test = rows(exp / 'finetuning' / 'ft_v1' / 'metrics' / 'eval' / 'test.csv')
    assert len(test) == 1 and 0 <= float(test[0]['macro_f1']) <= 1

    res = run_txc('predict', '-n', 'ft_v1', '--text', 'chess game engine', '--text', 'audio codec library', cwd=d)
    assert res.returncode == 0, res.stderr
    preds = [json.loads(l) for l in res.stdout.splitlines()]
    assert [p['text'] for p in preds] == ['chess game engine', 'audio codec library']
    assert all(p['label'] in ('games', 'audio', 'other') and abs(sum(p['probabilities'].values()) - 1) < 1e-5 for p in preds)
    res = run_txc('predict', '-n', 'ft_v1', '-n', 'experiments/finetuning/ft_v1', '--text', 'chess game engine', '--text', 'audio codec library', cwd=d)
    assert res.returncode == 0, res.stderr                                   # an ensemble of a run with itself is that run
    both = [json.loads(l) for l in res.stdout.splitlines()]
    assert [b['label'] for b in both] == [p['label'] for p in preds]
    assert all(abs(b['probabilities'][k] - p['probabilities'][k]) < 1e-5 for b, p in zip(both, preds) for k in p['probabilities'])
    od = exp / 'finetuning' / 'od'; od.mkdir()                              # an experiment dir whose config sends its outputs to ft_v1's dir
    cfg = yaml.safe_load((exp / 'finetuning' / 'ft_v1' / 'config.yaml').read_text()); cfg['experiment']['output_dir'] = str(exp / 'finetuning' / 'ft_v1')
    (od / 'config.yaml').write_text(yaml.safe_dump(cfg))
    res = run_txc('predict', '-n', od, '--text', 'chess game engine', '--text', 'audio codec library', cwd=d)
    assert res.returncode == 0 and [json.loads(l)['label'] for l in res.stdout.splitlines()] == [p['label'] for p in preds], res.stderr
    res = run_txc('predict', '-n', 'ft_v1', '-n', 'ft_v1', '--score', 'data/finetuning/test.pt', cwd=d)   # the test split's metrics, as test.csv has them
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert abs(got['macro_f1'] - float(test[0]['macro_f1'])) < 1e-9 and abs(got['accuracy'] - float(test[0]['accuracy'])) < 1e-9, (got, test)
    (d / 'texts.txt').write_text('chess game engine\n\nsynth audio\n')
    res = run_txc('predict', '-n', 'ft_v1', '--input', d / 'texts.txt', '--threads', '1', cwd=d)
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 2, res.stderr
    assert [json.loads(l)['line'] for l in res.stdout.splitlines()] == [1, 3]    # the input line of each text: blank lines are skipped
    assert res.stderr == '', res.stderr
    alien = run_txc('predict', '-n', 'ft_v1', '--text', 'chess game engine', '--text', 'Шахматная программа', cwd=d)   # a script the vocab lacks
    assert alien.returncode == 0 and len(alien.stdout.splitlines()) == 2, alien.stderr     # labelled, with one warning
    assert alien.stderr.splitlines() == ["warning: 1 of 2 texts are mostly [UNK] to the run's vocab (at least half their tokens; the first is "
                                       "--text 'Шахматная программа'): a script or language the vocab was not trained on, so their labels are guesses"]
    piped = run_txc('predict', '-n', 'ft_v1', '--input', '-', cwd=d, input=(d / 'texts.txt').read_text())   # '-': the texts from stdin
    assert piped.returncode == 0 and piped.stdout == res.stdout, piped.stderr
    (d / 'texts.csv').write_text('section,body\nx,chess game engine\ny,synth audio\n')
    from_csv = run_txc('predict', '-n', 'ft_v1', '--input', d / 'texts.csv', '--text-field', 'body', cwd=d)
    assert from_csv.returncode == 0, from_csv.stderr
    csv_out, txt_out = ([json.loads(l) for l in r.stdout.splitlines()] for r in (from_csv, res))
    assert [o.pop('line') for o in csv_out] == [2, 3] and csv_out == [{k: v for k, v in o.items() if k != 'line'} for o in txt_out]

    from txc import cli                                                      # in process: Ctrl-C during the second chunk keeps the first
    from txc.predict import Predictor
    real, calls = Predictor.predict, []
    def interrupted_at_2(self, texts, *a, **kw):
        calls.append(texts)
        if len(calls) == 2: raise KeyboardInterrupt
        return real(self, texts, *a, **kw)
    monkeypatch.chdir(d); monkeypatch.setattr(cli, 'PREDICT_CHUNK', 1); monkeypatch.setattr(Predictor, 'predict', interrupted_at_2)
    capsys.readouterr()
    assert cli.main(['predict', '-n', 'ft_v1', '--input', str(d / 'texts.txt')]) == 130
    assert capsys.readouterr().out == res.stdout.splitlines(True)[0]          # printed and flushed before the interruption

HEADER = '  test                accuracy  macro-F1'
def score_rows(stdout):
    "The quickstart table's rows for its three classifiers and the MLM validation accuracy."
    lines = stdout.splitlines(); h = lines.index(HEADER)
    return lines[h + 1:h + 5]

def test_quickstart_smoke(tmp_path):
    res = run_txc('quickstart', '--preset', 'smoke', '--root', tmp_path / 'qs', '--no-progress', '--threads', '1', timeout=900)
    assert res.returncode == 0, res.stderr
    from txc.config_io import load_config
    runs = (('pretraining', 'quickstart_pre'), ('finetuning', 'quickstart_ft'), ('finetuning', 'quickstart_scratch'))
    cfgs = [load_config(tmp_path / 'qs' / 'experiments' / kind / name / 'config.yaml') for kind, name in runs]
    assert [c.training.num_threads for c in cfgs] == [1, 1, 1]                                # --threads reaches every run
    assert (cfgs[1].pretrained_experiment.name, cfgs[2].pretrained_experiment.name) == ('quickstart_pre', None)   # scratch: a random init
    assert cfgs[1].model_dump(exclude={'experiment', 'pretrained_experiment'}) == cfgs[2].model_dump(exclude={'experiment', 'pretrained_experiment'})
    table = res.stdout.splitlines()
    rows3 = score_rows(res.stdout)[:3]
    assert [l[:20].strip() for l in rows3] == ['MLM + finetuning', 'from scratch', 'ensemble of both'], table
    assert all(0 <= float(x) <= 1 for l in rows3 for x in l[20:].split())
    ft = tmp_path / 'qs' / 'experiments' / 'finetuning' / 'quickstart_ft'
    assert (ft / 'checkpoints' / 'model.ckpt').is_file() and (ft / 'metrics' / 'eval' / 'test.csv').is_file()
    predict = shlex.split(table[-1].split(': ', 1)[1].replace('...', 'a tiling window manager'))   # the printed ensemble command works
    assert predict[:2] == ['txc', 'predict'] and predict.count('-n') == 2, table[-1]
    out = run_txc(*predict[1:])
    assert out.returncode == 0 and json.loads(out.stdout)['label'], out.stderr

def test_quickstart_ctrl_c_then_resume_matches_an_unbroken_run(tmp_path):
    "Ctrl-C in the quickstart's pretraining saves its state; `--resume` finishes it with the unbroken run's metrics, to the byte."
    import os, signal, time
    args = ['quickstart', '--preset', 'smoke', '--no-progress', '--threads', '1']
    full, cut = tmp_path / 'full', tmp_path / 'cut'
    first = run_txc(*args, '--root', full, timeout=900)
    assert first.returncode == 0, first.stderr
    proc = subprocess.Popen([sys.executable, '-c', 'import sys; from txc.cli import main; sys.exit(main())', *args, '--root', str(cut)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # even if CI started us with Ctrl-C ignored
    pre, deadline = cut / 'experiments/pretraining/quickstart_pre', time.time() + 600
    while not (pre / 'metrics/train/train.csv').exists() and proc.poll() is None and time.time() < deadline: time.sleep(0.01)
    assert proc.poll() is None, ('the quickstart ended before Ctrl-C', proc.communicate())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 130 and 'Traceback' not in err, (proc.returncode, err[-3000:])
    last = err.strip().splitlines()[-1]
    assert last.startswith('interrupted: stopped at step ') and last.endswith('run the same txc quickstart command with --resume'), last
    assert json.loads((cut / 'quickstart.json').read_text())['done'] == ['tokenizer', 'datasets']
    assert not (pre / 'checkpoints/model.ckpt').exists() and (pre / 'checkpoints/last.ckpt').exists()
    assert run_txc(*args, '--root', cut).returncode == 2                       # without --resume it refuses to overwrite
    res = run_txc(*args, '--root', cut, '--resume', timeout=900)
    assert res.returncode == 0, res.stderr
    assert '== tokenizer: finished before' in res.stdout
    assert score_rows(res.stdout) == score_rows(first.stdout)                     # the three classifiers and MLM, as printed
    for kind, name in (('pretraining', 'quickstart_pre'), ('finetuning', 'quickstart_ft'), ('finetuning', 'quickstart_scratch')):
        a, b = full / 'experiments' / kind / name / 'metrics', cut / 'experiments' / kind / name / 'metrics'
        for f in sorted(p.relative_to(a) for p in (a / 'eval').iterdir()): assert (a / f).read_bytes() == (b / f).read_bytes(), f
        loss = lambda d: [(r['step'], r['loss']) for r in rows(d / 'train' / 'train.csv')]
        assert loss(a) == loss(b), kind
