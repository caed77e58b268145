"""Debian chromium driven by Python playwright (never `playwright install`): find it, launch it, screenshot a page."""
import os, shutil, sys
from pathlib import Path

ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run', '--disable-dev-shm-usage']

def chromium_path():
    "The system chromium, or None."
    return shutil.which('chromium') or shutil.which('chromium-browser')

def browser_or_skip():
    "Skip the test with a one-line reason when chromium or playwright is missing; fail instead under DIFFNB_REQUIRE_BROWSER=1 (as in CI)."
    import pytest
    why = None
    if not chromium_path(): why = "no chromium on PATH (apt-get install chromium chromium-driver)"
    else:
        try: import playwright.sync_api  # noqa: F401
        except ImportError: why = "Python playwright is not installed"
    if why:
        if os.environ.get('DIFFNB_REQUIRE_BROWSER') == '1': pytest.fail(f"DIFFNB_REQUIRE_BROWSER=1 but {why}", pytrace=False)
        pytest.skip(why)

def launch(pw):
    "A headless Debian chromium from a sync_playwright() context."
    return pw.chromium.launch(executable_path=chromium_path(), headless=True, args=ARGS)

def screenshot(url:str, out:str, width:int=1280, height:int=900, wait_ms:int=1500, full_page:bool=False):
    "Open `url` and save a PNG screenshot."
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = launch(pw); pg = b.new_page(viewport={'width': width, 'height': height})
        pg.goto(url); pg.wait_for_timeout(wait_ms); pg.screenshot(path=out, full_page=full_page); b.close()

if __name__ == '__main__':
    screenshot(sys.argv[1], sys.argv[2], full_page=len(sys.argv) > 3)

# ---- JupyterLab in a real browser (widget tests and benchmarks)

import json as _json, secrets as _secrets, socket as _socket, subprocess as _subprocess, time as _time, urllib.request as _urlreq

def free_port() -> int:
    with _socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

# JupyterLab's own settings for the tests: no news pop-up over the page (it covered widgets in screenshots)
LAB_SETTINGS = {'@jupyterlab/apputils-extension:notification': {'fetchNews': 'false', 'checkForUpdates': False}}

class Lab:
    "JupyterLab on 127.0.0.1 with a token, serving `root`: `with Lab(root) as lab: lab.url, lab.token`."
    def __init__(self, root, settings:dict|None=None):   # settings: {'package:plugin': {key: value}} on top of LAB_SETTINGS
        self.root, self.settings = Path(root), {**LAB_SETTINGS, **(settings or {})}
    def _write_settings(self) -> Path:
        "User settings and workspaces of this Lab only, in hidden folders of its root (never the user's ~/.jupyter)."
        d = self.root / '.lab-settings'
        for key, value in self.settings.items():
            pkg, plugin = key.split(':')
            f = d / pkg / f'{plugin}.jupyterlab-settings'; f.parent.mkdir(parents=True, exist_ok=True); f.write_text(_json.dumps(value))
        (self.root / '.lab-workspaces').mkdir(exist_ok=True)
        return d
    def __enter__(self):
        port, self.token = free_port(), _secrets.token_hex(16)
        self.log = open(self.root / 'lab.log', 'w')
        env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(self._write_settings()), JUPYTERLAB_WORKSPACES_DIR=str(self.root / '.lab-workspaces'))
        self.proc = _subprocess.Popen([sys.executable, '-m', 'jupyter', 'lab', '--no-browser', '--allow-root', '--expose-app-in-browser',
                                       '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}', f'--IdentityProvider.token={self.token}',
                                       f'--ServerApp.root_dir={self.root}', '--LabApp.news_url=',
                                       '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'], stdout=self.log, stderr=_subprocess.STDOUT, env=env)
        self.url = f'http://127.0.0.1:{port}'
        for _ in range(240):
            try: _urlreq.urlopen(f'{self.url}/api/status?token={self.token}', timeout=2); return self
            except Exception: _time.sleep(0.5)
        self.__exit__(); raise RuntimeError(f"JupyterLab did not start: {(self.root / 'lab.log').read_text()[-2000:]}")
    def __exit__(self, *exc):
        self.proc.terminate()
        try: self.proc.wait(10)
        except _subprocess.TimeoutExpired: self.proc.kill()
        self.log.close()

def write_notebook(path, sources:list, kernel:str='diffnb'):
    "A notebook of code cells."
    cells = [{'cell_type': 'code', 'execution_count': None, 'id': f'c{i}', 'metadata': {}, 'outputs': [], 'source': s} for i, s in enumerate(sources)]
    Path(path).write_text(_json.dumps({'cells': cells, 'metadata': {'kernelspec': {'name': kernel, 'display_name': kernel, 'language': 'python'}},
                                       'nbformat': 4, 'nbformat_minor': 5}))

KERNEL_IDLE = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && k.connectionStatus === 'connected'; }"""

def open_notebook(page, url:str, token:str, name:str, run:bool=True, timeout:float=90):
    "Open a notebook in JupyterLab (?reset), accept a kernel dialog if one asks, wait for an idle kernel, run all cells."
    page.goto(f'{url}/lab/tree/{name}?reset&token={token}')
    page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=timeout * 1000)
    deadline = _time.time() + timeout
    while _time.time() < deadline:
        accept = page.locator('.jp-Dialog .jp-mod-accept')
        if accept.count(): accept.first.click()
        if page.evaluate(KERNEL_IDLE): break
        page.wait_for_timeout(250)
    else: raise TimeoutError("the notebook's kernel never became idle")
    if run: page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

def wait_idle(page, timeout:float=120):
    "Wait until the notebook's kernel is idle."
    page.wait_for_function(KERNEL_IDLE, timeout=timeout * 1000)

class KernelProbe:
    "A second client on the kernel of the notebook a Lab serves: evaluate Python there and get JSON back."
    def __init__(self, url:str, token:str):
        from jupyter_client import BlockingKernelClient
        from jupyter_core.paths import jupyter_runtime_dir
        sessions = _json.loads(_urlreq.urlopen(f'{url}/api/sessions?token={token}', timeout=10).read())
        kid = sessions[0]['kernel']['id']
        self.kc = BlockingKernelClient(connection_file=str(Path(jupyter_runtime_dir()) / f'kernel-{kid}.json'))
        self.kc.load_connection_file(); self.kc.start_channels()
    def __call__(self, code:str, expr:str, timeout:float=300):
        "Run `code`, then return the JSON value of `expr`."
        out = []
        def hook(m):
            if m['msg_type'] == 'stream': out.append(m['content']['text'])
            if m['msg_type'] == 'error': out.append('\n'.join(m['content']['traceback']))
        r = self.kc.execute_interactive(f"{code}\nimport json as _j; print('@@' + _j.dumps({expr}))", timeout=timeout, output_hook=hook)
        text = ''.join(out)
        if r['content']['status'] != 'ok' or '@@' not in text: raise RuntimeError(f"kernel probe failed: {text[-3000:]}")
        return _json.loads(text.split('@@')[-1])
    def close(self): self.kc.stop_channels()

def save_notebook(page, timeout:float=30):
    "Save the current notebook (File > Save) and wait until it is clean."
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function("() => { const w = window.jupyterapp.shell.currentWidget; return w && w.context && !w.context.model.dirty; }", timeout=timeout * 1000)

def shutdown_kernels(url:str, token:str) -> int:
    "Shut every kernel of a Lab down through its REST API (ending their sessions); returns how many."
    sessions = _json.loads(_urlreq.urlopen(f'{url}/api/sessions?token={token}', timeout=10).read())
    for s in sessions: _urlreq.urlopen(_urlreq.Request(f"{url}/api/sessions/{s['id']}?token={token}", method='DELETE'), timeout=30)
    return len(sessions)
