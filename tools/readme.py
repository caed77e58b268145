"""Make README.md from nbs/index.ipynb: markdown and code cells, directives removed, hidden cells dropped (no execution)."""
import re, sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parents[1]

def render() -> str:
    nb = nbformat.read(ROOT / 'nbs' / 'index.ipynb', as_version=4)
    cells, params = [], {}
    for c in nb.cells:   # the parameters cell's small values stand in for its names in the listings, so a listing runs as it is
        if 'parameters' in c.metadata.get('tags', []):
            params = dict(re.findall(r'^(\w+)\s*=\s*([^#\n]+?)\s*(?:#.*)?$', c.source, re.M))
    for c in nb.cells:
        src = c.source
        if c.cell_type == 'code':
            if re.search(r'^#\|\s*(hide|exporti?|export|default_exp)\b', src, re.M) or 'parameters' in c.metadata.get('tags', []): continue
            src = re.sub(r'^#\|.*\n?', '', src, flags=re.M).strip()
            for name, value in params.items(): src = re.sub(rf'\b{name}\b', value, src)
            if not src: continue
        if c.cell_type == 'code' and cells and cells[-1].cell_type == 'code':   # one listing for consecutive code cells
            cells[-1].source += '\n\n' + src; continue
        c = nbformat.from_dict({**c, 'source': src})
        if c.cell_type == 'code': c.outputs = []
        cells.append(c)
    nb.cells = cells
    nb.metadata['language_info'] = {'name': 'python'}   # fenced code gets its language
    body, _ = MarkdownExporter().from_notebook_node(nb)
    body = re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'
    body = re.sub(r'\]\((?!https?:|#)([^)]+\.ipynb)\)', r'](nbs/\1)', body)   # the notebooks live in nbs/, beside README.md's folder
    return "<!-- Made from nbs/index.ipynb by `make readme`: edit the notebook, not this file. -->\n\n" + body

if __name__ == '__main__':
    (ROOT / 'README.md').write_text(render())
    print('wrote README.md')
