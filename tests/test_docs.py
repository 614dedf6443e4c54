"""The docs site: built offline by `tools/build_docs.py` from a clean copy of the repo, every internal link resolves,
headless Chromium renders the index and an API page, and the API reference shows `Encoder.from_bert`'s signature."""
import configparser, functools, html, http.server, json, os, re, shutil, subprocess, sys, tempfile, threading, time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from PIL import Image  # a dependency of matplotlib, which the dev extra installs

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(os.environ.get('TXC_DOCS_SCREENSHOTS', Path(tempfile.gettempdir()) / 'txc-docs-screenshots'))
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--hide-scrollbars']


def clean_copy(dest: Path) -> Path:
    "Copy what a commit of the working tree holds (tracked and untracked, not ignored files) into `dest`, like a fresh clone."
    names = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, names.decode().split('\0')):
        src = ROOT / name
        if not os.path.lexists(src): continue  # deleted in the working tree, not yet in git
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name, follow_symlinks=False)  # nbs/_quarto.yml stays a symlink
    return dest


@pytest.fixture(scope='module')
def site(tmp_path_factory) -> Path:
    "The site built from a clean copy of the repo, with nothing from this checkout's build folders."
    repo = clean_copy(tmp_path_factory.mktemp('docs_clone'))
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'WANDB_MODE': 'offline', 'PYTHONUNBUFFERED': '1'}
    t0 = time.time()
    res = subprocess.run([sys.executable, 'tools/build_docs.py'], cwd=repo, capture_output=True, text=True, timeout=600, env=env)
    err = res.stderr[res.stderr.rfind('\nerror: '):] if '\nerror: ' in res.stderr else res.stderr[-6000:]  # the script's own message
    rc = res.returncode
    assert rc == 0, f'docs build failed (rc {rc}):\n{res.stdout[-3000:]}\n{err}'
    print(f'\ndocs built in {time.time() - t0:.0f}s: {repo / "_docs"}')
    return repo / '_docs'


class Links(HTMLParser):
    "The ids of a page and the URLs it refers to (href, src, srcset of any element)."
    def __init__(self):
        super().__init__(); self.ids, self.urls = set(), []
    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if v is None: continue
            if k in ('id', 'name') and tag != 'meta': self.ids.add(v)
            if k in ('href', 'src'): self.urls.append((tag, v))
            if k == 'srcset': self.urls += [(tag, s.split()[0]) for s in v.split(',') if s.strip()]


def parse(page: Path) -> Links:
    p = Links(); p.feed(page.read_text(encoding='utf-8')); return p


def site_url() -> str:
    "The docs' own address from settings.ini; nbdev writes its links to documented symbols as absolute URLs under it."
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    d = cfg['DEFAULT']
    return d['doc_host'].rstrip('/') + '/' + d.get('doc_baseurl', '/').strip('/')


def broken_links(site: Path) -> list[str]:
    "Every internal URL in every page (and in the search index) that names no file of the site, or no id of its page."
    own = site_url().rstrip('/') + '/'
    pages = {p: parse(p) for p in site.rglob('*.html')}
    refs = [(p, tag, url) for p, links in pages.items() for tag, url in links.urls]
    search = site / 'search.json'
    if search.exists(): refs += [(site / 'index.html', 'search.json', e['href']) for e in json.loads(search.read_text()) if e.get('href')]
    bad = []
    for page, tag, url in refs:
        url = html.unescape(url.strip())
        absolute = url.startswith(own)
        if absolute: url = url[len(own):]
        elif re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*:|^//', url): continue  # another site, mailto:, data:, javascript:
        parts = urlsplit(url)
        base = site if absolute or parts.path.startswith('/') else page.parent
        target = (base / unquote(parts.path).lstrip('/')).resolve() if parts.path else page
        if target.is_dir(): target = target / 'index.html'
        where = f'{page.relative_to(site)}: <{tag}> {url}'
        if not target.is_relative_to(site.resolve()) and target != page: bad.append(f'{where} (outside the site)'); continue
        if not target.is_file(): bad.append(f'{where} (no file {target.relative_to(site.resolve()) if target.is_relative_to(site.resolve()) else target})'); continue
        # an anchor must exist; nbdev's absolute links to symbols name every method, documented or not, so only the page is checked
        if parts.fragment and target.suffix == '.html' and not absolute and unquote(parts.fragment) not in pages[target].ids:
            bad.append(f'{where} (no id {parts.fragment!r} in {target.name})')
    return bad


def test_site_pages(site):
    "The front page, an API page per notebook, in the sidebar in notebook order."
    nbs = sorted(p.name for p in (ROOT / 'nbs').glob('*.ipynb') if not p.name.startswith(('_', '.')))  # nbdev skips _*, .*
    assert (site / 'index.html').is_file() and (site / 'encoder.html').is_file(), sorted(p.name for p in site.glob('*.html'))
    assert len(list(site.glob('*.html'))) == len(nbs), (nbs, sorted(p.name for p in site.glob('*.html')))
    index = (site / 'index.html').read_text()
    sidebar = re.findall(r'<a href="(?:\./)?([^"]+)" class="sidebar-item-text sidebar-link', index)  # Quarto writes ./
    assert sidebar[:2] == ['index.html', 'config.html'], sidebar
    assert sidebar.index('tokenizer.html') < sidebar.index('encoder.html') < sidebar.index('cli.html'), sidebar


def test_internal_links_resolve(site):
    bad = broken_links(site)
    assert not bad, f'{len(bad)} broken internal links:\n' + '\n'.join(bad[:40])


def signature_text(page_html: str, qualname: str) -> str:
    "The show_doc entry of `qualname`: its heading, then the signature code block that follows it, as plain text."
    anchor = r'(?:<a [^>]*>[^<]*</a>\s*)?'  # in the browser, the page's script adds an anchor link to each heading
    m = re.search(rf'<h[2-4][^>]*>\s*{re.escape(qualname)}\s*{anchor}</h[2-4]>(.*?)</pre>', page_html, re.S)
    if not m: return ''
    return re.sub(r'\s+', '', html.unescape(re.sub(r'<[^>]+>', '', m.group(1))))


@pytest.mark.parametrize('page,qualname,signature', [
    ('encoder.html', 'Encoder.from_bert', 'deffrom_bert(model_dir'),  # the contract in DESIGN.md
    ('config_io.html', 'load_config', 'defload_config(path'),
])
def test_api_page_shows_signature(site, page, qualname, signature):
    "show_doc rendered the symbol under its public name, with its signature."
    text = (site / page).read_text()
    sig = signature_text(text, qualname)
    found = re.findall(r'<h[2-4][^>]*>\s*([\w.]*' + re.escape(qualname.split('.')[-1]) + r')\s*</h[2-4]>', text)
    assert sig, f'{page} has no show_doc heading "{qualname}" (headings found for it: {found})'
    assert signature in sig, (signature, sig)


def chromium() -> str:
    exe = next(filter(None, map(shutil.which, ['chromium', 'chromium-browser', 'google-chrome'])), None)
    if not exe: pytest.fail('Chromium is not installed: run `apt-get install -y chromium` (.ci/run installs it); the docs test needs a real browser')
    return exe


@pytest.fixture(scope='module')
def served(site):
    "The site on an HTTP server at 127.0.0.1, on a free port."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/'
    srv.shutdown(); srv.server_close()


def run_chromium(*args, timeout=90) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *CHROMIUM_FLAGS, f'--user-data-dir={profile}', *args],
                              capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('page', ['index.html', 'encoder.html'])
def test_screenshot(served, tmp_path_factory, page):
    "Chromium renders the page: a full-size PNG with a navbar, text and code, not a blank or flat image."
    png = tmp_path_factory.mktemp('screenshots') / page.replace('.html', '.png')
    res = run_chromium(f'--screenshot={png}', '--window-size=1280,2000', '--virtual-time-budget=3000', served + page)
    assert png.is_file(), f'no screenshot of {page}: {res.stderr[-2000:]}'
    keep = SCREENSHOTS / png.name  # pytest prunes its old temp dirs; this copy stays for a person to look at
    keep.parent.mkdir(parents=True, exist_ok=True); shutil.copy(png, keep)
    print(f'\nscreenshot of {page}: {png} (copy: {keep})')
    img = Image.open(png).convert('RGB')
    assert img.size == (1280, 2000), img.size
    colours = img.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50, f'{png}: only {len(colours)} colours'
    assert max(colours)[0] < 0.97 * 1280 * 2000, f'{png}: one colour covers {max(colours)[0] / (1280 * 2000):.0%} of it'


def test_browser_dom_shows_signature(served):
    "The page as Chromium builds it (after its scripts run) has the sidebar and Encoder.from_bert's signature."
    res = run_chromium('--dump-dom', '--virtual-time-budget=3000', served + 'encoder.html')
    assert res.returncode == 0 and '</html>' in res.stdout, res.stderr[-2000:]
    assert 'href="config.html"' in res.stdout  # the sidebar
    sig = signature_text(res.stdout, 'Encoder.from_bert')
    assert 'deffrom_bert(model_dir' in sig, f'no show_doc entry "Encoder.from_bert" with its signature in the DOM: {sig!r}'
