// teal dashboard: reads GET /events (fetch streaming, so the token can go in a header), falls
// back to polling GET /status + GET /history, and acts through the admin API. No framework; the
// page runs under a CSP without inline scripts, inline styles or eval.
'use strict';

const TOKEN_KEY = 'teal-admin-token';
const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';

let token = sessionStorage.getItem(TOKEN_KEY) || '';
let last = null; // the last {status, history, events, now}
let mode = 'connecting';
let pollTimer = null;
let needToken = false;
let poolNames = '';
const peaks = {}; // the most a draining pool had open, for its progress bar

// ---- small DOM helpers (text only: nothing from the server becomes markup)
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function add(parent, ...kids) { kids.forEach((k) => k && parent.appendChild(k)); return parent; }
function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
function headers(json) {
  const h = {};
  if (json) h['Content-Type'] = 'application/json';
  if (token) h.Authorization = 'Bearer ' + token;
  return h;
}

// ---- time
function ago(iso) {
  if (!iso) return '';
  const now = last && last.now ? Date.parse(last.now) : Date.now();
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (isNaN(s)) return iso;
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  if (s < 86400) return Math.floor(s / 3600) + ' h ago';
  return Math.floor(s / 86400) + ' d ago';
}
function timeEl(iso, prefix) {
  const t = el('time', null, (prefix || '') + ago(iso));
  if (iso) { t.dateTime = iso; t.title = iso; }
  return t;
}

// ---- token
// The token form shows when the API asks for a token (401) or the operator forgets it; without
// an admin token configured it never shows.
function showToken(prompt) {
  $('token-form').hidden = !prompt;
  $('token-set').hidden = !token || !!prompt;
  if (prompt) $('token').focus();
}
function askToken(why) {
  needToken = true;
  token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  showToken(true);
  message(why, true);
}
$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token = $('token').value.trim();
  $('token').value = '';
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  showToken(false);
  message('', false);
  if (needToken) { needToken = false; restart(); }
});
$('token-forget').addEventListener('click', () => {
  token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  showToken(true);
});

function message(text, bad, detail) {
  const m = $('message');
  clear(m);
  m.hidden = !text;
  m.className = 'message ' + (bad ? 'bad' : 'good');
  if (!text) return;
  add(m, el('strong', null, bad ? 'Refused: ' : 'Done: '), el('span', 'message-text', text));
  if (detail && detail.length) {
    const ul = el('ul');
    detail.forEach((d) => ul.appendChild(el('li', null, d)));
    m.appendChild(ul);
  }
}

// ---- live data: the event stream, polling as a fallback
function setMode(m, text) {
  mode = m;
  const c = $('conn');
  c.textContent = text;
  c.className = 'conn conn-' + m;
}

let backoff = 1000;
let generation = 0; // bumps to drop a stale stream
let ctrl = null; // aborts the stream in use
let lastByte = 0;
async function stream() {
  const mine = ++generation;
  if (ctrl) ctrl.abort();
  ctrl = new AbortController();
  lastByte = Date.now();
  let res;
  try {
    res = await fetch('/events', { headers: headers(false), cache: 'no-store', signal: ctrl.signal });
  } catch (e) {
    return retry(mine, 'stream failed: ' + e.message);
  }
  if (res.status === 401) {
    askToken('The admin API wants a token: enter it above.');
    setMode('down', 'waiting for the token');
    return;
  }
  if (!res.ok || !res.body) return retry(mine, 'stream answered ' + res.status);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let name = '';
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done || mine !== generation) break;
      lastByte = Date.now();
      buf += dec.decode(value, { stream: true });
      const lines = buf.split(/\r\n|\r|\n/);
      buf = lines.pop();
      for (const line of lines) {
        if (line === '') {
          if (data.length && (name === '' || name === 'status')) onStatus(data.join('\n'));
          name = ''; data = [];
        } else if (line[0] === ':') {
          continue;
        } else if (line.startsWith('event:')) {
          name = line.slice(6).trim();
        } else if (line.startsWith('data:')) {
          data.push(line.slice(line[5] === ' ' ? 6 : 5));
        }
      }
    }
  } catch (e) {
    if (mine === generation) return retry(mine, 'stream broke: ' + e.message);
    return;
  }
  if (mine === generation) retry(mine, 'stream ended');
}
function onStatus(text) {
  let doc;
  try { doc = JSON.parse(text); } catch (e) { return; }
  backoff = 1000;
  stopPolling();
  setMode('live', 'live (event stream)');
  render(doc);
}
function retry(mine, why) {
  if (mine !== generation) return;
  startPolling(why);
  setTimeout(() => { if (mine === generation) stream(); }, backoff);
  backoff = Math.min(backoff * 2, 15000);
}
// teal sends at least once a second: a stream silent for 5 s is dead even if the socket is not.
setInterval(() => {
  if (ctrl && mode === 'live' && Date.now() - lastByte > 5000) ctrl.abort();
}, 1000);
function restart() { stopPolling(); backoff = 1000; stream(); }
function startPolling(why) {
  if (pollTimer) return;
  setMode('poll', 'polling every second (' + why + ')');
  const tick = async () => {
    try {
      const [s, h] = await Promise.all([
        fetch('/status', { headers: headers(false), cache: 'no-store' }),
        fetch('/history', { headers: headers(false), cache: 'no-store' }),
      ]);
      if (s.status === 401) { stopPolling(); askToken('The admin API wants a token: enter it above.'); return; }
      if (!s.ok) throw new Error('status ' + s.status);
      const status = await s.json();
      const history = h.ok ? await h.json() : null;
      render({ status, history, events: last ? last.events : null, now: new Date().toISOString() });
      setMode('poll', 'polling every second (' + why + ')');
    } catch (e) {
      setMode('down', 'no answer from teal (' + e.message + '), retrying');
    }
  };
  tick();
  pollTimer = setInterval(tick, 1000);
}
function stopPolling() { if (pollTimer) { clearInterval(pollTimer); pollTimer = null; } }

// ---- rendering
function stateBadge(state) {
  return el('span', 'badge state-' + String(state).replace(/[^a-z_]/g, ''), state);
}
function fmt(n, digits) {
  if (n === null || n === undefined || isNaN(n)) return '–';
  return Number(n).toFixed(digits);
}
function pct(x) { return x === null || x === undefined ? '–' : fmt(x * 100, x * 100 < 10 ? 1 : 0) + '%'; }

// A small line chart of the last minute, with its latest value as text beside it.
function chart(label, values, show) {
  const w = 120, h = 28;
  const box = el('figure', 'chart');
  const nums = (values || []).map((v) => (v === null || v === undefined ? null : Number(v)));
  const known = nums.filter((v) => v !== null);
  const max = Math.max(1e-9, ...known);
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
  svg.setAttribute('width', w);
  svg.setAttribute('height', h);
  svg.setAttribute('role', 'img');
  const lastVal = known.length ? nums[nums.length - 1] : null;
  svg.setAttribute('aria-label', label + ' over the last minute, now ' + show(lastVal));
  const base = document.createElementNS(SVG, 'line');
  base.setAttribute('x1', 0); base.setAttribute('x2', w);
  base.setAttribute('y1', h - 1); base.setAttribute('y2', h - 1);
  base.setAttribute('class', 'axis');
  svg.appendChild(base);
  let pts = [];
  const flush = () => {
    if (pts.length) {
      const pl = document.createElementNS(SVG, 'polyline');
      pl.setAttribute('points', pts.join(' '));
      pl.setAttribute('class', 'line');
      svg.appendChild(pl);
    }
    pts = [];
  };
  // A minute wide, newest at the right: a young teal's few samples sit at the right end.
  const slots = Math.max(60, nums.length);
  const skip = slots - nums.length;
  nums.forEach((v, i) => {
    if (v === null) return flush();
    pts.push(((skip + i) * w / (slots - 1)).toFixed(1) + ',' + (h - 2 - (v / max) * (h - 4)).toFixed(1));
  });
  flush();
  const cap = el('figcaption', null);
  add(cap, el('span', 'chart-label', label + ' '), el('span', 'chart-value', show(lastVal)));
  add(box, cap, svg);
  return box;
}

function render(doc) {
  last = doc;
  const s = doc.status || {};
  const pools = s.pools || {};
  const names = Object.keys(pools);
  if (names.join('\n') !== poolNames) { poolNames = names.join('\n'); buildPoolControls(names); }
  // A form still aimed at the pool that has since gone live moves to a ready standby pool.
  document.querySelectorAll('.pool-select').forEach((sel) => {
    if (sel.value !== s.active || document.activeElement === sel) return;
    const pick = names.find((n) => n !== s.active && pools[n].ready);
    if (pick) sel.value = pick;
  });

  const active = $('active-pool');
  active.textContent = s.active || '?';
  active.className = 'pool-name pool-' + (s.active || '');
  document.querySelectorAll('#switch-buttons button').forEach((b) => {
    const live = b.dataset.switch === s.active;
    b.disabled = live;
    b.textContent = live ? b.dataset.switch + ' (live)' : 'Switch to ' + b.dataset.switch;
  });
  $('generation').textContent = s.generation === undefined ? '?' : s.generation;
  $('canary').textContent = s.canary && s.canary.percent > 0
    ? s.canary.percent + '% of default-route clients to ' + s.canary.pool + ' (sticky: ' + s.canary.sticky + ')'
    : 'off';
  renderMirror(s.mirror);
  renderRollout(s.rollout);
  renderPools(s, doc.history);
  renderEvents(doc.events);
}

function renderMirror(m) {
  const d = $('mirror');
  if (!m) { d.textContent = 'off'; return; }
  let t = m.percent + '% of requests copied to ' + m.pool + (m.copying ? '' : ' (resting: that pool is live)');
  const l = m.latest;
  if (l && l.copies) t += '; ' + l.copies + ' copies, ' + pct(l.same) + ' same answer, mirror 5xx ' + pct(l.mirror_5xx);
  d.textContent = t;
}

function renderRollout(r) {
  const d = $('rollout');
  const list = clear($('rollout-events'));
  if (!r || r.state === 'idle') { d.textContent = 'none'; return; }
  clear(d);
  add(d, stateBadge(r.state));
  if (r.pool !== undefined) {
    d.appendChild(document.createTextNode(' ' + r.pool + ': step ' + (r.step + 1) + ' of ' + r.steps.length +
      ' (' + r.percent + '%), every ' + r.interval + ', max error rate ' + r.max_error_rate));
  }
  if (r.window) {
    d.appendChild(el('div', 'sub', 'last window: ' + r.window.requests + ' requests, ' + r.window.errors +
      ' errors (' + pct(r.window.error_rate) + '), p99 ' + (r.window.p99_ms === null ? '–' : fmt(r.window.p99_ms, 1) + ' ms')));
  }
  if (r.reason) d.appendChild(el('div', 'sub', 'reason: ' + r.reason));
  (r.events || []).slice(-5).reverse().forEach((e) => {
    add(list, add(el('li'), timeEl(e.at), el('span', null, ' ' + e.text)));
  });
}

function renderPools(s, history) {
  const root = clear($('pools'));
  const hp = (history && history.pools) || {};
  const hs = (history && history.servers) || {};
  Object.entries(s.pools || {}).forEach(([name, p]) => {
    const card = el('article', 'card pool' + (p.active ? ' pool-live' : ''));
    card.dataset.pool = name;
    const h = el('h3', null);
    add(h, el('span', 'pool-name pool-' + name, name), el('span', 'badge ' + (p.active ? 'live' : 'idle'), p.active ? 'LIVE' : 'standby'));
    if (!p.ready) h.appendChild(el('span', 'badge state-unhealthy', 'not ready'));
    if (s.canary && s.canary.pool === name && s.canary.percent > 0) h.appendChild(el('span', 'badge canary', 'canary ' + s.canary.percent + '%'));
    card.appendChild(h);
    const facts = el('p', 'sub', 'in flight ' + p.in_flight + ', tunnels ' + p.tunnels);
    card.appendChild(facts);
    if (p.draining) {
      // Drain progress: what is still open of the old pool, and since when.
      const dr = el('div', 'drain');
      const open = p.in_flight + p.tunnels;
      const peak = Math.max(open, peaks[name] || 0, 1);
      peaks[name] = peak;
      const bar = el('progress');
      bar.max = peak; bar.value = peak - open;
      bar.setAttribute('aria-label', 'drained');
      add(dr, el('span', 'badge draining', 'draining'), document.createTextNode(' ' + open + ' open (' + p.in_flight + ' requests, ' + p.tunnels + ' tunnels) '), timeEl(p.draining_since, 'since '), bar);
      card.appendChild(dr);
    } else if (!p.active) {
      delete peaks[name];
      card.appendChild(el('p', 'sub', 'drained: nothing open'));
    }
    const ph = hp[name];
    if (ph) {
      const charts = el('div', 'charts');
      add(charts,
        chart('req/s', ph.rps, (v) => fmt(v, 1)),
        chart('errors', ph.error_rate, pct),
        chart('p99', ph.p99_ms, (v) => (v === null ? '–' : fmt(v, 1) + ' ms')));
      card.appendChild(charts);
    }
    const table = el('table', 'servers');
    const head = el('tr');
    ['server', 'health', 'last check', 'in flight', 'req/s'].forEach((t) => head.appendChild(el('th', null, t)));
    add(table, add(el('thead'), head));
    const body = el('tbody');
    (p.servers || []).forEach((sv) => {
      const tr = el('tr');
      tr.dataset.server = sv.address;
      add(tr, el('td', 'addr', sv.address));
      const hc = add(el('td'), stateBadge(sv.health), document.createTextNode(' '), timeEl(sv.since, 'since '));
      if (sv.last_error) hc.appendChild(el('div', 'err', sv.last_error));
      tr.appendChild(hc);
      const lc = el('td');
      if (sv.last_check) {
        add(lc, el('span', 'badge ' + (sv.last_check.ok ? 'ok' : 'fail'), sv.last_check.ok ? 'ok' : 'failed'),
          document.createTextNode(' ' + (sv.last_check.detail || '') + ' '), timeEl(sv.last_check.at));
      } else {
        lc.textContent = 'no active checks';
      }
      tr.appendChild(lc);
      tr.appendChild(el('td', 'num', sv.in_flight + (sv.tunnels ? ' +' + sv.tunnels + ' tunnels' : '')));
      const rc = el('td');
      const sh = hs[name + '/' + sv.address];
      if (sh) rc.appendChild(chart('req/s', sh.rps, (v) => fmt(v, 1)));
      tr.appendChild(rc);
      body.appendChild(tr);
    });
    table.appendChild(body);
    const wrap = add(el('div', 'table-wrap'), table);
    card.appendChild(wrap);
    root.appendChild(card);
  });
}

function renderEvents(events) {
  const list = clear($('events'));
  if (!events) { list.appendChild(el('li', 'sub', 'events arrive with the event stream')); return; }
  if (!events.length) { list.appendChild(el('li', 'sub', 'no events yet')); return; }
  events.slice(-50).reverse().forEach((e) => {
    add(list, add(el('li', 'event kind-' + String(e.kind).replace(/[^a-z_]/g, '')),
      timeEl(e.at), el('span', 'badge kind', e.kind), el('span', null, e.text)));
  });
}

// ---- actions
function buildPoolControls(names) {
  const box = clear($('switch-buttons'));
  names.forEach((n) => {
    const b = el('button', 'switch', 'Switch to ' + n);
    b.type = 'button';
    b.dataset.switch = n;
    b.addEventListener('click', () => act('POST', '/switch', { to: n }, 'switched to ' + n));
    box.appendChild(b);
  });
  document.querySelectorAll('.pool-select').forEach((sel) => {
    const keep = sel.value;
    clear(sel);
    names.forEach((n) => { const o = el('option', null, n); o.value = n; sel.appendChild(o); });
    if (names.includes(keep)) sel.value = keep;
    else if (last && last.status) {
      const pools = last.status.pools;
      const others = names.filter((n) => n !== last.status.active);
      const pick = others.find((n) => pools[n].ready) || others[0];
      if (pick) sel.value = pick;
    }
  });
}

async function act(method, path, body, done) {
  message('', false);
  let res, doc = null;
  try {
    res = await fetch(path, {
      method, headers: headers(body !== null), cache: 'no-store',
      body: body === null ? undefined : JSON.stringify(body),
    });
    try { doc = await res.json(); } catch (e) { doc = null; }
  } catch (e) {
    message('could not reach teal: ' + e.message, true);
    return;
  }
  if (res.status === 401) { askToken('The token was refused (401): enter it again above, then repeat the action.'); return; }
  if (!res.ok) {
    const detail = [];
    if (doc && doc.servers && typeof doc.servers === 'object') {
      Object.entries(doc.servers).forEach(([addr, h]) => {
        detail.push(addr + ': ' + (h.state || '?') + (h.last_error ? ' (' + h.last_error + ')' : ''));
      });
    }
    message(res.status + ' ' + ((doc && doc.error) || res.statusText), true, detail);
    return;
  }
  message(done, false);
  if (mode !== 'live') startPolling('action');
}

$('canary-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const pool = $('canary-pool').value;
  const percent = Number($('canary-percent').value);
  act('POST', '/canary', { pool, percent }, 'canary ' + percent + '% to ' + pool);
});
$('canary-off').addEventListener('click', () => act('DELETE', '/canary', null, 'canary off'));
$('mirror-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const pool = $('mirror-pool').value;
  act('POST', '/mirror', { pool }, 'mirroring to ' + pool);
});
$('mirror-off').addEventListener('click', () => act('DELETE', '/mirror', null, 'mirroring off'));
$('rollout-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const steps = $('rollout-steps').value.split(/[\s,]+/).filter(Boolean).map(Number);
  act('POST', '/rollout', {
    pool: $('rollout-pool').value, steps,
    interval: $('rollout-interval').value.trim(),
    max_error_rate: $('rollout-rate').value.trim(),
  }, 'rollout started');
});
$('rollout-abort').addEventListener('click', () => act('POST', '/rollout/abort', null, 'rollout aborted'));

showToken(false);
setInterval(() => { if (last) renderTimes(); }, 1000);
function renderTimes() {
  document.querySelectorAll('time[datetime]').forEach((t) => {
    const prefix = t.textContent.startsWith('since ') ? 'since ' : '';
    t.textContent = prefix + ago(t.dateTime);
  });
}
// A hidden tab lets go of its stream: a browser opens at most six connections to one host and
// every open dashboard holds one, so six background tabs would leave none for the actions.
function pause() {
  generation++; // drops the stream in use and any retry under way
  if (ctrl) ctrl.abort();
  ctrl = null;
  stopPolling();
  setMode('paused', 'paused while the tab is hidden');
}
document.addEventListener('visibilitychange', () => (document.hidden ? pause() : restart()));
if (document.hidden) pause(); else stream();
