"Every notebook follows the house layout: title, summary, a parameters cell with the small CPU defaults; modules say where they export."
import json, re
import pytest
from nbrun import NBS, ROOT, notebooks

NOTEBOOKS = notebooks()

def _cells(nb): return json.loads(nb.read_text())['cells']

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[str(p.relative_to(NBS)) for p in NOTEBOOKS])
def test_layout(nb):
    cells = _cells(nb)
    first = ''.join(cells[0]['source'])
    assert cells[0]['cell_type'] == 'markdown' and re.match(r'# \S', first), f"{nb.name}: first cell must be '# Title'"
    assert re.search(r'^> \S', first, re.M), f"{nb.name}: first cell needs a '> summary' line"
    params = [c for c in cells if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert len(params) == 1, f"{nb.name}: needs exactly one cell tagged 'parameters', found {len(params)}"
    src = ''.join(params[0]['source'])
    assert re.search(r'^run_slow\s*=\s*False', src, re.M), f"{nb.name}: the parameters cell must set run_slow = False"
    assert re.search(r'^device\s*=', src, re.M), f"{nb.name}: the parameters cell must set device"
    code = [''.join(c['source']) for c in cells if c['cell_type'] == 'code']
    if any(re.match(r'#\|\s*export', s) for s in code):
        assert any(re.match(r'#\|\s*default_exp\s+\S', s) for s in code), f"{nb.name}: exports without '#| default_exp'"
    for s in code:   # a GPU-only cell is flagged for nbdev_test and guarded at run time for papermill
        if re.match(r'#\|\s*gpu\b', s): assert 'cuda' in s, f"{nb.name}: a '#| gpu' cell needs a runtime guard on CUDA"

# The source documents' file numbers and the catalog's ids mean nothing to a reader: user-facing text cites the works themselves.
INTERNAL_REF = re.compile(r'\bseed 00\d|\b[Cc]atalog (?:item |id )?[A-Z]\d|\bthe errata\b')
ID_IN_PROSE = re.compile(r'\((?:[BCDEFGNOPSTUV]\d{1,2})(?:, [BCDEFGNOPSTUV]\d{1,2})*\)')   # "(B4)", "(G2, G6)"; in code, (C1) is a variable

def test_user_facing_text_cites_works_not_internal_ids():
    root = NBS.parent
    found = {}
    for nb in NOTEBOOKS:
        cells = _cells(nb)
        text = ''.join(''.join(c['source']) for c in cells)
        prose = ''.join(''.join(c['source']) for c in cells if c['cell_type'] == 'markdown')
        found[str(nb.relative_to(root))] = sorted({m.group(0) for m in INTERNAL_REF.finditer(text)} | {m.group(0) for m in ID_IN_PROSE.finditer(prose)})
    readme = (root / 'README.md').read_text()
    found['README.md'] = sorted({m.group(0) for r in (INTERNAL_REF, ID_IN_PROSE) for m in r.finditer(readme)})
    assert not any(found.values()), {k: v for k, v in found.items() if v}

def test_readme_links_resolve():
    from pathlib import Path
    root = NBS.parent
    links = re.findall(r'\]\(((?!https?:|#)[^)\s]+)\)', (root / 'README.md').read_text())
    assert links, 'README.md has no relative links to check'
    missing = [l for l in links if not (root / l.split('#')[0]).exists()]
    assert not missing, missing

MODULES = sorted(p for p in (ROOT / 'diffnb').glob('*.py') if p.name != '_modidx.py')

def test_modules_are_pyflakes_clean():
    "No unused imports or names (a method grown with @patch beside its explanation reads to pyflakes as a redefinition: allowed)."
    import io
    from pyflakes.api import checkPath
    from pyflakes.reporter import Reporter
    out = io.StringIO()
    for p in MODULES: checkPath(str(p), Reporter(out, out))
    problems = [l for l in out.getvalue().splitlines() if 'redefinition of unused' not in l]
    assert not problems, '\n'.join(problems)

def test_rooms_meet_at_public_names():
    "No module imports another's underscore names or calls a path's private coefficient methods outside the paths room."
    bad = []
    for p in MODULES:
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if re.match(r'\s*from \.\w+ import .*\b_[a-z]', line): bad.append(f"{p.name}:{n}: {line.strip()}")
            if p.name != 'paths.py' and re.search(r'\._(alpha|sigma|dalpha|dsigma)\(', line): bad.append(f"{p.name}:{n}: {line.strip()}")
    assert not bad, '\n'.join(bad)

def test_public_surface_is_deliberate():
    import diffnb as dn
    assert len(dn.__all__) <= 80 and all(hasattr(dn, n) for n in dn.__all__)
    assert not hasattr(dn, 'euler') and not hasattr(dn, 'figure_bundle')     # step generators and display plumbing stay in their rooms
