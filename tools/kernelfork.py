"""A fork server for the test run's notebook kernels: one process imports torch and the other libraries the notebooks share once,
then forks a fresh ipykernel for each notebook (a kernel that imports them itself spends about 3 s of CPU on it, and 2.3 s more on
torch._dynamo once it makes an optimiser; 27 notebooks).

`python tools/kernelfork.py serve SOCKET` imports, prints `ready` and serves; `kernelspec(folder, SOCKET)` writes a Jupyter
kernelspec whose kernel is `python tools/kernelfork.py client SOCKET -f CONNECTION_FILE`: a small process that hands its
standard streams, working directory, environment and arguments to the server, forwards the signals Jupyter sends it (interrupt,
terminate) to the forked kernel, and exits with the kernel's exit status. Without a server listening, the client becomes an
ordinary kernel (`python -m ipykernel_launcher`), so a notebook runs the same either way.

The forked kernel is a fresh process as far as a notebook can tell: its own pid, working directory, environment and argv; Python's,
numpy's and torch's global random states drawn afresh from the OS.
The server stays single-threaded (fork copies only the forking thread), and it refuses to serve if an import started a thread.
It preloads only libraries whose import does not depend on being in a kernel (PRELOAD).
"""
import json, os, signal, socket, sys

PRELOAD = ('torch', 'torch._dynamo', 'numpy', 'pandas', 'scipy.stats', 'scipy.special', 'scipy.optimize', 'sklearn.datasets', 'PIL.Image',
           'safetensors.torch', 'ipykernel.kernelapp', 'ipykernel.ipkernel')
# torch._dynamo: torch's optimisers import it when the first one is made (Optimizer.add_param_group is wrapped by torch._disable_dynamo,
# which imports it on first call): 2.3 s of CPU in each kernel that trains, once here instead.
# Not diffnb, plotly, tqdm, fastcore or ipywidgets: they look at the IPython shell when imported (plotly picks its renderer, tqdm.auto its
# bar, fastcore sets IN_NOTEBOOK, ipywidgets registers its comm target), and the shell exists only once the forked kernel starts.

def kernelspec(folder, sock:str, name:str='diffnb-fork') -> str:
    "Write the kernelspec `name` into folder/kernels/ (put `folder` on JUPYTER_PATH); returns the name."
    d = os.path.join(folder, 'kernels', name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'kernel.json'), 'w') as f:
        json.dump({'argv': [sys.executable, os.path.abspath(__file__), 'client', sock, '-f', '{connection_file}'],
                   'display_name': 'Python (diffnb, forked)', 'language': 'python', 'metadata': {'debugger': False}}, f)
    return name

# ---- the client: what Jupyter starts and signals

def client(sock:str, argv:list):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try: s.connect(sock)
    except OSError: os.execv(sys.executable, [sys.executable, '-m', 'ipykernel_launcher', *argv])   # no server: an ordinary kernel
    req = {'argv': argv, 'cwd': os.getcwd(), 'env': dict(os.environ)}
    socket.send_fds(s, [json.dumps(req).encode() + b'\n'], [0, 1, 2])
    f = s.makefile('r')
    pid = int(f.readline())
    forward = lambda signum, frame: s.sendall(f'signal {signum}\n'.encode())
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2): signal.signal(sig, forward)
    line = f.readline()   # 'exit N' when the kernel ends; '' if the server went away
    sys.exit(int(line.split()[1]) if line.startswith('exit') else 1)

# ---- the server

def _child(req:dict, fds:list, closing:list):
    "In the forked process: become the kernel the client would have started."
    for c in closing: c.close()
    for target, fd in enumerate(fds): os.dup2(fd, target); os.close(fd)
    os.chdir(req['cwd'])
    os.environ.clear(); os.environ.update(req['env'])
    import importlib.util, random, numpy as np, torch
    sys.argv = [importlib.util.find_spec('ipykernel_launcher').origin, *req['argv']]
    if sys.path[0] == os.path.dirname(os.path.abspath(__file__)): del sys.path[0]   # as ipykernel_launcher drops its own; the shell adds ''
    random.seed(); np.random.seed(); torch.seed()   # fresh random states, as a new process draws them
    code = 0
    try:
        from ipykernel import kernelapp
        handle = [f"--IPKernelApp.parent_handle={os.environ['JPY_PARENT_PID']}"] if os.environ.get('JPY_PARENT_PID') else []   # its default was read at import
        kernelapp.launch_new_instance(argv=[*req['argv'], *handle])
    except SystemExit as e: code = e.code if isinstance(e.code, int) else 0
    except BaseException:
        import traceback; traceback.print_exc(); code = 1
    finally:
        try:
            import atexit; atexit._run_exitfuncs()
            sys.stdout.flush(); sys.stderr.flush()
        finally: os._exit(code)

def _request(conn:socket.socket):
    "The client's request and its three standard streams; None when it went away before sending all of them."
    msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    while msg and not msg.endswith(b'\n'):
        more = conn.recv(1 << 20)
        msg = msg + more if more else b''
    if msg and len(fds) == 3: return json.loads(msg), fds
    for fd in fds: os.close(fd)
    return None

def serve(sock:str):
    import importlib, select, threading
    for m in PRELOAD: importlib.import_module(m)
    if threading.active_count() != 1: sys.exit(f"kernelfork: an import started a thread ({threading.enumerate()}); not forking from it")
    if os.path.exists(sock): os.unlink(sock)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); srv.bind(sock); srv.listen(16)
    print('ready', flush=True)
    kids, conns, parent = {}, {}, os.getppid()  # pid -> connection, connection -> pid
    while True:
        ready, _, _ = select.select([srv, *conns], [], [], 0.1)
        for c in ready:
            if c is srv:
                conn, _ = srv.accept()
                got = _request(conn)
                if got is None: conn.close(); continue
                req, fds = got
                pid = os.fork()
                if pid == 0: _child(req, fds, [srv, conn, *conns])
                for fd in fds: os.close(fd)
                kids[pid], conns[conn] = conn, pid
                conn.sendall(f'{pid}\n'.encode())
                continue
            data = c.recv(4096)
            if not data:                           # the client is gone (killed): so is its kernel, and nobody is left to tell
                pid = conns.pop(c); kids[pid] = None; c.close()
                try: os.kill(pid, signal.SIGKILL)
                except ProcessLookupError: pass
                continue
            for line in data.decode().splitlines():
                if line.startswith('signal '):
                    try: os.kill(conns[c], int(line.split()[1]))
                    except ProcessLookupError: pass
        while kids:                                # reap ended kernels, tell their clients
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0: break
            conn = kids.pop(pid, None)
            if conn is None: continue              # not ours, or its client is gone
            conns.pop(conn, None)
            try: conn.sendall(f'exit {os.waitstatus_to_exitcode(status)}\n'.encode()); conn.close()
            except OSError: pass
        if os.getppid() != parent: break           # whoever started the server is gone

if __name__ == '__main__':
    cmd, sock, *rest = sys.argv[1:]
    if cmd == 'serve': serve(sock)
    elif cmd == 'client': client(sock, rest)
    else: sys.exit(f"usage: {sys.argv[0]} serve|client SOCKET [kernel arguments]")
