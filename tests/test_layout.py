"Every notebook follows the house layout: title, summary, a parameters cell with the small CPU defaults; modules say where they export."
import json, re
import pytest
from nbrun import NBS, notebooks

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
