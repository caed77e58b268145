// diffnb SamplerPreview: draws streamed frames (point clouds or image grids) on canvases and acknowledges them.
// A classic script: anywidget gets it with `export default {render: diffnbSamplerRender}` appended (see diffnb/widgets.py);
// the static docs load it with <script src> and render an embedded snapshot through diffnbStaticModel.

function diffnbEl(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; }

function diffnbLim(xy, n, prev) {
  // robust half-width of the view: 98th percentile of max(|x|, |y|) over a strided subsample, never shrinking abruptly
  const k = Math.min(n, 512), stride = Math.max(1, Math.floor(n / k)), v = [];
  for (let i = 0; i < n; i += stride) v.push(Math.max(Math.abs(xy[2 * i]), Math.abs(xy[2 * i + 1])));
  v.sort((a, b) => a - b);
  let lim = 1.2 * (v[Math.floor(0.98 * (v.length - 1))] || 1);
  if (!isFinite(lim) || lim <= 0) lim = 1;
  return prev ? Math.max(lim, 0.8 * prev) : lim;
}

function diffnbDrawPoints(cv, buf, n, state, color) {
  const xy = new Float32Array(buf.buffer, buf.byteOffset, 2 * n);
  const W = cv.width, H = cv.height, ctx = cv.getContext('2d');
  state.lim = diffnbLim(xy, n, state.lim);
  const img = ctx.createImageData(W, H), px = new Uint32Array(img.data.buffer);
  px.fill(0xffffffff);
  const sc = (W / 2 - 4) / state.lim, cx = W / 2, cy = H / 2;
  for (let i = 0; i < n; i++) {
    const u = (cx + xy[2 * i] * sc) | 0, v = (cy - xy[2 * i + 1] * sc) | 0;
    if (u < 0 || v < 0 || u >= W - 1 || v >= H - 1) continue;
    const o = v * W + u; px[o] = color; px[o + 1] = color; px[o + W] = color; px[o + W + 1] = color;
  }
  ctx.putImageData(img, 0, 0);
  ctx.strokeStyle = 'rgba(0,0,0,0.15)'; ctx.beginPath(); ctx.moveTo(0, cy); ctx.lineTo(W, cy); ctx.moveTo(cx, 0); ctx.lineTo(cx, H); ctx.stroke();
  return '\u00b1' + state.lim.toPrecision(3);
}

function diffnbDrawImage(cv, buf, w, h) {
  const ctx = cv.getContext('2d');
  const off = document.createElement('canvas'); off.width = w; off.height = h;
  off.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(buf.buffer, buf.byteOffset, w * h * 4), w, h), 0, 0);
  ctx.imageSmoothingEnabled = false; ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, cv.width, cv.height);
  const s = Math.min(cv.width / w, cv.height / h);
  ctx.drawImage(off, (cv.width - w * s) / 2, (cv.height - h * s) / 2, w * s, h * s);
  return '';
}

const DIFFNB_COLORS = [0xffb4641f, 0xff2c7fff, 0xff0e7ff2, 0xff2ca02c];   // ABGR: blue, orange, ...

function diffnbSamplerRender({ model, el }) {
  const root = diffnbEl('div', 'diffnb-sp'); el.appendChild(root);
  const bar = diffnbEl('div', 'diffnb-sp-controls'); root.appendChild(bar);
  const ctl = {};
  function field(name, label, make) {
    const wrap = diffnbEl('label', 'diffnb-sp-field'); wrap.appendChild(diffnbEl('span', null, label));
    const inp = make(); inp.dataset.trait = name; wrap.appendChild(inp); bar.appendChild(wrap); ctl[name] = { wrap, inp }; return inp;
  }
  function select(name, label, optsTrait) {
    const s = field(name, label, () => diffnbEl('select'));
    const fill = () => { s.innerHTML = ''; for (const m of model.get(optsTrait)) { const o = diffnbEl('option', null, m); o.value = m; s.appendChild(o); } s.value = model.get(name); };
    fill(); model.on('change:' + optsTrait, fill); model.on('change:' + name, () => { s.value = model.get(name); });
    s.addEventListener('change', () => { model.set(name, s.value); model.save_changes(); });
  }
  function number(name, label, step, isInt) {
    const i = field(name, label, () => diffnbEl('input')); i.type = 'number'; i.step = step; i.value = model.get(name);
    model.on('change:' + name, () => { i.value = model.get(name); });
    i.addEventListener('change', () => { const v = isInt ? parseInt(i.value) : parseFloat(i.value); if (!isNaN(v)) { model.set(name, v); model.save_changes(); } });
  }
  select('method', 'method', 'methods'); number('steps', 'steps', 1, true); select('grid_kind', 'grid', 'grid_kinds');
  number('noise', 'noise', 0.1, false); number('scale', 'guidance', 0.5, false); number('label', 'label', 1, true);
  number('seed', 'seed', 1, true); number('n', 'n', 1000, true);
  const cmp = field('compare', 'compare', () => diffnbEl('input')); cmp.type = 'checkbox'; cmp.checked = model.get('compare');
  cmp.addEventListener('change', () => { model.set('compare', cmp.checked); model.save_changes(); });
  model.on('change:compare', () => { cmp.checked = model.get('compare'); syncVis(); });
  select('method2', 'vs', 'methods'); number('steps2', 'steps', 1, true);
  const run = diffnbEl('button', 'diffnb-sp-run', 'Run'), stop = diffnbEl('button', 'diffnb-sp-stop', 'Stop');
  bar.appendChild(run); bar.appendChild(stop);
  run.addEventListener('click', () => model.send({ type: 'run' }));
  stop.addEventListener('click', () => model.send({ type: 'stop' }));
  function syncVis() {
    const nn = model.get('noise_name');
    ctl.noise.wrap.style.display = nn ? '' : 'none'; ctl.noise.wrap.firstChild.textContent = nn || 'noise';
    for (const k of ['scale', 'label']) ctl[k].wrap.style.display = model.get('conditional') ? '' : 'none';
    for (const k of ['method2', 'steps2']) ctl[k].wrap.style.display = model.get('compare') ? '' : 'none';
    run.disabled = model.get('running'); stop.disabled = !model.get('running');
  }
  for (const k of ['noise_name', 'conditional', 'running']) model.on('change:' + k, syncVis);
  syncVis();
  const stats = diffnbEl('div', 'diffnb-sp-stats', model.get('status')); root.appendChild(stats);
  // every status shows (running, fitting a grid, an error); 'done'/'stopped' leave the final frame's fuller line in place
  model.on('change:status', () => { const s = model.get('status'); if (!root.dataset.frames || !/^(done|stopped)$/.test(s)) stats.textContent = s; });
  const grid = diffnbEl('div', 'diffnb-sp-grid'); root.appendChild(grid);
  let panels = [];   // {box, cv, cap, state}
  function layout(specs) {
    if (panels.length === specs.length && panels.every((p, i) => p.kind === specs[i].kind)) return;   // captions change, canvases stay
    grid.innerHTML = ''; panels = [];
    for (const s of specs) {
      const box = diffnbEl('div', 'diffnb-sp-panel'), cap = diffnbEl('div', 'diffnb-sp-cap', s.label), cv = diffnbEl('canvas');
      cv.width = cv.height = model.get('canvas_size'); box.appendChild(cap); box.appendChild(cv); grid.appendChild(box);
      panels.push({ box, cv, cap, kind: s.kind, state: {} });
    }
  }
  let drawn = 0;
  function draw(msg, buffers) {
    layout(msg.panels);
    msg.panels.forEach((s, k) => {
      const p = panels[k], b = buffers[k];
      const extra = s.kind === 'image' ? diffnbDrawImage(p.cv, b, s.w, s.h) : diffnbDrawPoints(p.cv, b, s.n, p.state, DIFFNB_COLORS[(k >> 1) % 4]);
      p.cap.textContent = s.label + (extra ? '  ' + extra : '');
    });
    drawn++;
    root.dataset.frames = drawn; root.dataset.seq = msg.seq; root.dataset.final = msg.final ? '1' : '0'; root.dataset.status = msg.status;
    stats.textContent = `${msg.status}  t=${(+msg.t).toPrecision(4)}  step ${msg.step}/${msg.total}  NFE ${msg.nfe}  ${msg.elapsed.toFixed(2)} s  frame ${msg.seq}`;
  }
  // acknowledgements are cumulative (seq acknowledges every frame up to it): at most one message per ack_ms (a timer sends the
  // latest when frames stop coming), the final frame's at once. Each message costs the kernel a busy/idle round and the page a
  // redraw of JupyterLab's kernel status; one per frame took about a quarter of the page's CPU per frame.
  let lastAck = -1e9, ackTimer = null, pending = 0;
  function ack(seq, final) {
    pending = Math.max(pending, seq);
    const wait = lastAck + model.get('ack_ms') - performance.now();
    if (final || wait <= 0) {
      if (ackTimer) { clearTimeout(ackTimer); ackTimer = null; }
      lastAck = performance.now(); model.send({ type: 'ack', seq: pending, final: !!final });
    } else if (!ackTimer) ackTimer = setTimeout(() => { ackTimer = null; ack(pending, false); }, wait);
  }
  model.on('msg:custom', (msg, buffers) => {
    if (msg.type !== 'frame') return;
    draw(msg, buffers);
    ack(msg.seq, msg.final);
  });
  if (model.get('snapshot_frame')) {   // a static snapshot (docs): the last frame, embedded as base64
    const f = model.get('snapshot_frame');
    draw(f.msg, f.buffers.map(b => { const s = atob(b), u = new Uint8Array(s.length); for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i); return new DataView(u.buffer); }));
  }
  model.send({ type: 'hello' });
}

function diffnbStaticModel(state) {
  // a read-only stand-in for a widget model: the traits embedded in a snapshot; sends go nowhere
  return { get: k => state[k], set: () => {}, save_changes: () => {}, on: () => {}, send: () => {} };
}
