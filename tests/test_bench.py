"""`txc bench` plumbing (issue 9): the numbers it prints are computed from the right quantities.

Smoke tests only: nothing here asserts a speed (speed belongs in `txc bench` itself, on a quiet machine).
"""
import re

import pytest
import torch

from conftest import run_txc

pytest.importorskip('transformers')
from txc.bench import bench, bench_arch, bench_tokenizer, real_batches, step_flops


@pytest.fixture(scope='module')
def tok(): return bench_tokenizer()


@pytest.mark.parametrize('task', ['mlm', 'cls'])
def test_bench_numbers_are_consistent(tok, task):
    old = torch.get_num_threads()
    try: r = bench('tiny', task, repeats=2, steps=2, batch_size=4, max_length=32, threads=1, tok=tok)
    finally: torch.set_num_threads(old)
    assert len(r.ratios) == len(r.txc_tok_s) == len(r.hf_tok_s) == 2
    for t, h, q in zip(r.txc_tok_s, r.hf_tok_s, r.ratios): assert t / h == pytest.approx(q)   # same tokens on both sides
    assert r.loss_gap < 1e-4                                                                    # the same model and loss
    batches = real_batches(tok, task, 2, 4, 32, 0)                                              # the FLOPs of exactly these batches
    arch = bench_arch('tiny', tok.vocab_size, 32)
    want = sum(step_flops(arch, (~b['attention_mask']).sum(1), int((b['labels'] != -100).sum()) if task == 'mlm' else 4,
                          tok.vocab_size if task == 'mlm' else 16) for b in batches)
    assert r.flops == pytest.approx(want) and r.peak_flops > 0 and r.mfu > 0
    real = sum(int((~b['attention_mask']).sum()) for b in batches)
    assert r.txc_tok_s[0] == pytest.approx(real / r.txc_secs[0])


def test_txc_bench_cli_end_to_end():
    res = run_txc('bench', '--preset', 'tiny', '--task', 'mlm', 'finetune', '--repeats', '1', '--steps', '1',
                  '--batch-size', '4', '--max-length', '32', '--threads', '1', '--layout', 'packed', 'padded', timeout=600)
    assert res.returncode == 0, res.stderr
    rows = [l for l in res.stdout.splitlines() if 'ratio' in l]
    assert [(r.split()[0], r.endswith('(txc padded)')) for r in rows] == [('mlm', False), ('mlm', True), ('finetune', False), ('finetune', True)], res.stdout
    assert all(r.endswith('(txc packed)') for r in rows[::2]), res.stdout
    for r in rows:
        gap = float(re.search(r'loss gap (\S+)', r).group(1))
        assert gap < 1e-4 and re.search(r'ratio +[\d.]+x', r) and 'MFU' in r, r


def test_bench_compile_wraps_only_the_txc_side(tok, monkeypatch):
    "`--compile` hands the txc model (not transformers') to torch.compile, and the row says so."
    from txc.heads import MaskedLM
    seen = []
    monkeypatch.setattr(torch, 'compile', lambda m, **kw: seen.append((type(m), kw)) or m)
    old = torch.get_num_threads()
    run = lambda **kw: bench('tiny', 'mlm', repeats=1, steps=1, batch_size=4, max_length=32, threads=1, tok=tok, **kw)
    try: compiled, eager = run(compile=True), run()
    finally: torch.set_num_threads(old)
    assert seen == [(MaskedLM, {'dynamic': True})]                       # once, for the compiled run's txc model only
    assert compiled.compiled and compiled.row().endswith('(txc compiled)') and compiled.loss_gap < 1e-4
    assert not eager.compiled and not eager.row().endswith('(txc compiled)')


def test_bench_amp_is_refused_on_cpu(tok):
    "txc trains in fp32 on a CPU (training.use_amp is CUDA-only), so `--amp` wants CUDA: a CPU bench under bf16 would time a precision txc does not train in."
    from conftest import assert_user_error
    assert_user_error(run_txc('bench', '--amp', '--preset', 'tiny'), '--amp', '--device cuda')
    with pytest.raises(ValueError, match='CUDA'): bench('tiny', 'mlm', repeats=1, steps=1, batch_size=4, max_length=32, tok=tok, amp=True)
