import sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))

NOTEBOOK_TIMES = {}

def pytest_collection_modifyitems(session, config, items):
    "Notebooks first (their executed copies feed the docs test), browser tests last."
    rank = lambda it: 0 if 'test_notebooks' in it.nodeid else 2 if 'test_browser' in it.nodeid else 1
    items.sort(key=rank)

def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not NOTEBOOK_TIMES: return
    from nbrun import EXECUTED
    tr = terminalreporter
    tr.section('notebook run times')
    tr.write_line(f"executed copies: {EXECUTED}")
    tr.write_line(f"{'notebook':<40} {'seconds':>8}  result")
    for name, (secs, ok) in NOTEBOOK_TIMES.items(): tr.write_line(f"{name:<40} {secs:8.1f}  {'ok' if ok else 'FAILED'}")
    tr.write_line(f"{'total':<40} {sum(s for s, _ in NOTEBOOK_TIMES.values()):8.1f}")
