// Shared by nav.js and held.js: POST with the page's CSRF token (the cookie is HttpOnly).
window.holdPost = async function (url, fields) {
  const token = (document.querySelector('input[name=csrfmiddlewaretoken]') || {}).value || '';
  // Multipart: a Blob field goes as a file, which DATA_UPLOAD_MAX_MEMORY_SIZE (the cap of form fields) does not bound.
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (value instanceof Blob) form.append(name, value, name + '.json');
    else form.append(name, value);
  }
  const r = await fetch(url, {method: 'POST', credentials: 'same-origin', headers: {'X-CSRFToken': token},
                              body: form});
  let data = {};
  try { data = await r.json(); } catch (e) { data = {error: 'HTTP ' + r.status}; }
  return {ok: r.ok, data: data};
};
