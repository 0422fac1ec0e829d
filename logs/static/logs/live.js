// Live tail: poll the feed every second; new exchanges go on top, pending ones are redrawn when they end.
(function () {
  var table = document.getElementById("live-rows");
  if (!table) return;
  var feed = table.getAttribute("data-feed");
  var filters = JSON.parse(document.getElementById("live-filters").textContent);
  var toggle = document.getElementById("live-toggle");
  var state = document.getElementById("live-state");
  var rows = {};  // id -> <tr>
  var pending = {};  // id -> true while the exchange has no response
  var cursor = "";
  var MAX_ROWS = 500;

  function cell(tr, text, cls, title, label) {
    var td = document.createElement("td");
    if (label) td.setAttribute("data-label", label);  // shown before the value on a phone (no header row there)
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    if (title) td.title = title;
    tr.appendChild(td);
    return td;
  }

  function draw(row) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-id", row.id);
    var a = document.createElement("a");
    a.href = row.url; a.textContent = row.time;
    cell(tr, "").appendChild(a);
    cell(tr, row.model, "", row.endpoint);
    if (row.pending) {
      cell(tr, "pending", "st st-pending");
    } else {
      var cls = row.status ? "st st-" + String(row.status).charAt(0) + "xx" : "st st-none";
      var td = cell(tr, row.status == null ? "—" : row.status, cls);
      if (row.outcome !== "completed") td.textContent += " " + row.outcome.replace("_", " ");
      if (row.error_text) { var s = document.createElement("small"); s.className = "err-text"; s.textContent = " " + row.error_text; td.appendChild(s); }
    }
    cell(tr, row.pending ? "" : row.latency + (row.ttft ? " (TTFT " + row.ttft + ")" : ""), "num", "", "latency");
    cell(tr, row.pending ? "" : row.tokens, "num", "", "tokens");
    cell(tr, row.pending ? "" : row.cost, "num", "", "cost");
    cell(tr, row.user, "", "", "user");
    cell(tr, row.session, "", "", "session");
    return tr;
  }

  function place(row) {
    var tr = draw(row);
    var old = rows[row.id];
    if (old) {
      table.replaceChild(tr, old);
    } else {
      // Newest first: insert before the first row that started earlier (ids are time-ordered).
      var next = null;
      for (var i = 0; i < table.children.length; i++) {
        if (table.children[i].getAttribute("data-id") < row.id) { next = table.children[i]; break; }
      }
      table.insertBefore(tr, next);
      tr.className = "live-new";
    }
    rows[row.id] = tr;
    if (row.pending) pending[row.id] = true; else delete pending[row.id];
  }

  function poll() {
    if (!toggle.checked) return;
    var params = new URLSearchParams(filters);
    if (cursor) params.set("cursor", cursor);
    var open = Object.keys(pending);
    if (open.length) params.set("pending", open.join(","));
    fetch(feed + "?" + params.toString(), {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json(); })
      .then(function (data) {
        if (data.error) { state.textContent = data.error; return; }
        cursor = data.cursor;
        data.rows.forEach(function (row) {
          var old = rows[row.id];
          if (!old || pending[row.id]) place(row);  // finished rows never change again
        });
        while (table.children.length > MAX_ROWS) {
          var last = table.lastElementChild;
          delete rows[last.getAttribute("data-id")]; delete pending[last.getAttribute("data-id")];
          table.removeChild(last);
        }
        state.textContent = "updated " + new Date().toLocaleTimeString();
      })
      .catch(function () { state.textContent = "gateway unreachable, retrying"; })
      .finally(function () { setTimeout(poll, 1000); });
  }

  toggle.addEventListener("change", function () { if (toggle.checked) poll(); else state.textContent = "paused"; });
  poll();
})();
