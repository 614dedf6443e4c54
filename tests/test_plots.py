"""`plot_metrics` and `plot_confusion` on the CSVs of real (tiny) pretraining and finetuning runs: the lines, axes and
matrix the figures hold, not just that they draw."""
import matplotlib
matplotlib.use('Agg')
import pytest
import torch

from txc.config import DataError
from txc.config_io import load_config
from txc.experiments import generate_finetuning_experiment, generate_pretraining_experiment
from txc.loggers import read_csv
from txc.experiments import demo_experiments
from txc.plots import plot_confusion, plot_metrics, read_confusion
from txc.quickstart import configure
from txc.training import train


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    root = demo_experiments(tmp_path_factory.mktemp('plots') / 'experiments')
    pre = configure(generate_pretraining_experiment('pre', root=root), dict(training=dict(max_steps=10, eval_every_n_steps=5)))
    train(load_config(pre), pre.parent)
    ft = configure(generate_finetuning_experiment('ft', 'pre', root=root), dict(training=dict(epochs=2)))
    train(load_config(ft), ft.parent)
    return pre.parent, ft.parent


def labels(ax): return [l.get_label() for l in ax.lines]


def test_pretraining_curves(runs):
    fig = plot_metrics(runs[0])
    loss, score, lr = fig.axes
    assert labels(loss) == ['train', 'val'] and labels(score) == ['val accuracy'] and labels(lr) == ['lr']
    assert list(loss.lines[0].get_xdata()) == list(range(1, 11))
    assert list(loss.lines[1].get_xdata()) == [5, 10]  # eval every 5 steps
    val = read_csv(runs[0] / 'metrics' / 'eval' / 'val.csv')
    assert list(loss.lines[1].get_ydata()) == [r['loss'] for r in val]
    assert [(a.get_xlabel(), a.get_ylabel()) for a in fig.axes] == [('step', 'loss'), ('step', 'score'), ('step', 'learning rate')]
    assert fig.get_suptitle() == 'pre'


def test_finetuning_curves_and_confusion(runs):
    fig = plot_metrics(runs[1])
    loss, score, _ = fig.axes
    assert labels(loss) == ['train', 'val', 'test']
    assert labels(score) == ['val accuracy', 'val macro_f1', 'test accuracy', 'test macro_f1']
    assert list(score.lines[0].get_xdata()) == [10, 20, 30, 40] and list(score.lines[2].get_xdata()) == [40]  # val every 10 steps, test once at the end

    fig = plot_confusion(runs[1], 'test')
    ax = fig.axes[0]
    names, cm = read_confusion(runs[1] / 'metrics' / 'eval' / 'test_confusion.csv')
    assert names == ['games', 'net'] and sum(map(sum, cm)) == 64
    assert [t.get_text() for t in ax.get_xticklabels()] == names and (ax.get_xlabel(), ax.get_ylabel()) == ('predicted', 'true')
    shown = ax.images[0].get_array()
    assert shown.shape == (2, 2) and all(abs(sum(r) - 1) < 1e-9 for r in shown.tolist())  # row-normalised
    acc = read_csv(runs[1] / 'metrics' / 'eval' / 'test.csv')[-1]['accuracy']
    assert ax.get_title() == f'test: accuracy {acc:.3f}'


def test_missing_metrics_are_errors(runs, tmp_path):
    with pytest.raises(DataError, match='log_metrics_csv'): plot_metrics(tmp_path)
    with pytest.raises(DataError, match='test_confusion.csv'): plot_confusion(runs[0], 'test')  # pretraining: no confusion
