"""The bad-input catalogue (`tests/bad_inputs.py`, rendered in `nbs/12_errors.ipynb`) through the real commands:
each case gives one line `error: ...` naming the file/field/value, exit code 2, no traceback, and writes nothing in
any existing run dir (no checkpoint, metric or lock file created, changed or left behind); a hostile pickle never runs.
The cases run two at a time, each in its own copy of a workspace that holds a finished pretraining and finetuning run."""
import os, shutil, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from bad_inputs import ROOT, CASES, MARKER, Evil, set_keys, check_result, make_workspace, run_case, run_subprocess, write_config


@pytest.fixture(scope='module')
def template(tmp_path_factory): return make_workspace(tmp_path_factory.mktemp('template'))


@pytest.fixture(scope='module')
def results(template, tmp_path_factory):
    "Every case's result, keyed by name: run concurrently, since most of each case is Python and torch starting up."
    root = tmp_path_factory.mktemp('cases')
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2)) as pool:
        futures = {c.name: pool.submit(run_case, c, template, root / c.name, run_subprocess) for c in CASES}
    out = {name: f.result() for name, f in futures.items()}
    print(f'\n{len(CASES)} bad-input cases in {time.time() - t0:.0f}s')
    return out


def test_catalogue_is_big_and_unique():
    names = [c.name for c in CASES]
    assert len(names) >= 25 and len(set(names)) == len(names)
    assert all(c.needles for c in CASES)


@pytest.mark.parametrize('case', CASES, ids=[c.name for c in CASES])
def test_bad_input(case, results):
    check_result(case, results[case.name])


def test_the_hostile_payload_is_live(tmp_path):
    "The catalogue's hostile files would create the marker if unpickled the unsafe way: the refusals above are real."
    torch.save({'model': {}, 'config': Evil(tmp_path / MARKER)}, tmp_path / 'evil.ckpt')
    assert not (tmp_path / MARKER).exists()
    torch.load(tmp_path / 'evil.ckpt', weights_only=False)
    assert (tmp_path / MARKER).exists()


def test_use_amp_on_cpu_is_one_warning_line_and_fp32(template, tmp_path):
    "Not an error (see nbs/12_errors.ipynb for why): one line `warning: ...`, and the run finishes in fp32."
    ws = tmp_path / 'ws'; shutil.copytree(template, ws)
    write_config(ws, 'pretraining', 'amp', set_keys(training__use_amp=True))
    res = subprocess.run([sys.executable, str(ROOT / 'train.py'), '-n', 'amp', '-m', 'pretraining'], cwd=ws, capture_output=True,
                         text=True, env={**os.environ, 'CUDA_VISIBLE_DEVICES': '', 'OMP_NUM_THREADS': '1'}, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.strip().splitlines() == ['warning: training.use_amp applies to CUDA only; training in fp32 on cpu']
    assert (ws / 'experiments/pretraining/amp/checkpoints/model.ckpt').is_file()
