"""Build the docs. With Quarto on PATH: `nbdev_docs` (the canonical site). Without it: an offline site in _docs/ that opens from file://.

The offline site is made by mkdocs-material with mkdocs-jupyter from nbdev's processed notebooks: the papermill-executed copies
(build/executed, run by `make test`; any missing or stale one is executed here) go through nbdev's docs processing (show_doc with
tools/docrender.py, directives), then `prepare` applies what Quarto would (the cells' #| options, the front matter, show_doc's
markdown as page text, links between notebooks as links between pages) and turns each plotly figure into a div drawn by the one
copy of plotly.js in assets/. mkdocs-material gives the search (offline plugin), the per-page table of contents, prev/next links and
the responsive layout; MathJax comes from a local copy (the django-static-mathjax wheel ships MathJax 3, and nothing else).
"""
import functools, json, os, re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
from nbrun import NBS, EXECUTED, notebooks, execute

OUT = ROOT / '_docs'
STAGE = ROOT / 'build' / 'docs_src'    # executed copies, handed to nbdev's processing
SITE_SRC = ROOT / 'build' / 'docs_site'   # the pages and assets mkdocs builds from
ASSETS = Path(__file__).resolve().parent / 'docs_assets'
DOCS_URL = 'https://diffnb.github.io/diffnb/'   # nbdev's doc links and the widgets' scripts point at the published site

def page_name(rel:Path) -> str:
    "nbdev's page name: the notebook path with a leading number prefix dropped, as .html."
    return str(rel.with_name(re.sub(r'^\d+[a-z]?_', '', rel.stem) + '.html'))

def stale(made:Path, source:Path) -> bool:
    "Whether `made` is missing or older than the file it is made from (what nbdev's proc_nbs decides by, too)."
    return not made.exists() or made.stat().st_mtime < source.stat().st_mtime

def ensure_executed(nbs=None) -> list:
    "Executed copies of the notebooks, running any that is missing or older than its source."
    done = []
    for nb in nbs or notebooks():
        out = EXECUTED / nb.relative_to(NBS)
        if stale(out, nb):
            print(f"executing {nb.relative_to(ROOT)}", flush=True); execute(nb)
        done.append(out)
    return done

PROC = ROOT / '_proc'                     # nbdev's processed notebooks (its cache folder: the project's root/_proc)

def _stage(src:Path) -> Path:
    "The executed copy `src` in STAGE, keeping its time (nbdev reprocesses a notebook only when its copy is newer than the result)."
    dst = STAGE / src.relative_to(EXECUTED)
    if stale(dst, src):
        dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(src, dst)
    return dst

def _quiet():
    "nbdev's processing without its chatter (its note on cells that mix imports and code, once per such cell; what show_doc prints)."
    import warnings, io, contextlib
    warnings.filterwarnings('ignore', message='Found cells containing imports')
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stderr(io.StringIO())); stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack

def process(executed:list) -> Path:
    "nbdev's docs processing of the executed copies that are not processed yet (all of them when show_doc's renderer changed); returns the folder."
    STAGE.mkdir(parents=True, exist_ok=True)
    for f in ('_quarto.yml', 'nbdev.yml', 'styles.css'): shutil.copy(NBS / f, STAGE / f)
    if PROC.exists() and stale(PROC, Path(__file__).parent / 'docrender.py'): shutil.rmtree(PROC)
    for src in executed: _stage(src)
    from nbdev.serve import proc_nbs
    with _quiet(): return proc_nbs(path=str(STAGE), n_workers=2)

@functools.cache
def _jupyter_config():
    "mkdocs-jupyter's configuration with the site's options and its defaults (its cache keys hash them), made once per process."
    from mkdocs_jupyter.plugin import Plugin
    opts = next(p['mkdocs-jupyter'] for p in mkdocs_config([], OUT)['plugins'] if isinstance(p, dict) and 'mkdocs-jupyter' in p)
    plugin = Plugin(); plugin.load_config(opts)
    return plugin.config

def warm_page(page:Path):
    "Convert one page's notebook into mkdocs-jupyter's cache, as its build would (the build then reads it; pages can be done in parallel)."
    from mkdocs_jupyter import convert, plugin as mj
    cfg = _jupyter_config()
    cache = mj._get_cache_path(cfg['cache_dir'], mj._compute_cache_key(str(page), cfg, cfg['execute']))
    if cache.exists(): return
    body = convert.nb2html(str(page), execute=cfg['execute'], kernel_name=cfg['kernel_name'], theme=cfg['theme'],
                           allow_errors=cfg['allow_errors'], show_input=cfg['show_input'], no_input=cfg['no_input'],
                           no_prompt=cfg['no_prompt'], remove_tag_config=cfg['remove_tag_config'],
                           highlight_extra_classes=cfg['highlight_extra_classes'], include_requirejs=cfg['include_requirejs'],
                           custom_mathjax_url=cfg['custom_mathjax_url'])
    toc_tokens, title = mj._get_nb_toc_tokens(str(page), cfg['toc_depth'])
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({'content': body, 'toc_tokens': toc_tokens, 'title': title}), encoding='utf-8')

def page_of(executed:Path) -> Path:
    "The site's page notebook of one processed notebook (written into SITE_SRC)."
    rel = executed.relative_to(EXECUTED)
    dst = SITE_SRC / site_file(rel); dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(prepare(json.loads((PROC / rel).read_text()), rel)))
    return dst

def stage_page(executed:Path) -> Path:
    """All of the site's work on one notebook as soon as it has run: nbdev's processing, its page, and the page converted into
    mkdocs-jupyter's cache (the test run does this beside the other notebooks; build_preview then only builds)."""
    os.chdir(ROOT)   # nbdev finds settings.ini from the working directory
    import nbdev.serve_drv
    from nbdev.processors import FilterDefaults
    src = _stage(executed)
    dst = PROC / executed.relative_to(EXECUTED)
    if stale(dst, src):   # as nbdev's proc_nbs decides, one notebook
        dst.parent.mkdir(parents=True, exist_ok=True)
        with _quiet(): nbdev.serve_drv.main((src, dst, FilterDefaults))
    page = page_of(executed)
    warm_page(page)
    return page

# ---- from processed notebooks to mkdocs-jupyter's pages

def slug(text:str) -> str:
    "The id mkdocs-jupyter gives a heading (and its table of contents links to): `Path.plot` -> `pathplot`."
    from mkdocs_jupyter.utils import slugify
    return slugify(text)

def fix_links(text:str, rel:Path) -> str:
    "Links to the published site or to notebooks become relative links to this site's pages; Quarto's link attributes go."
    up = '../' * (len(rel.parts) - 1)
    text = re.sub(r'\[source\]\((\S+?)\)\{target="_blank"[^}]*\}', r'<a class="doc-source" href="\1" target="_blank">source</a>', text)   # show_doc's
    text = re.sub(r'\{target="_blank"[^}]*\}', '', text)
    def page(m):
        target, frag = m.group(2), m.group(3) or ''
        if target.startswith(DOCS_URL): target = up + target[len(DOCS_URL):]
        elif target.endswith('.ipynb'): target = page_name(Path(target))
        else: return m.group(0)
        return f"{m.group(1)}{target}{'#' + slug(frag[1:]) if frag else ''}"
    # markdown links `](...)` and HTML attributes `href="..."` / `src="..."`
    text = re.sub(r'(\]\()((?:https://diffnb\.github\.io/diffnb/|(?!\w+:|#))[^)\s#]*)(#[^)\s]*)?', page, text)
    text = re.sub(r'((?:href|src)=")((?:https://diffnb\.github\.io/diffnb/|(?!\w+:|#))[^"#]*)(#[^"]*)?', page, text)
    return text

def _directives(src:str) -> tuple:
    "(Quarto cell options, source without them) of a code cell."
    opts = dict(re.findall(r'^#\|\s*([\w-]+):\s*(.*?)\s*$', src, re.M))
    return opts, re.sub(r'^#\|.*\n?', '', src, flags=re.M).strip('\n')

def _markdown_cell(src:str) -> dict: return {'cell_type': 'markdown', 'metadata': {}, 'source': src}

def _figure_html(fig:dict, n:int, up:str) -> str:
    "A plotly figure as a div and a call to the site's one plotly.js (the script tag comes with the page's first figure)."
    spec = json.dumps({'data': fig.get('data', []), 'layout': fig.get('layout', {})}).replace('</', '<\\/')
    load = f'<script src="{up}assets/plotly.min.js"></script>' if n == 1 else ''
    return (f'{load}<div id="plotly-{n}" class="plotly-figure"></div><script>(function(f) {{ Plotly.newPlot("plotly-{n}", '
            f'f.data, f.layout, {{responsive: true, displaylogo: false}}); }})({spec});</script>')

def _output(o:dict, n_fig:list, up:str, rel:Path) -> dict:
    "One output as the site shows it: figures as drawn divs, widgets by their static form, links made relative."
    d = o.get('data')
    if not d: return o
    d = dict(d)
    if 'application/vnd.plotly.v1+json' in d:
        n_fig[0] += 1
        d = {'text/html': _figure_html(d.pop('application/vnd.plotly.v1+json'), n_fig[0], up)}
    if len(d) > 1: d.pop('application/vnd.jupyter.widget-view+json', None)   # no kernel here: the static form stands in
    if 'text/html' in d: d['text/html'] = fix_links(''.join(d['text/html']), rel)
    return {**o, 'data': d}

def prepare(nb:dict, rel:Path) -> dict:
    "A processed notebook as mkdocs-jupyter's page: what Quarto would show, with the site's links and figures."
    import yaml
    up, cells, n_fig = '../' * (len(rel.parts) - 1), [], [0]
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'raw':   # nbdev's front matter: the title and the summary
            try: meta = yaml.safe_load(src.strip().strip('-')) or {}
            except yaml.YAMLError: meta = {}
            if isinstance(meta, dict) and meta.get('title'):
                cells.append(_markdown_cell(f"# {meta['title']}" + (f"\n\n> {meta['description']}" if meta.get('description') else '')))
            continue
        if c['cell_type'] == 'markdown':
            if src.strip() and 'AUTOGENERATED' not in src: cells.append(_markdown_cell(fix_links(src, rel)))
            continue
        opts, body = _directives(src)
        if opts.get('include') == 'false': continue
        outs = [] if opts.get('output') == 'false' else [_output(o, n_fig, up, rel) for o in c.get('outputs', [])]
        if opts.get('output') == 'asis':   # show_doc: its markdown is page text (headings in the table of contents)
            cells += [_markdown_cell(fix_links(''.join(o['data']['text/markdown']), rel)) for o in outs if 'text/markdown' in o.get('data', {})]
            continue
        if opts.get('echo') == 'false' and not outs: continue
        cell = {'cell_type': 'code', 'execution_count': None, 'metadata': {}, 'outputs': outs, 'source': body}
        if opts.get('echo') == 'false' or not body.strip(): cell['metadata']['transient'] = {'remove_source': True}
        cells.append(cell)
    meta = {k: v for k, v in nb.get('metadata', {}).items() if k in ('kernelspec', 'language_info')}   # no widget state: no CDN widget manager
    for n, c in enumerate(cells): c['id'] = f'c{n}'   # ids of our own: the same page every build (nbformat would draw random ones)
    return {'cells': cells, 'metadata': meta, 'nbformat': 4, 'nbformat_minor': 5}

# ---- the sidebar: the index's tables name the rooms and the tutorials

def index_entries(index:Path=NBS / 'index.ipynb') -> list:
    "(link text, notebook path relative to nbs/) of each link in the index's tables, in order."
    nb = json.loads(index.read_text())
    text = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')
    rows = [l for l in text.splitlines() if l.lstrip().startswith('|')]
    return [(t.strip('`* '), target) for row in rows for t, target in re.findall(r'\[([^\]]+)\]\(((?!\w+:)[^)#\s]+\.ipynb)(?:#[^)]*)?\)', row)]

def nb_title(nb:Path) -> str:
    "A notebook's title: its first cell's '# Title'."
    first = ''.join(json.loads(nb.read_text())['cells'][0]['source'])
    m = re.match(r'#\s+(.+)', first)
    return m.group(1).strip() if m else nb.stem

def sidebar(nbs:list) -> list:
    """(section, [(title, notebook relative to nbs/)]) of the sidebar: the index, the rooms (notebooks of nbs/ that the index's
    tables link to) and every tutorial, named as the tables name them (a tutorial they do not name keeps its own title).
    Other notebooks (internal ones) get pages but no place in the sidebar."""
    rels = [nb.relative_to(NBS) for nb in nbs]
    entries = {}
    for t, p in index_entries():
        if Path(p) in rels: entries.setdefault(Path(p), t)
    rooms = [(t, p) for p, t in entries.items() if len(p.parts) == 1 and p.name != 'index.ipynb']
    tuts = [(t, p) for p, t in entries.items() if p.parts[0] == 'tutorials']
    tuts += [(nb_title(NBS / p), p) for p in sorted(rels) if p.parts[0] == 'tutorials' and p not in entries]
    return [('Home', [('Home', Path('index.ipynb'))] if Path('index.ipynb') in rels else []), ('Library', rooms), ('Tutorials', tuts)]

def quarto_sidebar() -> list:
    "The Quarto site's sidebar contents (nbs/_quarto.yml), the same as the offline site's."
    home, *sections = sidebar(notebooks())
    return ['index.ipynb'] * bool(home[1]) + [{'section': sec, 'contents': [{'text': t, 'href': str(p)} for t, p in items]} for sec, items in sections]

def write_quarto_sidebar():
    "Put quarto_sidebar() into nbs/_quarto.yml, the rest of the file as it is (after the index's tables change: `python tools/docs.py sidebar`)."
    import yaml, textwrap
    class Dumper(yaml.SafeDumper):   # list items indented under their key, as the file writes them
        def increase_indent(self, flow=False, indentless=False): return super().increase_indent(flow, False)
    f = NBS / '_quarto.yml'
    block = textwrap.indent(yaml.dump({'contents': quarto_sidebar()}, Dumper=Dumper, sort_keys=False, width=120), '    ')
    text, n = re.subn(r'(?m)^(  sidebar:\n(?:    (?!contents:).*\n)*)    contents:\n(?:      .*\n)*', lambda m: m.group(1) + block, f.read_text())
    if n != 1: raise ValueError(f"{f}: no website.sidebar.contents to replace")
    f.write_text(text)

# ---- the site

def site_file(rel:Path) -> str:
    "The page's notebook in mkdocs' docs folder: named as nbdev names the page (paths.ipynb -> paths.html)."
    return page_name(rel).replace('.html', '.ipynb')

def mkdocs_config(nbs:list, out_dir:Path) -> dict:
    "mkdocs' configuration of the offline site of notebooks `nbs`."
    nav = [{sec: site_file(items[0][1])} if sec == 'Home' else {sec: [{t: site_file(p)} for t, p in items]} for sec, items in sidebar(nbs) if items]
    listed = {p for _, items in sidebar(nbs) for _, p in items}
    return {
        'site_name': 'diffnb', 'site_description': 'Notebook-first diffusion, score-based and flow generative models',
        'docs_dir': str(SITE_SRC), 'site_dir': str(out_dir), 'use_directory_urls': False,
        'theme': {'name': 'material', 'font': False,   # no web fonts: the site works offline
                  'features': ['navigation.footer', 'navigation.sections', 'navigation.top', 'toc.follow',
                               'search.highlight', 'content.code.copy'],
                  'palette': {'primary': 'indigo', 'accent': 'indigo'}},
        'plugins': [{'search': {'separator': r'[\s\-,:!=\[\]()"`/]+|\.(?!\d)'}},   # `dn.sample` finds `sample`; `dpmpp_2m` stays a word
                    'offline', {'mkdocs-jupyter': {'include': ['*.ipynb'], 'no_prompt': True, 'toc_depth': 3,
                                                          'ignore_h1_titles': True,   # the sidebar names pages as the index does
                                                          'cache_dir': str(ROOT / 'build' / 'mkdocs-jupyter-cache')}}],
        'hooks': [str(ROOT / 'tools' / 'docs_hooks.py')],
        'nav': nav,
        'not_in_nav': '\n'.join('/' + site_file(nb.relative_to(NBS)) for nb in nbs if nb.relative_to(NBS) not in listed),
        'extra': {'generator': False, 'polyfills': ['assets/iframe-worker-shim.js']},   # the search worker on file://, from a local copy
        'extra_css': ['assets/site.css'],
        'extra_javascript': ['assets/mathjax-config.js', 'assets/mathjax/tex-svg-full.js'],
    }

def copy_assets():
    "plotly.js once for the site, MathJax, the search worker's file:// shim, the site's CSS, and the widgets' scripts (static/)."
    import plotly, importlib.util
    a = SITE_SRC / 'assets'; a.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(plotly.__file__).parent / 'package_data' / 'plotly.min.js', a / 'plotly.min.js')
    mj = Path(importlib.util.find_spec('mathjax').submodule_search_locations[0]) / 'static' / 'mathjax' / 'es5' / 'tex-svg-full.js'
    (a / 'mathjax').mkdir(exist_ok=True); shutil.copy(mj, a / 'mathjax' / mj.name)
    for f in ASSETS.iterdir(): shutil.copy(f, a / f.name)
    static = ROOT / 'diffnb' / 'static'
    if static.exists(): shutil.copytree(static, SITE_SRC / 'static', dirs_exist_ok=True)

def build_preview(nbs=None, out_dir:Path=OUT) -> Path:
    "Execute (if needed), process and build the offline site into `out_dir` (_docs/); returns the folder."
    import logging
    from mkdocs.config import load_config
    from mkdocs.commands.build import build
    import yaml
    nbs = nbs or notebooks()
    executed = ensure_executed(nbs)
    process(executed)
    if SITE_SRC.exists(): shutil.rmtree(SITE_SRC)
    for src in executed: page_of(src)
    copy_assets()
    cfg_file = ROOT / 'build' / 'mkdocs.yml'   # kept, so `mkdocs serve -f build/mkdocs.yml` shows the same site
    cfg_file.write_text(yaml.safe_dump(mkdocs_config(nbs, out_dir), sort_keys=False))
    for name in ('mkdocs', 'mkdocs.plugins.mkdocs_jupyter', 'mkdocs.mkdocs-jupyter'): logging.getLogger(name).setLevel(logging.WARNING)
    logging.basicConfig(format='mkdocs %(levelname)s: %(message)s')
    for h in logging.getLogger().handlers:   # nbconvert's note on images without alt text, once per page: not news
        h.addFilter(lambda r: 'Alternative text is missing' not in r.getMessage())
    build(load_config(str(cfg_file)))
    return out_dir

if __name__ == '__main__':
    if sys.argv[1:] == ['sidebar']: write_quarto_sidebar(); print('wrote the sidebar of nbs/_quarto.yml'); sys.exit(0)
    if shutil.which('quarto'):
        for nb in ensure_executed(): pass
        env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT / 'tools'), os.environ.get('PYTHONPATH')]))}   # show_doc's renderer
        sys.exit(subprocess.call([str(Path(sys.executable).parent / 'nbdev_docs')], cwd=ROOT, env=env))
    out = build_preview()
    print(f"offline docs (mkdocs-material; Quarto is not installed): {out / 'index.html'}")
