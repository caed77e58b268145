// diffnb SamplerPreview: draws streamed frames (point clouds or image grids) on canvases and acknowledges them.
// A classic script: anywidget gets it with `export default {render: diffnbSamplerRender}` appended (see diffnb/widgets.py),
// so it travels inside the widget's state (`_esm`) and is never fetched from a website.
// The frame the kernel keeps (the `frame` trait: the prior before the first run, then each run's last frame) is drawn on
// render, so a view opened later, or restored from widget state saved in the notebook, shows it without a kernel.

function diffnbEl(tag, cls, text, title) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  if (title) e.title = title;
  return e;
}

function diffnbBytes(b) {   // a buffer as it arrives (DataView, ArrayBuffer or typed array) -> Uint8Array
  if (b instanceof ArrayBuffer) return new Uint8Array(b);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

function diffnbAxes(ctx, W, H, lim, ticks) {
  // zero lines, and ticks labelled in data units along the bottom (x) and left (y) edges
  const sc = (W / 2 - 4) / lim, cx = W / 2, cy = H / 2;
  ctx.strokeStyle = 'rgba(0,0,0,0.15)'; ctx.lineWidth = 1; ctx.beginPath();
  ctx.moveTo(0, cy + 0.5); ctx.lineTo(W, cy + 0.5); ctx.moveTo(cx + 0.5, 0); ctx.lineTo(cx + 0.5, H); ctx.stroke();
  ctx.strokeStyle = '#888'; ctx.fillStyle = '#555'; ctx.font = '10px sans-serif'; ctx.beginPath();
  for (const v of ticks || []) {
    const u = Math.round(cx + v * sc) + 0.5, w = Math.round(cy - v * sc) + 0.5, lab = String(+v.toPrecision(3));
    ctx.moveTo(u, H); ctx.lineTo(u, H - 5); ctx.moveTo(0, w); ctx.lineTo(5, w);
    ctx.textAlign = 'center'; ctx.textBaseline = 'bottom'; if (v !== 0) ctx.fillText(lab, u, H - 6);
    ctx.textAlign = 'left'; ctx.textBaseline = 'bottom'; if (v !== 0) ctx.fillText(lab, 2, w - 1);   // above its tick: not read as a minus sign
  }
  ctx.stroke();
}

function diffnbDrawPoints(cv, buf, spec, color) {
  let u8 = diffnbBytes(buf);
  if (u8.byteOffset % 4) u8 = u8.slice();
  const n = Math.floor(u8.byteLength / 8), xy = new Float32Array(u8.buffer, u8.byteOffset, 2 * n);
  const W = cv.width, H = cv.height, ctx = cv.getContext('2d');
  const img = ctx.createImageData(W, H), px = new Uint32Array(img.data.buffer);
  px.fill(0xffffffff);
  const sc = (W / 2 - 4) / spec.lim, cx = W / 2, cy = H / 2;
  for (let i = 0; i < n; i++) {
    const u = Math.floor(cx + xy[2 * i] * sc), v = Math.floor(cy - xy[2 * i + 1] * sc);
    if (u < 0 || v < 0 || u >= W - 1 || v >= H - 1) continue;
    const o = v * W + u; px[o] = color; px[o + 1] = color; px[o + W] = color; px[o + W + 1] = color;
  }
  ctx.putImageData(img, 0, 0);
  diffnbAxes(ctx, W, H, spec.lim, spec.ticks);
}

function diffnbDrawImage(cv, buf, spec) {
  const ctx = cv.getContext('2d'), w = spec.w, h = spec.h;
  const off = document.createElement('canvas'); off.width = w; off.height = h;
  off.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(diffnbBytes(buf).slice(0, w * h * 4).buffer), w, h), 0, 0);
  ctx.imageSmoothingEnabled = false; ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, cv.width, cv.height);
  const s = Math.min(cv.width / w, cv.height / h);
  ctx.drawImage(off, (cv.width - w * s) / 2, (cv.height - h * s) / 2, w * s, h * s);
}

function diffnbDrawEmpty(cv, spec) {
  const ctx = cv.getContext('2d'), W = cv.width, H = cv.height;
  ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, W, H);
  if (spec.lim) diffnbAxes(ctx, W, H, spec.lim, spec.ticks);
  ctx.fillStyle = '#999'; ctx.font = '12px sans-serif'; ctx.textAlign = 'center'; ctx.textBaseline = 'middle';
  ctx.fillText(spec.hint || '', W / 2, H / 2 - 14);
}

const DIFFNB_COLORS = [0xffb4641f, 0xff0e7fff, 0xff2ca02c, 0xff2827d6];   // ABGR: blue, orange, green, red (one per sampler)

const DIFFNB_TIPS = {
  method: 'Sampler (dn.SAMPLERS). Only methods that run without extra inputs are offered (analytic_dpm needs data=, the variance heads a head=).',
  steps: 'Steps of the sampler: intervals of its time grid. NFE counts the Denoiser calls.',
  grid_kind: "Time grid (dn.time_grid kind). 'fitted' fits a grid to this Denoiser with dn.fit_grid the first time a method and step count run (seconds).",
  noise: 'Noise level of the sampler: gamma for sde (0: probability-flow ODE, 1: reverse SDE), eta for ddim-like steps, S_churn for edm.',
  scale: 'Classifier-free guidance scale: 1 is the conditional model, 0 the unconditional one, above 1 guided.',
  label: 'Class to sample (-1: unconditional).',
  seed: 'Seed of the initial noise x_T and of the noise the sampler draws.',
  n: 'Number of samples drawn.',
  images: 'Images shown in each panel\u2019s grid.',
  compare: 'Run a second sampler from the same x_T beside the first. Both rows are drawn on one scale, so their spreads compare.',
  method2: 'The second sampler (compare mode).',
  steps2: 'Steps of the second sampler.',
};

function diffnbSamplerRender({ model, el }) {
  const send = m => { try { model.send(m); } catch (e) { /* no kernel (a restored notebook): nothing to tell */ } };
  const root = diffnbEl('div', 'diffnb-sp'); el.appendChild(root);
  const bar = diffnbEl('div', 'diffnb-sp-controls'); root.appendChild(bar);
  const ctl = {};
  function field(name, label, make) {
    const wrap = diffnbEl('label', 'diffnb-sp-field', null, DIFFNB_TIPS[name]); wrap.appendChild(diffnbEl('span', null, label));
    const inp = make(); inp.dataset.trait = name; inp.title = DIFFNB_TIPS[name] || ''; wrap.appendChild(inp); bar.appendChild(wrap);
    ctl[name] = { wrap, inp }; return inp;
  }
  function select(name, label, optsTrait) {
    const s = field(name, label, () => diffnbEl('select'));
    const fill = () => { s.innerHTML = ''; for (const m of model.get(optsTrait) || []) { const o = diffnbEl('option', null, m); o.value = m; s.appendChild(o); } s.value = model.get(name); };
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
  number('seed', 'seed', 1, true); number('n', 'n', 1000, true); number('images', 'images', 1, true);
  const cmp = field('compare', 'compare', () => diffnbEl('input')); cmp.type = 'checkbox'; cmp.checked = model.get('compare');
  cmp.addEventListener('change', () => { model.set('compare', cmp.checked); model.save_changes(); });
  model.on('change:compare', () => { cmp.checked = model.get('compare'); syncVis(); });
  select('method2', 'vs', 'methods'); number('steps2', 'steps', 1, true);
  const button = (cls, text, tip, msg) => { const b = diffnbEl('button', cls, text, tip); bar.appendChild(b); b.addEventListener('click', () => send(msg)); return b; };
  const run = button('diffnb-sp-run', 'Run', 'Sample with these settings (disabled while a run or a grid fit is in progress).', { type: 'run' });
  const stop = button('diffnb-sp-stop', 'Stop', 'Stop after the current step; its state stays drawn as the final frame.', { type: 'stop' });
  const gif = button('diffnb-sp-gif', 'GIF', 'Write the last run as an animated GIF next to the notebook, one frame per drawn frame. From Python: pv.save_gif(path).', { type: 'export', format: 'gif' });
  const png = button('diffnb-sp-png', 'PNG', 'Write the last frame as a PNG next to the notebook. From Python: pv.save_png(path), pv.image(), or pv.figure() for a plotly figure.', { type: 'export', format: 'png' });
  const status = diffnbEl('div', 'diffnb-sp-status'); root.appendChild(status);
  const grid = diffnbEl('div', 'diffnb-sp-grid'); root.appendChild(grid);
  let panels = [], heads = [], last = null, drawn = 0, since = 0, timer = null;

  function syncVis() {
    const nn = model.get('noise_name'), busy = model.get('running');
    ctl.noise.wrap.style.display = nn ? '' : 'none'; ctl.noise.wrap.firstChild.textContent = nn || 'noise';
    for (const k of ['scale', 'label']) ctl[k].wrap.style.display = model.get('conditional') ? '' : 'none';
    ctl.images.wrap.style.display = model.get('is_image') ? '' : 'none';
    for (const k of ['method2', 'steps2']) ctl[k].wrap.style.display = model.get('compare') ? '' : 'none';
    run.disabled = busy; stop.disabled = !busy; gif.disabled = busy || !model.get('recorded'); png.disabled = busy;
  }
  function showStatus() {
    // the kernel's status, always: ready, fitting a grid, running, done, stopped, an export, or an error with its message
    const s = model.get('status') || '', busy = model.get('running');
    let text = s;
    if (busy) text += ` · ${((performance.now() - since) / 1000).toFixed(0)} s`;
    else if (last && last.final && last.seq && (s === 'done' || s === 'stopped')) text += ` in ${last.elapsed.toFixed(2)} s`;
    status.textContent = text;
    status.classList.toggle('diffnb-sp-error', s.startsWith('error'));
    status.title = `Status of the preview. ${drawn} frames drawn in this view; frames are sent at most max_fps a second, so a fast ` +
                   'sampler shows fewer frames than steps (the last state is always drawn).';
    root.dataset.status = s;
  }
  function onRunning() {
    if (model.get('running')) { since = performance.now(); if (!timer) timer = setInterval(showStatus, 1000); }
    else if (timer) { clearInterval(timer); timer = null; }
    syncVis(); showStatus();
  }
  for (const k of ['noise_name', 'conditional', 'is_image', 'recorded']) model.on('change:' + k, syncVis);
  model.on('change:running', onRunning); model.on('change:status', showStatus);

  function layout(msg) {
    const key = msg.panels.map(p => p.kind + p.group).join();
    if (grid.dataset.key === key) return;
    grid.dataset.key = key; grid.innerHTML = ''; panels = []; heads = [];
    const size = model.get('canvas_size');
    msg.panels.forEach((s, k) => {
      if (!k || s.group !== msg.panels[k - 1].group) { const h = diffnbEl('div', 'diffnb-sp-head'); grid.appendChild(h); heads[s.group] = h; }
      const box = diffnbEl('div', 'diffnb-sp-panel'), cap = diffnbEl('div', 'diffnb-sp-cap'), cv = diffnbEl('canvas');
      cv.width = cv.height = size; box.appendChild(cap); box.appendChild(cv); grid.appendChild(box);
      panels.push({ cap, cv });
    });
  }
  function draw(msg, buffers) {
    layout(msg);
    msg.panels.forEach((s, k) => {
      const p = panels[k], color = DIFFNB_COLORS[s.group % 4];
      if (s.kind === 'image') diffnbDrawImage(p.cv, buffers[k], s);
      else if (s.kind === 'points') diffnbDrawPoints(p.cv, buffers[k], s, color);
      else diffnbDrawEmpty(p.cv, s);
      p.cap.textContent = s.label; p.cv.title = s.tip || ''; p.cap.title = s.tip || ''; p.cv.dataset.lim = s.lim || '';
    });
    (msg.runs || []).forEach((r, g) => { if (heads[g]) { heads[g].textContent = r.text; heads[g].title = r.tip || ''; } });
    last = msg; showStatus();
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
      lastAck = performance.now(); send({ type: 'ack', seq: pending, final: !!final });
    } else if (!ackTimer) ackTimer = setTimeout(() => { ackTimer = null; ack(pending, false); }, wait);
  }
  model.on('msg:custom', (msg, buffers) => {
    if (msg.type !== 'frame') return;
    draw(msg, buffers);
    drawn++;
    root.dataset.frames = drawn; root.dataset.seq = msg.seq; root.dataset.final = msg.final ? '1' : '0';
    ack(msg.seq, msg.final);
  });
  function drawKept() {   // the kept frame: the prior view, or the last run's final frame (also without a kernel)
    const f = model.get('frame');
    if (!f || !f.msg || model.get('running')) return;
    if (f.msg.seq > 0 && last && last.seq === f.msg.seq && last.final) return;   // this view drew that frame live, with every point
    draw(f.msg, f.buffers);
  }
  model.on('change:frame', drawKept);
  syncVis(); onRunning(); drawKept();
  send({ type: 'hello' });
  return () => { if (timer) clearInterval(timer); if (ackTimer) clearTimeout(ackTimer); send({ type: 'bye' }); };
}
