"""Run notebooks with papermill, as the tests and the docs preview do: once each, in the venv's `diffnb` kernel."""
import os, re, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
EXECUTED = Path(os.environ.get('DIFFNB_EXECUTED', ROOT / 'build' / 'executed'))
KERNEL = os.environ.get('DIFFNB_KERNEL', 'diffnb')

def notebooks() -> list:
    "Every notebook of nbs/ (tutorials included), in name order; folders starting with '.' or '_' are skipped."
    return sorted(p for p in NBS.rglob('*.ipynb') if not any(s.startswith(('.', '_')) for s in p.relative_to(NBS).parts))

def kernel_available(name:str=KERNEL) -> bool:
    from jupyter_client.kernelspec import KernelSpecManager
    return name in KernelSpecManager().find_kernel_specs()

_ansi = re.compile(r'\x1b\[[0-9;]*m')

class NotebookFailed(Exception):
    "A notebook cell raised: the message names the notebook, the cell and the traceback."

def execute(nb:Path, parameters:dict|None=None, out:Path|None=None, kernel:str|None=None) -> Path:
    "Execute `nb` with papermill into EXECUTED (same relative path) in `kernel` (default KERNEL); raise NotebookFailed naming the cell."
    import papermill as pm
    out = out or EXECUTED / nb.relative_to(NBS)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(nb), str(out), parameters=parameters or {}, kernel_name=kernel or KERNEL, cwd=str(nb.parent),
                            progress_bar=False, log_output=False, request_save_on_cell_execute=False)
    except pm.PapermillExecutionError as e:
        src = '\n'.join('    ' + l for l in e.source.splitlines())
        tb = _ansi.sub('', '\n'.join(e.traceback))
        raise NotebookFailed(f"{nb.relative_to(ROOT)}: cell {e.cell_index} (execution count {e.exec_count}) raised {e.ename}: {e.evalue}\n"
                             f"  cell source:\n{src}\n  traceback:\n{tb}\n  executed copy: {out}") from None
    return out
