// The held-requests page: polls the state every second, lists what waits (time waited, time left) with
// its decision buttons, edits a body to approve (checked as JSON here and by the server), lists recent decisions.
(function () {
  const page = document.getElementById('held-page');
  const list = document.querySelector('#held-list tbody');
  const recent = document.querySelector('#held-recent tbody');
  const editor = document.getElementById('held-editor');
  const form = document.getElementById('held-switch');
  const canDecide = page.dataset.canDecide === '1';
  let editing = null;
  let recentSeen = null;

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function button(td, label, decision, id, cls) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = label;
    b.className = 'decide ' + (cls || '');
    b.dataset.decision = decision;
    b.dataset.id = id;
    td.appendChild(b);
  }

  function row(h) {
    const tr = document.createElement('tr');
    tr.dataset.id = h.id;
    const first = cell(tr, '');
    const a = document.createElement('a');
    a.href = h.log_url;
    a.textContent = h.method + ' ' + h.path;
    first.appendChild(a);
    const code = document.createElement('div');
    code.className = 'rid';
    code.textContent = h.id;
    first.appendChild(code);
    cell(tr, h.provider);
    cell(tr, h.model);
    cell(tr, h.key);
    cell(tr, '', 'waited');
    cell(tr, '', 'left');
    const td = cell(tr, '');
    if (canDecide) {
      button(td, 'Approve', 'approve', h.id, 'approve');
      if (h.editable) button(td, 'Edit…', 'edit', h.id);
      button(td, 'Reject 400', 'reject-400', h.id);
      button(td, 'Reject 500', 'reject-500', h.id);
      button(td, 'Content policy', 'content-policy', h.id);
    }
    return tr;
  }

  function render(state) {
    form.querySelector('.state').textContent = state.on ? 'on' : 'off';
    form.classList.toggle('on', state.on);
    const f = Object.entries(state.filters).map(([k, v]) => k + '=' + v).join(', ');
    form.querySelector('.filters').textContent = state.on ? '(' + (f || 'every request') + ')' : '';
    document.querySelector('.waiting-count').textContent = state.count;
    document.querySelector('#held-page .empty').hidden = state.waiting.length > 0;
    // Rows are kept and updated in place, never rebuilt: a row rebuilt by a poll between a button's press and
    // its release would swallow the click (the browser fires none when the pressed element has gone).
    const rows = new Map(Array.from(list.children, (tr) => [tr.dataset.id, tr]));
    state.waiting.forEach((h, i) => {
      const tr = rows.get(h.id) || row(h);
      rows.delete(h.id);
      tr.querySelector('td.waited').textContent = h.waited_s.toFixed(1) + ' s';
      tr.querySelector('td.left').textContent = h.left_s.toFixed(1) + ' s';
      if (list.children[i] !== tr) list.insertBefore(tr, list.children[i] || null);
    });
    for (const [id, tr] of rows) {
      tr.remove();
    }
    if (editing && !state.waiting.some((h) => h.id === editing)) editorGone();
    const seen = JSON.stringify(state.recent);  // rebuilt only when it changed, for the same reason
    if (seen === recentSeen) return;
    recentSeen = seen;
    recent.textContent = '';
    for (const d of state.recent) {
      const tr = document.createElement('tr');
      const first = cell(tr, '');
      const a = document.createElement('a');
      a.href = d.log_url;
      a.textContent = d.method + ' ' + d.path;
      first.appendChild(a);
      cell(tr, d.decision + (d.edited ? ' (edited body)' : '') + (d.state === 'aborted' ? ' — client left' : ''));
      cell(tr, d.by);
      cell(tr, d.at ? new Date(d.at).toLocaleTimeString() : '');
      cell(tr, d.held_ms === null ? '' : (d.held_ms / 1000).toFixed(1) + ' s');
      recent.appendChild(tr);
    }
  }

  async function refresh() {
    try {
      const r = await fetch(page.dataset.stateUrl, {credentials: 'same-origin', cache: 'no-store'});
      if (r.ok) {
        const state = await r.json();
        render(state);
        document.dispatchEvent(new CustomEvent('hold-state', {detail: state}));
      }
    } catch (e) { /* the server is restarting: try again */ }
  }

  async function poll() {
    await refresh();
    setTimeout(poll, 1000);
  }

  // The answer ({ok, data}); an edited body goes as a file, bounded only by MAX_REQUEST_BODY_BYTES as a client's
  // request is (as a form field, one over DATA_UPLOAD_MAX_MEMORY_SIZE got Django's bare 400: "HTTP 400").
  async function decide(id, decision, body) {
    const fields = {id: id, decision: decision};
    if (body !== undefined) fields.body = new Blob([body], {type: 'application/json'});
    const res = await window.holdPost(page.dataset.decideUrl, fields);
    await refresh();
    return res;
  }

  function refused(res) {
    return res.data.error || 'The decision was not taken';
  }

  // Indented for editing only when that changes nothing but layout: JSON.parse reads every number as a
  // double, so 9007199254740993 came back as ...992 and 1.0 as 1, sent upstream unasked (the reviver's
  // source, where the browser gives it, says whether a number survives; else the text is shown as it came).
  function indented(text) {
    let exact = true;
    const value = JSON.parse(text, function (key, v, context) {
      if (typeof v === 'number' && !(context && context.source === String(v))) exact = false;
      return v;
    });
    return exact ? JSON.stringify(value, null, 2) : text;
  }

  // The body is fetched when the editor opens: the state, polled every second, leaves the bodies out.
  async function editorOpen(id) {
    editing = id;
    editor.hidden = false;
    editor.querySelector('.rid').textContent = id;
    const area = editor.querySelector('textarea');
    area.value = '';
    area.readOnly = true;  // until the body is in
    editor.querySelector('.error').textContent = '';
    editor.querySelector('.send').disabled = true;
    // Below a long list it opened out of sight, the focus left on the button: it looked as if nothing happened.
    editor.scrollIntoView({block: 'nearest'});
    area.focus();
    let data = {};
    try {
      const r = await fetch(page.dataset.bodyUrl + '?id=' + encodeURIComponent(id), {credentials: 'same-origin'});
      data = await r.json();
    } catch (e) { data = {error: 'The body could not be read: ' + e.message}; }
    if (editing !== id) return;  // closed, or another opened, meanwhile
    if (data.body === undefined) {
      editor.querySelector('.error').textContent = data.error || 'The body could not be read';
      return;
    }
    let text = data.body;
    try { text = indented(text); } catch (e) { /* shown as it came */ }
    area.value = text;
    area.readOnly = false;
    editor.querySelector('.send').disabled = false;
  }

  function editorClose() {
    editing = null;
    editor.hidden = true;
  }

  // The request was decided elsewhere or its time ran out while being edited: the text stays, to copy,
  // and says why it can no longer be sent (it vanished with the operator's edit before).
  function editorGone() {
    editor.querySelector('.error').textContent = 'Request ' + editing + ' is no longer waiting (decided ' +
      'elsewhere, or its time ran out): your text stays here to copy, it cannot be sent.';
    editor.querySelector('.send').disabled = true;
    editing = null;
  }

  list.addEventListener('click', function (e) {
    const b = e.target.closest('button.decide');
    if (!b) return;
    if (b.dataset.decision === 'edit') editorOpen(b.dataset.id);
    else decide(b.dataset.id, b.dataset.decision).then(function (res) { if (!res.ok) alert(refused(res)); });
  });
  editor.querySelector('.send').addEventListener('click', async function () {
    const text = editor.querySelector('textarea').value;
    try {
      const value = JSON.parse(text);
      if (value === null || typeof value !== 'object') throw new Error('the body must be a JSON object or array');
    } catch (err) {
      editor.querySelector('.error').textContent = 'Not valid JSON: ' + err.message;
      return;
    }
    const id = editing;
    const res = await decide(id, 'approve', text);
    if (res.ok) editorClose();
    else if (editing === id) editor.querySelector('.error').textContent = refused(res);  // on the page, by the text
  });
  editor.querySelector('.cancel').addEventListener('click', editorClose);
  editor.addEventListener('keydown', function (e) {
    if (e.key === 'Escape') editorClose();
  });
  editor.querySelector('textarea').addEventListener('input', function () {
    editor.querySelector('.error').textContent = '';
  });
  const on = form.querySelector('.turn-on');
  if (on) {
    on.addEventListener('click', async function () {
      const fields = {on: '1'};
      for (const name of ['provider', 'model', 'key', 'path']) fields[name] = form.elements[name].value.trim();
      const res = await window.holdPost(page.dataset.switchUrl, fields);
      if (!res.ok) alert(res.data.error || 'Hold was not turned on');
      await refresh();
    });
    form.querySelector('.turn-off').addEventListener('click', async function () {
      await window.holdPost(page.dataset.switchUrl, {on: '0'});
      await refresh();
    });
  }
  document.addEventListener('hold-refresh', refresh);
  poll();
})();
