"""The run panel driven headless, as a person would drive it: set widget values, click buttons.
Save writes the config through the generators; an invalid value disables Launch; Launch trains in a thread;
Stop ends the run at a step boundary with a full checkpoint, and the run resumes from it exactly."""
import math, threading, warnings

import pytest
import torch

from txc.checkpoint import load_checkpoint
from txc.config_io import load_config
from txc.loggers import read_csv
from txc.experiments import demo_experiments
from txc.panel import RunPanel
from txc.trainer import Callback


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    torch.set_num_threads(1)
    return demo_experiments(tmp_path_factory.mktemp('panel') / 'experiments')


def new_run(panel, kind, name, **values):
    "Choose `kind` from its template, name the run, set fields by dotted key."
    panel.kind.value, panel.source.value = kind, ''
    for k, v in values.items(): panel.w[k].value = v
    panel.w['experiment.name'].value = name


def test_save_writes_config(root):
    p = RunPanel(root)
    new_run(p, 'pretraining', 'saved', **{'training.lr': 0.0025, 'training.epochs': 3, 'training.batch_size': 8, 'architecture.preset': 'mini',
                                          'data.test.dataset_path': '', 'logging.use_wandb': True, 'logging.log_eval_metrics': False})
    assert not p.save_btn.disabled
    p.save_btn.click()
    cfg = load_config(root / 'pretraining' / 'saved' / 'config.yaml')
    assert (cfg.experiment.name, cfg.experiment.kind, cfg.training.lr, cfg.training.epochs, cfg.training.batch_size) == ('saved', 'pretraining', 0.0025, 3, 8)
    assert (cfg.architecture.preset, cfg.architecture.hidden_size, cfg.architecture.num_layers) == ('mini', 256, 4)
    assert cfg.data.test.dataset_path is None and cfg.data.train.dataset_path.endswith('pretraining/train.pt')
    assert (cfg.logging.use_wandb, cfg.logging.log_eval_metrics) == (True, False)
    assert p.source.value == 'saved'  # the saved experiment is now what the panel edits
    p.w['training.lr'].value = 0.001; p.save_btn.click()  # saving again edits it in place
    assert load_config(root / 'pretraining' / 'saved' / 'config.yaml').training.lr == 0.001


def test_finetuning_save_copies_pretrained_architecture(root):
    p = RunPanel(root)
    new_run(p, 'pretraining', 'pre_small', **{'training.max_steps': 4})
    p.save_btn.click()
    new_run(p, 'finetuning', 'ft_saved')
    assert 'choose the pretraining run' in p.errors['pretrained_experiment.name'].value and p.launch_btn.disabled
    p.w['pretrained_experiment.name'].value = 'pre_small'
    p.w['training.lr'].value = 5e-5
    p.save_btn.click()
    cfg = load_config(root / 'finetuning' / 'ft_saved' / 'config.yaml')
    assert (cfg.pretrained_experiment.name, cfg.training.lr, cfg.architecture.hidden_size, cfg.classification_head.num_labels) == ('pre_small', 5e-5, 32, 2)


def test_invalid_value_shows_error_and_disables_launch(root):
    p = RunPanel(root)
    new_run(p, 'pretraining', 'invalid', **{'training.lr': -1})
    assert 'greater than 0' in p.errors['training.lr'].value
    assert p.launch_btn.disabled and p.save_btn.disabled
    p.launch_btn.click(); p.save()  # neither does anything
    assert p.thread is None and not (root / 'pretraining' / 'invalid').exists()
    p.w['training.batch_size'].value = 0
    assert 'greater than or equal to 1' in p.errors['training.batch_size'].value
    p.w['training.lr'].value, p.w['training.batch_size'].value = 1e-3, 16
    assert not p.launch_btn.disabled and p.errors['training.lr'].value == p.errors['training.batch_size'].value == ''


def test_existing_name_is_not_overwritten(root):
    p = RunPanel(root)
    new_run(p, 'pretraining', 'taken'); p.save_btn.click()
    new_run(p, 'pretraining', 'taken', **{'training.lr': 0.5}); p.save_btn.click()
    assert 'already exists' in p.message
    assert load_config(root / 'pretraining' / 'taken' / 'config.yaml').training.lr != 0.5


def test_launch_tiny_run(root):
    p = RunPanel(root)
    new_run(p, 'pretraining', 'launched', **{'training.max_steps': 8})
    p.launch_btn.click()
    assert p.running and not p.stop_btn.disabled and p.launch_btn.disabled
    assert p.wait(300) and p.error is None, p.message
    run = root / 'pretraining' / 'launched'
    assert sorted(c.name for c in (run / 'checkpoints').glob('*.ckpt')) == ['best-model.ckpt', 'last.ckpt', 'model.ckpt']
    assert [r['step'] for r in read_csv(run / 'metrics' / 'train' / 'train.csv')] == list(range(1, 9))
    assert (p.trainer.step, p.progress.value, p.progress.max) == (8, 8, 8)
    assert bytes(p.curve.value[:4]) == b'\x89PNG' and '<td>val</td>' in p.table.value
    assert not p.running and p.stop_btn.disabled and not p.launch_btn.disabled
    assert 'finished at step 8' in p.message


class HoldAt(Callback):
    "Hold the training thread at step `n` until the panel's Stop was clicked: makes the stop step deterministic."
    order = 95
    def __init__(self, panel, n): self.panel, self.n, self.reached = panel, n, threading.Event()
    def after_step(self, t):
        if t.step == self.n: self.reached.set(); self.panel.stop_flag.wait(60)


def test_stop_writes_full_checkpoint_and_resume_continues(root):
    p = RunPanel(root)
    new_run(p, 'pretraining', 'stopped')  # 2 epochs x 20 steps
    p.callbacks = [hold := HoldAt(p, 5)]
    p.launch_btn.click()
    assert hold.reached.wait(300), p.message
    p.stop_btn.click()  # while the thread runs
    assert p.wait(300) and p.error is None, p.message
    run = root / 'pretraining' / 'stopped'
    total = p.trainer.total_steps
    assert p.trainer.step == 6 < total and 'stopped at step 6' in p.message  # the next step boundary
    ck = load_checkpoint(run / 'checkpoints' / 'last.ckpt')
    assert ck['kind'] == 'full' and ck['trainer']['step'] == 6 and ck['trainer']['batch_in_epoch'] == 6
    assert {'optimizer', 'scheduler', 'rng'} <= set(ck) and not (run / 'checkpoints' / 'model.ckpt').is_file()  # stopped, not finished
    stopped_rows = read_csv(run / 'metrics' / 'train' / 'train.csv')
    assert [r['step'] for r in stopped_rows] == list(range(1, 7))

    p.callbacks = []
    p.cont.value = True  # continue from checkpoints/last.ckpt, full state
    p.launch_btn.click()
    assert p.wait(300) and p.error is None, p.message
    r = load_config(run / 'config.yaml').training.resume
    assert (r.is_resume, r.checkpoint_path, r.load_only_model_state) == (True, 'checkpoints/last.ckpt', False)
    assert p.start_step == 6 and p.trainer.step == total
    rows = read_csv(run / 'metrics' / 'train' / 'train.csv')
    assert [r['step'] for r in rows] == [r['step'] for r in p.train_rows] == list(range(1, total + 1))  # the curve: the whole run, not steps 7.. only

    # the same run unbroken: the resumed losses are the same numbers
    new_run(p, 'pretraining', 'unbroken')
    p.launch_btn.click()
    assert p.wait(300) and p.error is None, p.message
    ref = read_csv(root / 'pretraining' / 'unbroken' / 'metrics' / 'train' / 'train.csv')
    assert all(math.isclose(a['loss'], b['loss'], rel_tol=1e-5) for a, b in zip(rows, ref)), [(a['loss'], b['loss']) for a, b in zip(rows, ref)][5:9]


def test_run_error_is_shown_not_raised(root):
    p = RunPanel(root)
    new_run(p, 'pretraining', 'missing_data', **{'data.train.dataset_path': str(root / 'nowhere.pt')})
    p.launch_btn.click()
    assert p.wait(300)
    assert 'nowhere.pt' in str(p.error) and 'nowhere.pt' in p.message and 'color:#c00' in p.status.value
    assert not p.running and not p.launch_btn.disabled  # the panel is usable again


def finished_run(root, name):
    "A panel that has just trained pretraining run `name` (2 steps) to the end, and its run dir."
    p = RunPanel(root)
    new_run(p, 'pretraining', name, **{'training.max_steps': 2})
    p.launch_btn.click()
    assert p.wait(300) and p.error is None, p.message
    return p, root / 'pretraining' / name


def test_launch_refuses_to_overwrite_a_finished_run(root):
    "Launching a finished run again is refused with train_experiment's message, as `txc train -n NAME` refuses it; nothing is written."
    p, run = finished_run(root, 'finished')
    files = [run / 'config.yaml', *sorted(run.rglob('*.ckpt')), *sorted(run.rglob('*.csv'))]
    before = [f.stat().st_mtime_ns for f in files]
    assert p.source.value == 'finished' and not p.launch_btn.disabled
    thread = p.thread
    p.launch_btn.click()
    assert p.thread is thread and not p.running
    assert 'has finished' in p.message and 'color:#c00' in p.status.value
    assert [f.stat().st_mtime_ns for f in files] == before


def test_save_does_not_edit_a_run_with_checkpoints(root):
    "A run that holds checkpoints keeps the config.yaml they were trained with: Save asks for a new name; saving unchanged writes nothing."
    p, run = finished_run(root, 'kept')
    cfg_path = run / 'config.yaml'
    text, mtime = cfg_path.read_text(), cfg_path.stat().st_mtime_ns
    p.save_btn.click()
    assert 'nothing changed' in p.message and cfg_path.stat().st_mtime_ns == mtime
    p.w['training.lr'].value = 0.0042; p.save_btn.click()
    assert 'change the name' in p.message and 'color:#c00' in p.status.value and cfg_path.read_text() == text
    p.w['experiment.name'].value = 'kept_copy'; p.save_btn.click()
    assert p.source.value == 'kept_copy' and load_config(root / 'pretraining' / 'kept_copy' / 'config.yaml').training.lr == 0.0042


def test_changing_the_pretrained_run_takes_its_architecture(root):
    "An existing finetuning run re-pointed at another pretraining run gets that run's tokenizer and architecture, as generate_finetuning_experiment -p copies them."
    from txc.experiments import generate_finetuning_experiment
    p = RunPanel(root)
    new_run(p, 'pretraining', 'preA'); p.save_btn.click()
    new_run(p, 'pretraining', 'preB', **{'architecture.preset': 'tiny'}); p.save_btn.click()
    new_run(p, 'finetuning', 'ft_b', **{'pretrained_experiment.name': 'preB'}); p.save_btn.click()
    assert load_config(root / 'finetuning' / 'ft_b' / 'config.yaml').architecture.hidden_size == 128
    p.source.value = 'ft_b'; p.w['experiment.name'].value = 'ft_a'
    p.w['pretrained_experiment.name'].value = 'preA'
    p.save_btn.click()
    ft, gen = load_config(root / 'finetuning' / 'ft_a' / 'config.yaml'), load_config(generate_finetuning_experiment('ft_a_gen', 'preA', root=root))
    assert (ft.tokenizer, ft.architecture, ft.pretrained_experiment) == (gen.tokenizer, gen.architecture, gen.pretrained_experiment)
    assert ft.architecture.hidden_size == 32
    p.source.value = 'ft_b'  # choosing the other run again shows its own pretrained run, not the last one picked
    assert (p.w['pretrained_experiment.name'].value, p.config.architecture.hidden_size) == ('preB', 128)


class WarnAt(Callback):
    "At step `n`, warn from the training thread, then hold it until `go` is set: the main thread warns meanwhile."
    order = 95
    def __init__(self, n): self.n, self.reached, self.go = n, threading.Event(), threading.Event()
    def after_step(self, t):
        if t.step == self.n: warnings.warn('from the training thread'); self.reached.set(); self.go.wait(60)


def test_run_warnings_go_to_the_panel_each_run(root, recwarn):
    "A warning of the training thread is listed in the panel (not on stderr, not in the main thread's record), and again in the next run; the main thread's warnings stay the main thread's."
    p = RunPanel(root)
    for name in ('warns1', 'warns2'):
        new_run(p, 'pretraining', name, **{'architecture.vocab_size': 192, 'training.max_steps': 4})  # legal, 64 rows unused: training warns
        p.callbacks = [gate := WarnAt(2)]
        p.launch_btn.click()
        assert gate.reached.wait(300), p.message
        warnings.warn(f'main thread during {name}')  # while the run holds at step 2
        gate.go.set()
        assert p.wait(300) and p.error is None, p.message
        assert [w.split(':')[0] for w in p.run_warnings] == ['UserWarning'] * 2, p.run_warnings
        assert 'architecture.vocab_size = 192' in p.run_warnings[0] and p.run_warnings[1] == 'UserWarning: from the training thread'
        assert p.message.endswith('2 warning(s), below') and 'from the training thread' in p.notes.value
    assert [str(w.message) for w in recwarn] == ['main thread during warns1', 'main thread during warns2']
