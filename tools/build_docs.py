#!/usr/bin/env python
"""Build the txc docs site from the notebooks into `_docs/`, offline.

Where Quarto is on PATH this is nbdev's own `nbdev_docs`. Where it is not (our machines, see DESIGN.md) it runs the
same nbdev steps that `nbdev_docs` runs before Quarto (nbdev.yml, sidebar.yml, `proc_nbs` -> `_proc/`), then renders
`_proc/` with smalldocs, which reads the same `_quarto.yml` + `nbdev.yml` + `sidebar.yml`, and moves `_proc/_docs` to
`_docs/` as `nbdev_docs` does.

We call nbdev's functions rather than the `nbdev_proc_nbs` command because that command first runs `_ensure_quarto`,
which without Quarto downloads it with curl+sudo and then runs `pip install -e ".[dev]"` on the repo: neither works
offline and the second repoints the environment's editable install at whatever checkout ran it.

Usage: python tools/build_docs.py [--n_workers N]
"""
import argparse, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def build_with_quarto():
    "nbdev's own docs build (Quarto renders `_proc/` into `_docs/` and refreshes README.md)."
    subprocess.run(['nbdev_docs'], cwd=ROOT, check=True)


def apply_output_files(cache: Path):
    "Rename each processed notebook to its nbdev `output-file` (`04_encoder.ipynb` -> `encoder.ipynb`), as Quarto names pages."
    # smalldocs names a page after its source and ignores `output-file`; nbdev's doc links (`_modidx.py`) point at `encoder.html`
    names = {}
    for nb_path in sorted(cache.glob('*.ipynb')):
        nb = json.loads(nb_path.read_text(encoding='utf-8'))
        first = ''.join(nb['cells'][0]['source']) if nb['cells'] else ''
        m = re.match(r'---\n(.*?)\n---', first, re.S)
        out = (yaml.safe_load(m.group(1)) or {}).get('output-file') if m else None
        if out and Path(out).stem != nb_path.stem: names[nb_path.name] = Path(out).with_suffix('.ipynb').name
    for old, new in names.items():
        if (cache / new).exists(): sys.exit(f'error: {old} has output-file {new[:-6]}.html, which another notebook already makes')
        (cache / old).rename(cache / new)
    for f in [*cache.glob('*.ipynb'), cache / 'sidebar.yml']:  # links to a notebook by its file name follow it
        text = f.read_text(encoding='utf-8')
        new_text = re.sub(r'(?<![\w.-])(' + '|'.join(map(re.escape, names)) + r')(?=[#)"\s]|$)', lambda m: names[m.group(1)], text, flags=re.M) if names else text
        if new_text != text: f.write_text(new_text, encoding='utf-8')


def build_with_smalldocs(n_workers: int):
    "nbdev's pre-Quarto steps, then smalldocs renders `_proc/` into `_docs/`."
    from nbdev.config import get_config
    from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
    from nbdev.serve import proc_nbs
    from smalldocs.site import build

    cfg = get_config(path=ROOT)
    refresh_quarto_yml()  # nbs/nbdev.yml: output-dir, title, site-url, repo (from settings.ini)
    nbdev_sidebar.__wrapped__(path=cfg.nbs_path)  # nbs/sidebar.yml: every notebook, index first, then in name order
    cache = cfg.config_path / '_proc'
    shutil.rmtree(cache, ignore_errors=True)  # a renamed or deleted notebook must not leave a stale page behind
    # Runs imports, exported cells and show_doc cells of each notebook (nbdev's exec_show_docs) to render the API docs
    try: proc_nbs(cfg.nbs_path, n_workers=n_workers)
    except Exception as e:
        cause = re.findall(r'^\w*(?:Error|Exception|Interrupt|Exit): .*$', str(e.__cause__ or ''), re.M)[:1]  # the cell's own error
        sys.exit(f'error: {e}\n{"".join(cause)}\nThe docs build runs every cell of a notebook that has an import, an export or a '
                 'show_doc (nbdev exec_show_docs), and no other cell: keep imports in cells of their own (STYLE.md).')
    apply_output_files(cache)
    site = build(cache, quiet=True)
    for w in site.warnings:
        if 'output-file is not read' not in w: print(f'smalldocs warning: {w}', file=sys.stderr)  # applied above
    out = cache / cfg.doc_path.name
    if not (out / 'index.html').exists(): sys.exit(f'error: smalldocs wrote no {out}/index.html')
    shutil.rmtree(cfg.doc_path, ignore_errors=True)
    shutil.move(str(out), str(cfg.doc_path))
    return cfg.doc_path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n_workers', type=int, default=os.cpu_count() or 1, help='notebooks processed in parallel')
    args = p.parse_args(argv)
    t0 = time.time()
    os.chdir(ROOT / 'nbs')  # notebooks run with nbs/ as the working directory, as in Jupyter and nbdev_test
    # This checkout's txc, not whichever checkout the environment has installed (a clean clone in a temp dir, CI)
    sys.path.insert(0, str(ROOT))
    os.environ['PYTHONPATH'] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])])
    if shutil.which('quarto'): build_with_quarto(); out = ROOT / '_docs'
    else: out = build_with_smalldocs(args.n_workers)
    print(f'docs: wrote {sum(1 for _ in out.rglob("*.html"))} pages to {out} in {time.time() - t0:.0f}s')


if __name__ == '__main__': main()
