"""The CUDA / AMP path of the trainer: skipped on machines without CUDA (CI passes without a GPU).
On a GPU: bf16 autocast where supported, fp16 with a GradScaler otherwise, checkpoints that load on CPU."""
import math

import pytest
import torch

from train_entry import make_workspace, tiny_config
from txc.checkpoint import load_checkpoint
from txc.loggers import read_csv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


@pytest.fixture(scope='module')
def ws(tmp_path_factory): return make_workspace(tmp_path_factory.mktemp('ws'))


@pytest.mark.parametrize('bf16', [True, False])
def test_amp_on_cuda(ws, tmp_path, monkeypatch, bf16):
    from txc.training import train
    if not bf16: monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: False)
    cfg = tiny_config(ws, 'finetuning', 'gpu', device='auto', use_amp=True, num_threads=None, checkpoint_every_n_steps=5)
    t = train(cfg, tmp_path / 'gpu')
    assert t.device.type == 'cuda' and next(t.raw_model.parameters()).is_cuda
    expect = torch.bfloat16 if bf16 and torch.cuda.is_bf16_supported() else torch.float16
    assert t.precision.dtype == expect and t.precision.scaler.is_enabled() == (expect == torch.float16)
    rows = read_csv(tmp_path / 'gpu/metrics/train/train.csv')
    assert len(rows) == t.step and all(math.isfinite(r['loss']) for r in rows)
    last = load_checkpoint(tmp_path / 'gpu/checkpoints/last.ckpt')            # map_location cpu
    assert bool(last['scaler']) == (expect == torch.float16)
    assert all(v.device.type == 'cpu' for v in last['model'].values())
    assert len(read_csv(tmp_path / 'gpu/metrics/eval/test.csv')) == 1
    print(f"{torch.cuda.get_device_name()}: {expect}, {t.step} steps, loss {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}, "
          f"{rows[-1]['tokens_per_s']:.0f} tok/s")


@pytest.mark.parametrize('amp', [True, False])
def test_bench_on_cuda(amp):
    "`txc bench --device cuda [--amp]`: both sides on the GPU, the same loss at equal weights, the row says bf16 when it is."
    pytest.importorskip('transformers')
    from txc.bench import bench, bench_tokenizer
    r = bench('tiny', 'mlm', repeats=2, steps=2, batch_size=8, max_length=64, device='cuda', tok=bench_tokenizer(), amp=amp)
    assert r.loss_gap < 1e-4 and r.peak_flops > 1e12 and 0 < r.mfu < 1
    assert r.row().endswith('(bf16 autocast)') == amp
    print(r.row())
