"""mkdocs hooks of diffnb's offline docs (tools/docs.py builds with them).

- The table of contents is made from the rendered headings, so that each entry links to an id the page has (mkdocs-jupyter makes
  it from a markdown copy without inline code, which loses words such as `Denoiser` in a heading), and repeated ids get a suffix;
  the hidden copies of the code that the copy buttons use are kept out of the search.
- mkdocs-jupyter inlines JupyterLab's stylesheet (about 570 kB) into every page: one copy, assets/notebook-<hash>.css, is linked.
- nbdev links each backquoted name to its documentation; a name without an entry of its own (a private helper, a method the page
  describes in its class's entry) links to its page instead of to a missing anchor.
"""
import hashlib, html, re
from pathlib import Path

_HEADING = re.compile(r'<h([1-3])(\s[^>]*?)?\sid="([^"]*)"([^>]*)>(.*?)</h\1>', re.S)

def on_page_content(content:str, page, config, files) -> str:
    from mkdocs.structure.toc import get_toc
    seen, tokens, stack = {}, [], []
    def heading(m):
        level, pre, hid, post, inner = int(m.group(1)), m.group(2) or '', m.group(3), m.group(4), m.group(5)
        new = hid if hid not in seen else f"{hid}_{seen[hid]}"
        seen[hid] = seen.get(hid, 0) + 1
        if new != hid: inner = inner.replace(f'href="#{hid}"', f'href="#{new}"')
        name = html.unescape(re.sub(r'<[^>]+>', '', inner)).replace('¶', '').strip()
        tok = {'level': level, 'id': new, 'name': name, 'children': []}
        while stack and stack[-1]['level'] >= level: stack.pop()
        (stack[-1]['children'] if stack else tokens).append(tok); stack.append(tok)
        return f'<h{level}{pre} id="{new}"{post}>{inner}</h{level}>'
    content = _HEADING.sub(heading, content)
    page.toc = get_toc(tokens)
    # mkdocs-jupyter's hidden copy of each cell's code (for its copy button) and its "Copied!" notice stay out of the search
    return re.sub(r'<(div|span) ([^>]*class="(?:clipboard-copy-txt|notice)")', r'<\1 data-search-exclude \2', content)

_NOTEBOOK_CSS = re.compile(r'<style type="text/css">\s*(@charset "UTF-8";\.jupyter-wrapper\{.*?)</style>', re.S)
_written = set()

def on_pre_build(config): _written.clear()

def on_post_page(output:str, page, config) -> str:
    def link(m):
        css = m.group(1)
        name = f'assets/notebook-{hashlib.sha1(css.encode()).hexdigest()[:10]}.css'   # one file per distinct stylesheet: one in practice
        if name not in _written:
            out = Path(config['site_dir']) / name; out.parent.mkdir(parents=True, exist_ok=True); out.write_text(css)
            _written.add(name)
        return f'<link rel="stylesheet" href="{"../" * page.url.count("/")}{name}">'
    return _NOTEBOOK_CSS.sub(link, output)

_SYMBOL_LINK = re.compile(r'<a href="([^"#:]*)#([^"]+)"><code>')   # nbdev's doc links: [`name`](page.html#anchor)

def on_post_build(config):
    site = Path(config["site_dir"]).resolve()
    files = [p for p in site.rglob('*.html') if p.name != '404.html']
    ids = {p: set(re.findall(r'\sid="([^"]+)"', p.read_text())) for p in files}
    for p in files:
        text = p.read_text()
        def fix(m):
            target = (p.parent / m.group(1)).resolve() if m.group(1) else p
            return m.group(0) if m.group(2) in ids.get(target, {m.group(2)}) else f'<a href="{m.group(1) or p.name}"><code>'
        new = _SYMBOL_LINK.sub(fix, text)
        if new != text: p.write_text(new)
