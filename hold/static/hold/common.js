// Shared by nav.js and held.js: POST with the page's CSRF token (the cookie is HttpOnly).
window.holdPost = async function (url, fields) {
  const token = (document.querySelector('input[name=csrfmiddlewaretoken]') || {}).value || '';
  const r = await fetch(url, {method: 'POST', credentials: 'same-origin', headers: {'X-CSRFToken': token},
                              body: new URLSearchParams(fields)});
  let data = {};
  try { data = await r.json(); } catch (e) { data = {error: 'HTTP ' + r.status}; }
  return {ok: r.ok, data: data};
};
