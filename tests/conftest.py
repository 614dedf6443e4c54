import os, shutil, subprocess
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

def run_txc(*args, cwd=None, timeout=300, input=None):
    "Run the installed `txc` console script (`input`: its stdin); return the CompletedProcess (text mode)."
    exe = shutil.which('txc')
    assert exe, 'the txc console script is not installed: pip install -e ".[dev]"'
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'HF_HUB_OFFLINE': '1'}
    return subprocess.run([exe, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, input=input)

def assert_user_error(res, *needles):
    "One line `error: ...` on stderr, exit code 2, no traceback, naming each needle."
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), res.stderr
    assert 'Traceback' not in res.stderr + res.stdout
    for n in needles: assert str(n) in lines[0], (n, lines[0])

@pytest.fixture(scope='session')
def tiny_vocab(tmp_path_factory):
    "A small WordPiece vocab trained by `txc tokenizer` on a few hundred made-up lines."
    d = tmp_path_factory.mktemp('vocab')
    words = 'alpha beta gamma delta kernel driver python library game sound video network editor font mail'.split()
    lines = [' '.join(words[(i * k) % len(words)] for k in range(1, 9)) + f' item{i % 37}' for i in range(400)]
    (d / 'corpus.txt').write_text('\n'.join(lines) + '\n')
    res = run_txc('tokenizer', '--input', d / 'corpus.txt', '--vocab-size', 128, '--out', d / 'vocab')
    assert res.returncode == 0, res.stderr
    return d / 'vocab'
