/**
 * The inspector's page: plain HTML, CSS and JavaScript served by the agent itself (no framework,
 * nothing fetched from elsewhere, so it works offline). Everything recorded is untrusted text:
 * the script only ever sets it with textContent, and the CSP allows no inline script.
 */

export const INSPECTOR_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Tunnel inspector</title><link rel="stylesheet" href="/app.css"></head>
<body>
<header>
  <strong>Tunnel inspector</strong>
  <select id="f-status" title="status class"><option value="">any status</option><option value="2">2xx</option><option value="3">3xx</option><option value="4">4xx</option><option value="5">5xx</option><option value="err">errors</option></select>
  <select id="f-method" title="method"><option value="">any method</option><option>GET</option><option>POST</option><option>PUT</option><option>PATCH</option><option>DELETE</option><option>HEAD</option><option>OPTIONS</option></select>
  <input id="f-path" type="search" placeholder="filter by path" autocomplete="off">
  <span id="count"></span>
  <span id="live" class="off">offline</span>
  <button id="clear" type="button">Clear</button>
</header>
<main>
  <section id="list-pane"><table id="list"><thead><tr><th>time</th><th>method</th><th>path</th><th>status</th><th>duration</th><th>size</th></tr></thead><tbody></tbody></table>
  <p id="empty">No requests yet. Requests to your tunnel appear here as they arrive.</p></section>
  <section id="detail"><p class="hint">Select a request to see it in full.</p></section>
</main>
<script src="/app.js"></script>
</body></html>
`;

export const INSPECTOR_CSS = `*{box-sizing:border-box}body{margin:0;font:13px/1.4 system-ui,sans-serif;color:#1d2430;background:#f6f7f9;height:100vh;display:flex;flex-direction:column}
header{display:flex;gap:8px;align-items:center;padding:8px 12px;background:#1d2430;color:#fff}header strong{margin-right:8px}
header input,header select,button{font:inherit;padding:3px 6px;border:1px solid #b9c0cc;border-radius:4px;background:#fff;color:#1d2430}
button{cursor:pointer}button:hover{background:#eef2f8}#f-path{width:16em}#count{margin-left:auto;opacity:.8}
#live{font-size:11px;padding:1px 6px;border-radius:8px;background:#2f9e44}#live.off{background:#c92a2a}
main{flex:1;display:flex;min-height:0}#list-pane{flex:1 1 50%;overflow:auto;border-right:1px solid #d5dae1;background:#fff}
#detail{flex:1 1 50%;overflow:auto;padding:10px 14px}table{border-collapse:collapse;width:100%}
#list th{position:sticky;top:0;background:#eef0f3;text-align:left;font-weight:600;padding:4px 8px;border-bottom:1px solid #d5dae1}
#list td{padding:3px 8px;border-bottom:1px solid #eef0f3;white-space:nowrap}#list td.path{max-width:28em;overflow:hidden;text-overflow:ellipsis}
#list tr{cursor:pointer}#list tbody tr:hover{background:#f1f5fb}#list tr.sel{background:#dbe7fb}
.s2{color:#2b8a3e}.s3{color:#1864ab}.s4{color:#e67700}.s5,.serr{color:#c92a2a}.dim{color:#868e96}.tag{font-size:11px;background:#e7f0ff;color:#1864ab;border-radius:3px;padding:0 4px;margin-left:4px}
#empty,.hint{color:#868e96;padding:12px}h2{font-size:15px;margin:4px 0 8px;word-break:break-all}h3{font-size:13px;margin:14px 0 4px}
.bar{display:flex;gap:6px;flex-wrap:wrap;margin:6px 0}.kv{width:auto}.kv td{padding:1px 12px 1px 0;vertical-align:top;word-break:break-all}.kv td:first-child{color:#5c6470;white-space:nowrap}
pre{background:#fff;border:1px solid #d5dae1;border-radius:4px;padding:8px;overflow:auto;max-height:40vh;white-space:pre-wrap;word-break:break-all;margin:0}
.timing span{margin-right:14px}a{color:#1864ab;cursor:pointer}form#edit-form{background:#fff;border:1px solid #d5dae1;border-radius:4px;padding:8px;margin:8px 0}
form#edit-form label{display:block;margin:4px 0 2px;color:#5c6470}form#edit-form input,form#edit-form textarea{width:100%;font:12px ui-monospace,monospace;padding:4px;border:1px solid #b9c0cc;border-radius:4px}
#toast{position:fixed;bottom:12px;right:12px;background:#1d2430;color:#fff;padding:6px 10px;border-radius:4px}
`;

export const INSPECTOR_JS = `'use strict';
var rows = new Map(), max = 500, selected = null, detail = null, editing = false, renderQueued = false;
var $ = function (id) { return document.getElementById(id); };
function el(tag, attrs, kids) {
  var e = document.createElement(tag);
  if (attrs) for (var k in attrs) { if (k === 'text') e.textContent = attrs[k]; else if (k.slice(0, 2) === 'on') e.addEventListener(k.slice(2), attrs[k]); else e.setAttribute(k, attrs[k]); }
  (kids || []).forEach(function (c) { if (c != null) e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c); });
  return e;
}
function size(n) { return n < 1024 ? n + ' B' : n < 1048576 ? (n / 1024).toFixed(1) + ' KiB' : (n / 1048576).toFixed(1) + ' MiB'; }
function ms(v) { return v == null ? '' : v < 10 ? v.toFixed(1) + ' ms' : v < 10000 ? Math.round(v) + ' ms' : (v / 1000).toFixed(1) + ' s'; }
function clock(iso) { var d = new Date(iso); return d.toTimeString().slice(0, 8) + '.' + String(d.getMilliseconds()).padStart(3, '0'); }
function statusClass(r) { return r.state === 'error' && (!r.status || r.status >= 500) ? 'serr' : r.status ? 's' + String(r.status)[0] : 'dim'; }
function statusText(r) { return r.status ? String(r.status) + (r.state === 'error' ? ' !' : '') : r.state === 'error' ? 'error' : r.state; }
function shown(r) {
  var s = $('f-status').value, m = $('f-method').value, p = $('f-path').value.toLowerCase();
  if (s === 'err' && !(r.state === 'error' || (r.status && r.status >= 500))) return false;
  if (s && s !== 'err' && String(r.status || '')[0] !== s) return false;
  if (m && r.method !== m) return false;
  if (p && r.path.toLowerCase().indexOf(p) === -1) return false;
  return true;
}
function queueRender() { if (!renderQueued) { renderQueued = true; requestAnimationFrame(render); } }
function render() {
  renderQueued = false;
  var tb = $('list').tBodies[0], all = Array.from(rows.values()).sort(function (a, b) { return b.id - a.id; }), n = 0;
  var frag = document.createDocumentFragment();
  all.forEach(function (r) {
    if (!shown(r)) return;
    n++;
    var tr = el('tr', { 'data-id': r.id, 'data-method': r.method, 'data-status': r.status || '', onclick: function () { select(r.id); } }, [
      el('td', { text: clock(r.startedAt), class: 'dim' }), el('td', { text: r.method }),
      el('td', { class: 'path', title: r.path }, [r.path, r.replayOf ? el('span', { class: 'tag', text: 'replay of #' + r.replayOf }) : null, r.upgrade ? el('span', { class: 'tag', text: r.upgrade }) : null]),
      el('td', { text: statusText(r), class: statusClass(r) }), el('td', { text: ms(r.durationMs) }), el('td', { text: size(r.responseSize) })]);
    if (r.id === selected) tr.className = 'sel';
    frag.appendChild(tr);
  });
  tb.replaceChildren(frag);
  $('count').textContent = n === all.length ? all.length + ' requests' : n + ' of ' + all.length + ' requests';
  $('empty').style.display = all.length ? 'none' : '';
}
function api(method, path, body) {
  return fetch(path, { method: method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined })
    .then(function (res) { return res.json().then(function (j) { if (!res.ok) throw new Error(j.error || res.statusText); return j; }); });
}
function toast(text) { var t = el('div', { id: 'toast', text: text }); document.body.appendChild(t); setTimeout(function () { t.remove(); }, 1800); }
function select(id) { selected = id; editing = false; queueRender(); loadDetail(); }
var loading = false, reload = false;
function loadDetail() {
  if (selected == null) return;
  if (loading) { reload = true; return; }
  loading = true;
  var id = selected;
  api('GET', '/api/requests/' + id).then(function (d) { if (id === selected) { detail = d; if (!editing) showDetail(d); } })
    .catch(function (e) { if (id === selected) $('detail').replaceChildren(el('p', { class: 'hint', text: e.message })); })
    .finally(function () { loading = false; if (reload) { reload = false; loadDetail(); } });
}
function kv(pairs) { return el('table', { class: 'kv' }, [el('tbody', null, pairs.map(function (p) { return el('tr', null, [el('td', { text: p[0] }), el('td', { text: p[1] })]); }))]); }
function bodyView(b, id) {
  if (!b || b.kind === 'empty') return el('p', { class: 'dim', text: 'No body.' });
  var note = b.omitted === 'truncated' ? 'showing the first ' + size(b.captured) + ' of ' + size(b.size) : b.omitted === 'dropped' ? 'body (' + size(b.size) + ') dropped to stay within the memory limit' : '';
  if (b.kind === 'binary' || b.text == null) return el('p', { class: 'dim', text: 'Binary body: ' + (b.contentType || 'unknown type') + ', ' + size(b.size) + (note ? ' (' + note + ')' : '') + '.' });
  var main = b.form ? kv(b.form) : el('pre', { id: id, text: b.pretty || b.text });
  return el('div', null, [el('div', { class: 'dim', text: (b.contentType || 'no content type') + ' · ' + size(b.size) + (b.decoded ? ' · ' + b.decoded + ' decoded' : '') + (note ? ' · ' + note : '') }), main, b.form ? el('details', null, [el('summary', { text: 'raw' }), el('pre', { text: b.text })]) : null]);
}
function link(id, label) { return el('a', { text: label || '#' + id, onclick: function () { select(id); } }); }
function showDetail(d) {
  var t = d.timing, kids = [
    el('h2', null, [d.method + ' ' + d.path + ' ', el('span', { class: statusClass(d), text: '→ ' + (d.status ? d.status + ' ' + (d.statusText || '') : d.state) })]),
    d.error ? el('p', { class: 'serr', text: d.error }) : null,
    el('div', { class: 'timing' }, [el('span', { text: 'started ' + new Date(d.startedAt).toLocaleString() }), el('span', { text: 'request read ' + ms(t.requestDoneMs) }), el('span', { text: 'first byte ' + ms(t.responseStartMs) }), el('span', { text: 'total ' + (t.durationMs == null ? d.state + '…' : ms(t.durationMs)) })]),
    d.replayOf ? el('p', null, ['Replay of ', link(d.replayOf)]) : null,
    d.replays.length ? el('p', { id: 'replays' }, ['Replayed as '].concat(d.replays.map(function (r, i) { return el('span', null, [i ? ', ' : '', link(r)]); }))) : null,
    el('div', { class: 'bar' }, [el('button', { id: 'replay', type: 'button', text: 'Replay', onclick: function () { replay(d, {}); } }), el('button', { id: 'edit', type: 'button', text: 'Edit and replay…', onclick: function () { editForm(d); } }), el('button', { id: 'copy-curl', type: 'button', text: 'Copy as curl', onclick: function () { copy(d.curl); } })]),
    el('div', { id: 'edit-slot' }),
    el('h3', { text: 'Request headers' }), kv(d.request.headers), el('h3', { text: 'Request body' }), bodyView(d.request.body, 'request-body'),
    el('h3', { text: 'Response headers' }), d.response ? kv(d.response.headers) : el('p', { class: 'dim', text: 'No response (yet).' }),
    el('h3', { text: 'Response body' }), d.response ? bodyView(d.response.body, 'response-body') : null,
    d.upgradeBytes ? el('p', { class: 'dim', text: d.upgrade + ': ' + size(d.upgradeBytes.toApp) + ' to the app, ' + size(d.upgradeBytes.toClient) + ' to the visitor' }) : null];
  $('detail').replaceChildren.apply($('detail'), kids.filter(Boolean));
}
function editForm(d) {
  editing = true;
  var b = d.request.body, body = b.kind === 'empty' ? '' : b.text != null && !b.omitted ? b.text : '';
  var f = el('form', { id: 'edit-form' }, [
    el('label', { text: 'Method' }), el('input', { id: 'edit-method', value: d.method }),
    el('label', { text: 'Path' }), el('input', { id: 'edit-path', value: d.path }),
    el('label', { text: 'Headers (one per line, Name: value)' }), el('textarea', { id: 'edit-headers', rows: 6 }),
    el('label', { text: 'Body' + (b.omitted ? ' (the original was not captured in full: type the body to send)' : '') }), el('textarea', { id: 'edit-body', rows: 6 }),
    el('div', { class: 'bar' }, [el('button', { type: 'submit', id: 'edit-send', text: 'Send' }), el('button', { type: 'button', text: 'Cancel', onclick: function () { editing = false; showDetail(d); } })])]);
  f.querySelector('#edit-headers').value = d.request.headers.filter(function (h) { return !/^(content-length|transfer-encoding)$/i.test(h[0]); }).map(function (h) { return h[0] + ': ' + h[1]; }).join('\\n');
  f.querySelector('#edit-body').value = body;
  f.addEventListener('submit', function (ev) {
    ev.preventDefault();
    var headers = f.querySelector('#edit-headers').value.split('\\n').filter(function (l) { return l.trim(); }).map(function (l) { var i = l.indexOf(':'); return [l.slice(0, i).trim(), l.slice(i + 1).trim()]; });
    replay(d, { method: f.querySelector('#edit-method').value.trim(), path: f.querySelector('#edit-path').value.trim(), headers: headers, body: f.querySelector('#edit-body').value });
  });
  $('edit-slot').replaceChildren(f);
}
function replay(d, changes) {
  api('POST', '/api/requests/' + d.id + '/replay', changes).then(function (r) { toast('Replayed as #' + r.id); select(r.id); }).catch(function (e) { toast('Replay failed: ' + e.message); });
}
function copy(text) {
  var done = function () { toast('Copied the curl command'); };
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback); else fallback();
  function fallback() { var t = el('textarea'); t.value = text; document.body.appendChild(t); t.select(); document.execCommand('copy'); t.remove(); done(); }
}
['f-status', 'f-method', 'f-path'].forEach(function (id) { $(id).addEventListener('input', queueRender); });
$('clear').addEventListener('click', function () { api('DELETE', '/api/requests'); });
var es = new EventSource('/api/events');
es.addEventListener('open', function () { $('live').textContent = 'live'; $('live').className = ''; });
es.addEventListener('error', function () { $('live').textContent = 'offline'; $('live').className = 'off'; });
es.addEventListener('snapshot', function (ev) { var s = JSON.parse(ev.data); max = s.maxExchanges; rows.clear(); s.requests.forEach(function (r) { rows.set(r.id, r); }); queueRender(); if (selected != null) loadDetail(); });
es.addEventListener('exchanges', function (ev) {
  JSON.parse(ev.data).forEach(function (r) { rows.set(r.id, r); if (r.id === selected || (detail && r.replayOf === detail.id)) loadDetail(); });
  if (rows.size > max) Array.from(rows.keys()).sort(function (a, b) { return a - b; }).slice(0, rows.size - max).forEach(function (id) { rows.delete(id); });
  queueRender();
});
es.addEventListener('clear', function () { rows.clear(); selected = null; detail = null; $('detail').replaceChildren(el('p', { class: 'hint', text: 'Cleared.' })); queueRender(); });
render();
`;
