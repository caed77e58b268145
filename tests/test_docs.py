"""The offline docs site (tools/docs.py: mkdocs-material + mkdocs-jupyter from nbdev's processed notebooks), built once from the
executed notebooks (tests/test_notebooks.py runs first and makes them) and checked as files and in chromium from file://.

Set DIFFNB_DOCS_SITE to a built site (e.g. _docs after `make docs`) to check it instead of building one.
"""
import os, re, sys
from pathlib import Path
from urllib.parse import unquote
import pytest
from bs4 import BeautifulSoup
from bs4.element import NavigableString, CData
from nbrun import NBS, notebooks
from test_layout import INTERNAL_REF, ID_IN_PROSE

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / 'build' / 'artifacts'
PARSER = 'lxml'   # libxml2's tokenizer: the site's 27 pages (about 110k tags) parse in 5.7 s instead of 7.9 s with html.parser
sys.path.insert(0, str(ROOT / 'tools'))
import docs

@pytest.fixture(scope='module')
def site(tmp_path_factory, staged_pages) -> Path:
    if os.environ.get('DIFFNB_DOCS_SITE'): return Path(os.environ['DIFFNB_DOCS_SITE']).resolve()
    return docs.build_preview(out_dir=tmp_path_factory.mktemp('site').resolve() / 'docs')

@pytest.fixture(scope='module')
def pages(site) -> dict:
    "Each built HTML page (relative path) as parsed HTML."
    return {p.relative_to(site): BeautifulSoup(p.read_text(), PARSER) for p in sorted(site.rglob('*.html'))}

def _visible_text(soup) -> tuple:
    "(all the text a reader sees, its prose: no code or outputs) of a parsed page, scripts and styles left out (the page is not changed)."
    kind = {}   # id(tag) -> 'hidden' (script, style), 'code' (code or an output) or '' (prose), inherited from the nearest marked ancestor
    def of(tag):
        k = kind.get(id(tag))
        if k is None:
            own = 'hidden' if tag.name in ('script', 'style') else 'code' if tag.name in ('pre', 'code') or {'jp-OutputArea', 'highlight-ipynb'} & set(tag.get('class') or ()) else ''
            up = of(tag.parent) if tag.parent is not None else ''
            k = kind[id(tag)] = 'hidden' if 'hidden' in (own, up) else own or up
        return k
    text, prose = [], []
    for s in soup.find_all(string=True):
        if type(s) not in (NavigableString, CData): continue   # as get_text: no comments, doctypes or declarations
        k = of(s.parent)
        if k != 'hidden': text.append(s)
        if not k: prose.append(s)
    return ' '.join(text), ' '.join(prose)

def test_show_doc_renderer():
    "tools/docrender.py: the signature shows only written annotations and no test hooks; the table has each parameter's docment."
    from docrender import DocRenderer
    def f(x:int,           # the x
          generator=None,  # a seed or a Generator
          _clock=None,     # a test hook
          **kw)->float:    # the result
        "Do f."
    md = DocRenderer(f, name='f')._repr_markdown_()
    assert '```python\nf(x:int, generator=None, **kw) -> float\n```' in md, md
    assert '*Do f.*' in md and '_clock' not in md and 'NoneType' not in md, md
    assert '| x | int |  | the x |' in md and '| generator |  | `None` | a seed or a Generator |' in md, md
    assert '| **Returns** | float |  | the result |' in md, md
    assert repr(DocRenderer(f, name='f')) == 'f(x:int, generator=None, **kw) -> float\nDo f.'

def test_quarto_sidebar_matches_the_index():
    "The canonical (Quarto) site's sidebar is the offline site's: the rooms and tutorials, named as the index's tables name them."
    import yaml
    have = yaml.safe_load((NBS / '_quarto.yml').read_text())['website']['sidebar']['contents']
    assert have == docs.quarto_sidebar(), "nbs/_quarto.yml's sidebar differs from the index's tables: run `python tools/docs.py sidebar`"

def test_every_notebook_has_a_page(site):
    "Every notebook, internal ones included, has its page, named as nbdev names it (00_paths.ipynb -> paths.html)."
    want = {docs.page_name(nb.relative_to(NBS)) for nb in notebooks()}
    have = {str(p.relative_to(site)) for p in site.rglob('*.html')}
    assert not want - have, f"notebooks without a page: {sorted(want - have)}"

def test_sidebar_lists_rooms_and_tutorials_by_the_index_names(pages):
    "The sidebar holds the index, the rooms and the tutorials, titled as the index's tables name them; internal pages are not in it."
    nav = pages[Path('index.html')].select('.md-sidebar--primary a.md-nav__link[href]')
    listed = {a['href']: a.get_text(' ', strip=True) for a in nav if not a['href'].startswith('#')}   # '#...': the open page's contents
    for title, nb in docs.index_entries():
        assert listed.get(docs.page_name(Path(nb))) == title, f"{nb}: sidebar says {listed.get(docs.page_name(Path(nb)))!r}, the index {title!r}"
    linked = {docs.page_name(Path(nb)) for _, nb in docs.index_entries()}
    internal = [docs.page_name(nb.relative_to(NBS)) for nb in notebooks() if nb.parent == NBS and nb.name != 'index.ipynb'
                and docs.page_name(nb.relative_to(NBS)) not in linked]
    assert not set(internal) & set(listed), f"internal pages in the sidebar: {sorted(set(internal) & set(listed))}"
    tutorials = {docs.page_name(nb.relative_to(NBS)) for nb in notebooks() if nb.parent.name == 'tutorials'}
    assert tutorials <= set(listed), f"tutorials missing from the sidebar: {sorted(tutorials - set(listed))}"

def test_no_page_shows_a_figure_bundle_dict(pages):
    "A figure is drawn, never printed as its display bundle's dict (the page's code may name the MIME type; its outputs may not)."
    bundle = re.compile(r"""['"]application/vnd\.plotly\.v1\+json['"]\s*:""")
    bad = {}
    for rel, soup in pages.items():
        shown = ' '.join(el.get_text(' ') for el in soup.select('.jp-OutputArea-output, .jp-RenderedMarkdown'))
        if bundle.search(shown): bad[str(rel)] = bundle.search(shown).group(0)
    assert not bad, f"pages that print a figure bundle's dict instead of drawing it: {bad}"

def test_every_internal_link_resolves(site, pages):
    "Each relative href/src of every page names a file of the site, and an anchor names an element of its page."
    ids = {rel: {el['id'] for el in soup.select('[id]')} | {el['name'] for el in soup.select('a[name]')} for rel, soup in pages.items()}
    missing = []
    for rel, soup in pages.items():
        if rel == Path('404.html'): continue   # for a web server only: mkdocs writes its links from the site's root
        for el in soup.select('[href], [src]'):
            url = el.get('href') or el.get('src')
            if re.match(r'^(\w+:|//)', url) or url == '': continue   # http(s), data:, mailto:, javascript:
            path, _, frag = url.partition('#')
            target = (site / rel).parent / unquote(path) if path else site / rel
            target = target.resolve()
            if target.is_dir(): target = target / 'index.html'
            if not target.exists() or not target.is_relative_to(site): missing.append(f"{rel}: {url}"); continue
            if frag and target.suffix == '.html' and frag not in ids[target.relative_to(site)]: missing.append(f"{rel}: {url} (no such anchor)")
    assert not missing, f"{len(missing)} broken links, e.g. {missing[:15]}"

def test_no_page_names_internal_ids(site, pages):
    "User-facing text cites the works, never the source documents' file numbers or the catalog's ids (as tests/test_layout.py for notebooks)."
    found = {}
    for rel, soup in pages.items():
        text, prose = _visible_text(soup)
        hits = {m.group(0) for m in INTERNAL_REF.finditer(text)} | {m.group(0) for m in ID_IN_PROSE.finditer(prose)}
        if hits: found[str(rel)] = sorted(hits)
    assert not found, found

def test_plotly_js_once_and_nothing_from_the_network(site, pages):
    "One plotly.js file for the site, loaded by the pages that draw figures, none inlined; no page loads a script, style or font from the web."
    copies = [p for p in site.rglob('*.js') if p.read_bytes()[:20000].count(b'plotly.js') and p.stat().st_size > 1_000_000]
    assert [p.name for p in copies] == ['plotly.min.js'], copies
    for rel, soup in pages.items():
        inline = [s for s in soup.select('script:not([src])') if len(s.get_text()) > 1_000_000]
        assert not inline, f"{rel} inlines a {len(inline[0].get_text())}-character script"
        loads = [s['src'] for s in soup.select('script[src]') if 'plotly' in s['src']]
        assert len(loads) == (1 if soup.select('.plotly-figure') else 0), f"{rel} loads plotly.js {len(loads)} times"
        web = [u for u in [s['src'] for s in soup.select('script[src]')] + [l['href'] for l in soup.select('link[rel=stylesheet], link[rel=preload]')]
               if re.match(r'^(https?:)?//', u)]
        assert not web, f"{rel} loads from the web: {web}"
    assert (site / 'assets' / 'mathjax').is_dir() and list((site / 'assets' / 'mathjax').glob('*.js')), "no local MathJax"

def test_api_docs_show_parameter_tables(pages):
    "show_doc's entries: a parameter table from the docments, and signatures without the type of a default (`generator:NoneType`)."
    soup = pages[Path('samplers.html')]
    tables = [t for t in soup.select('table') if 'Details' in t.get_text()]
    assert len(tables) >= 5, f"samplers.html has {len(tables)} parameter tables"
    text = ' '.join(el.get_text(' ') for soup in pages.values() for el in soup.select('.jp-RenderedMarkdown'))
    assert 'NoneType' not in text, re.findall(r'.{40}NoneType.{20}', text)[:5]

# ---- in chromium, from file://

def _open(browser, url, width=1280, height=900):
    "A page at `url` whose requests off the file system are refused and recorded (page.web)."
    pg = browser.new_page(viewport={'width': width, 'height': height})
    pg.web, pg.errors = [], []
    def route(r):
        if r.request.url.startswith(('file:', 'data:', 'blob:', 'about:')): r.continue_()
        else: pg.web.append(r.request.url); r.abort()
    pg.route('**/*', route)
    pg.on('pageerror', lambda e: pg.errors.append(str(e)))
    pg.goto(url)
    return pg

def test_search_finds_dpmpp_2m(browser, site):
    "The search box, typed into from file://, lists the samplers page for `dpmpp_2m`."
    pg = _open(browser, (site / 'index.html').as_uri())
    pg.click('input.md-search__input', timeout=10_000)
    pg.keyboard.type('dpmpp_2m', delay=20)   # typed: the search listens to key events
    pg.wait_for_selector('.md-search-result__item', timeout=30_000)
    items = pg.locator('.md-search-result__item')
    hrefs = [items.nth(i).locator('a').first.get_attribute('href') for i in range(items.count())]
    pg.screenshot(path=str(ARTIFACTS / 'docs_search.png'))
    assert any('samplers.html' in h for h in hrefs), hrefs
    assert 'dpmpp_2m' in pg.locator('.md-search-result').inner_text().lower()
    assert not pg.web, f"the search reached for the network: {pg.web}"
    pg.close()

def test_figure_page_draws_offline(browser, site):
    "A page with figures and math, opened from file:// with the network refused, draws every figure, typesets its math, and has a table of contents and prev/next links."
    pg = _open(browser, (site / 'paths.html').as_uri())
    pg.wait_for_function("document.querySelectorAll('.plotly-figure').length > 0 && "
                         "[...document.querySelectorAll('.plotly-figure')].every(d => d.querySelector('.main-svg'))", timeout=60_000)
    n_fig = pg.locator('.plotly-figure').count()
    drawn = pg.evaluate("[...document.querySelectorAll('.plotly-figure')].filter(d => d.querySelector('path.js-line, path.point, .hm, image')).length")
    assert drawn == n_fig, f"{drawn} of {n_fig} figures drew data"
    pg.wait_for_selector('mjx-container svg', timeout=30_000)
    assert pg.locator('mjx-container').count() > 20, "math is not typeset"
    assert pg.locator('.md-sidebar--secondary a.md-nav__link').count() > 10, "no table of contents"
    assert pg.locator('a.md-footer__link--prev').count() == 1 and pg.locator('a.md-footer__link--next').count() == 1
    pg.locator('.plotly-figure').first.scroll_into_view_if_needed(); pg.wait_for_timeout(300)
    pg.screenshot(path=str(ARTIFACTS / 'docs_paths_figure.png'))
    assert not pg.web and not pg.errors, (pg.web, pg.errors)
    pg.close()

def test_narrow_screen_layout(browser, site):
    "On a phone-wide screen the sidebar folds away and the text fits the width (code and figures scroll inside their boxes)."
    pg = _open(browser, (site / 'samplers.html').as_uri(), width=390, height=844)
    pg.wait_for_timeout(500)
    assert not pg.locator('.md-sidebar--primary').is_visible() or pg.locator('.md-sidebar--primary').bounding_box()['x'] < 0
    overflow = pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    pg.screenshot(path=str(ARTIFACTS / 'docs_samplers_narrow.png'))
    assert overflow <= 1, f"the page is {overflow}px wider than the screen"
    pg.close()

WIDGET_COPIES = """() => {
  const shown = e => !!e && getComputedStyle(e).display !== 'none';
  const drawn = e => !!e && ([...e.querySelectorAll('img')].some(i => i.naturalWidth > 0) || e.querySelector('.plotly-figure .main-svg') !== null);
  const copies = [...document.querySelectorAll('.jp-OutputArea-child')].filter(c => c.querySelector('.diffnb-static')).map(c =>
    ({stand_in_hidden: !shown(c.previousElementSibling), copy_drawn: shown(c.nextElementSibling) && drawn(c.nextElementSibling)}));
  const snapshots = [...document.querySelectorAll('.diffnb-snapshot')].map(d => ({copy_drawn: d.children.length > 0, stand_in_hidden: true}));
  return copies.concat(snapshots); }"""

def test_widgets_show_their_static_copy_offline(browser, site, pages):
    """Where a page shows a widget, its static copy (the kept frame or figure) is drawn from the site's files, with no kernel and
    no network, and the widget's text stand-in is hidden (the marker diffnb.widgets displays after a widget; or an older snapshot)."""
    with_widgets = [rel for rel, soup in pages.items() if soup.select('.diffnb-static, .diffnb-snapshot')]
    assert Path('widgets.html') in with_widgets, "the widgets page shows no widget's static copy"
    problems = {}
    for rel in sorted(with_widgets, key=lambda r: r != Path('widgets.html')):
        pg = _open(browser, (site / rel).as_uri())
        pg.wait_for_timeout(500)
        try: pg.wait_for_function(f"({WIDGET_COPIES})().every(c => c.copy_drawn)", timeout=20_000)
        except Exception: pass   # the assertion below says which
        copies = pg.evaluate(WIDGET_COPIES)
        if rel == Path('widgets.html'):
            pg.locator('.jp-OutputArea-child:has(.diffnb-static) + .jp-OutputArea-child, .diffnb-snapshot').first.scroll_into_view_if_needed()
            pg.wait_for_timeout(300); pg.screenshot(path=str(ARTIFACTS / 'docs_widget_copy.png'))
        if not (copies and all(c['copy_drawn'] and c['stand_in_hidden'] for c in copies)) or pg.web or pg.errors:
            problems[str(rel)] = (copies, pg.web, pg.errors)
        pg.close()
    assert not problems, problems
