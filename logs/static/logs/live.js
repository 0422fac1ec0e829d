// Live tail: poll the feed every second; new exchanges go on top, pending ones are redrawn when they end.
// One poller for two places: the live tail page (its own table) and the exchange list's "Live" switch
// (rows drawn in the list's own columns, inserted above the rows the server drew).
(function () {
  var MAX_ROWS = 500;

  function cell(tr, text, cls, title, label, tag) {
    var td = document.createElement(tag || "td");
    if (label) td.setAttribute("data-label", label);  // shown before the value on a phone (no header row there)
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    if (title) td.title = title;
    tr.appendChild(td);
    return td;
  }

  // A long value as the server's cells show it (Truncator: n characters, the last an ellipsis), whole on hover:
  // drawn whole, a 255-character model or user widened its column past the screen.
  function short(text, n) {
    var chars = Array.from(text == null ? "" : String(text));
    return chars.length > n ? chars.slice(0, n - 1).join("") + "…" : chars.join("");
  }

  function shorten(td, text, n) {
    td.textContent = short(text, n);
    if (td.textContent !== (text == null ? "" : String(text))) td.title = text;
    return td;
  }

  function quiet(td, text) {  // a second line in small grey type, as the list's cells have
    if (!text) return;
    td.appendChild(document.createElement("br"));
    var s = document.createElement("small"); s.className = "quiet"; s.textContent = text; td.appendChild(s);
  }

  function status(td, row) {  // "pending", or the code, how it ended when not normally, and the error's words
    if (row.pending) { td.textContent = "pending"; td.className += " st st-pending"; return; }
    var span = document.createElement("span");
    span.className = row.status ? "st st-" + String(row.status).charAt(0) + "xx" : "st st-none";
    span.textContent = row.status == null ? "—" : row.status;
    td.appendChild(span);
    if (row.outcome !== "completed") td.appendChild(document.createTextNode(" " + row.outcome.replace("_", " ")));
    if (row.error_text) { var s = document.createElement("small"); s.className = "err-text"; s.textContent = " " + row.error_text; td.appendChild(s); }
  }

  // tail({feed, params, body, draw, state, isOn}): polls while isOn(); returns {poll}.
  function tail(opts) {
    var body = opts.body, rows = {}, pending = {}, cursor = "", running = false;
    // Rows already on the page (the list's, drawn by the server): known, and watched while pending.
    Array.prototype.forEach.call(body.children, function (tr) {
      var id = tr.getAttribute("data-id");
      if (!id) return;
      rows[id] = tr;
      if (tr.querySelector(".st-pending")) pending[id] = true;
    });

    function place(row) {
      var tr = opts.draw(row);
      tr.setAttribute("data-id", row.id);
      var old = rows[row.id];
      if (old) {
        if (old.className) tr.className = old.className;
        body.replaceChild(tr, old);
      } else {
        // Newest first: insert before the first row that started earlier (ids are time-ordered).
        var next = null;
        for (var i = 0; i < body.children.length; i++) {
          if (body.children[i].getAttribute("data-id") < row.id) { next = body.children[i]; break; }
        }
        body.insertBefore(tr, next);
        tr.className = "live-new";
      }
      rows[row.id] = tr;
      if (row.pending) pending[row.id] = true; else delete pending[row.id];
    }

    function poll() {
      if (running || !opts.isOn()) return;
      running = true;
      var params = new URLSearchParams(opts.params);
      if (cursor) params.set("cursor", cursor);
      var open = Object.keys(pending);
      if (open.length) params.set("pending", open.join(","));
      fetch(opts.feed + "?" + params.toString(), {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.json(); })
        .then(function (data) {
          if (data.error) { opts.state.textContent = data.error; return; }
          cursor = data.cursor;
          if (!opts.isOn()) return;  // turned off while the poll was out
          data.rows.forEach(function (row) {
            if (!rows[row.id] || pending[row.id]) place(row);  // finished rows never change again
          });
          while (body.children.length > MAX_ROWS) {
            var last = body.lastElementChild;
            delete rows[last.getAttribute("data-id")]; delete pending[last.getAttribute("data-id")];
            body.removeChild(last);
          }
          opts.state.textContent = "updated " + new Date().toLocaleTimeString();
        })
        .catch(function () { opts.state.textContent = "gateway unreachable, retrying"; })
        .finally(function () { running = false; if (opts.isOn()) setTimeout(poll, 1000); });
    }
    return {poll: poll};
  }

  function livePage() {
    var body = document.getElementById("live-rows");
    if (!body) return;
    var toggle = document.getElementById("live-toggle");
    var state = document.getElementById("live-state");
    var t = tail({
      feed: body.getAttribute("data-feed"), body: body, state: state,
      params: JSON.parse(document.getElementById("live-filters").textContent),
      isOn: function () { return toggle.checked; },
      draw: function (row) {
        var tr = document.createElement("tr");
        var a = document.createElement("a");
        a.href = row.url; a.textContent = row.time;
        cell(tr, "").appendChild(a);
        shorten(cell(tr, "", "", row.endpoint), row.model, 32);
        status(cell(tr, ""), row);
        cell(tr, row.pending ? "" : row.latency + (row.ttft ? " (TTFT " + row.ttft + ")" : ""), "num", "", "latency");
        cell(tr, row.pending ? "" : row.tokens, "num", "", "tokens");
        cell(tr, row.pending ? "" : row.cost, "num", "", "cost");
        shorten(cell(tr, "", "", "", "user"), row.user, 28);
        shorten(cell(tr, "", "", "", "session"), row.session, 20);
        return tr;
      }
    });
    toggle.addEventListener("change", function () { if (toggle.checked) t.poll(); else state.textContent = "paused"; });
    t.poll();
  }

  // The list's cells, by column (the names in logs/admin/columns.py); a column not here stays blank until reload.
  var LIST_CELLS = {
    time: function (td, row) {
      var a = document.createElement("a"); a.href = row.url; a.textContent = row.when; td.appendChild(a);
      quiet(td, row.provider + " " + short(row.endpoint, 28));
    },
    model_name: function (td, row) { shorten(td, row.model, 32); },
    status: status,
    latency: function (td, row) { if (!row.pending) { td.textContent = row.latency; quiet(td, row.ttft ? "TTFT " + row.ttft : ""); } },
    tokens: function (td, row) { if (!row.pending) td.textContent = row.tokens; },
    total_tokens: function (td, row) { if (!row.pending) td.textContent = row.tokens; },
    cost: function (td, row) { if (!row.pending) td.textContent = row.cost; },
    who: function (td, row) { shorten(td, row.user, 28); },
    session: function (td, row) { shorten(td, row.session, 20); },
    provider: function (td, row) { td.textContent = row.provider; },
    endpoint_short: function (td, row) { shorten(td, row.endpoint, 48); }
  };

  function listSwitch() {
    var toggle = document.getElementById("list-live");
    var table = document.getElementById("result_list");
    if (!toggle || !table) return;
    var state = document.getElementById("list-live-state");
    var config = JSON.parse(document.getElementById("list-live-config").textContent);
    var STORE = "logs.list.live";  // on or off, across the list's own pages and filters
    var body = table.tBodies[0];
    var columns = Array.prototype.map.call(table.tHead.rows[0].cells, function (th) {
      var m = / column-(\S+)/.exec(" " + th.className);
      return th.classList.contains("action-checkbox-column") ? "action-checkbox" : (m ? m[1] : "");
    });
    Array.prototype.forEach.call(body.rows, function (tr) {  // the server's rows, known by id
      var a = tr.querySelector("a[href*='/change/']");
      var m = a && /\/([0-9a-f-]{32,36})\/change\/$/.exec(a.getAttribute("href"));
      if (m) tr.setAttribute("data-id", m[1].replace(/-/g, ""));
    });
    var t = tail({
      feed: config.feed, params: config.params, body: body, state: state,
      isOn: function () { return toggle.checked && !config.blocked; },
      draw: function (row) {
        var tr = document.createElement("tr");
        columns.forEach(function (name) {
          var td = cell(tr, "", "field-" + name, "", "", name === "time" ? "th" : "td");
          if (name === "action-checkbox") td.className = "action-checkbox";
          if (LIST_CELLS[name]) LIST_CELLS[name](td, row);
        });
        return tr;
      }
    });
    function apply() {
      if (!toggle.checked) { state.textContent = ""; return; }
      if (config.blocked) { state.textContent = config.blocked; return; }
      state.textContent = "connecting…";
      t.poll();
    }
    toggle.checked = localStorage.getItem(STORE) === "on";
    toggle.addEventListener("change", function () {
      localStorage.setItem(STORE, toggle.checked ? "on" : "off");
      apply();
    });
    apply();
  }

  livePage();
  listSwitch();
})();
