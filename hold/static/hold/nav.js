// Every admin page: the held-requests count badge (pulses while requests wait), the hold switch and a
// short beep when a new request starts waiting (mutable; the choice is kept in this browser).
(function () {
  const nav = document.getElementById('hold-nav');
  if (!nav) return;
  const badge = document.getElementById('hold-badge');
  const count = badge.querySelector('.count');
  const sw = document.getElementById('hold-switch');
  const mute = document.getElementById('hold-mute');
  let last = null;
  let newest = null;  // the newest held request's time, as last seen
  let on = false;
  const muted = () => localStorage.getItem('holdMuted') === '1';

  function muteShow() {
    mute.textContent = muted() ? 'Sound: off' : 'Sound: on';
    mute.title = muted() ? 'Sound off: click to beep when a request starts waiting' : 'Sound on: click to mute';
    mute.setAttribute('aria-pressed', String(muted()));
  }

  function beep() {
    document.body.dataset.holdBeeps = String(parseInt(document.body.dataset.holdBeeps || '0', 10) + 1);
    if (muted()) return;
    try {
      const ctx = window.holdAudio || (window.holdAudio = new (window.AudioContext || window.webkitAudioContext)());
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = 880;
      gain.gain.value = 0.08;
      osc.connect(gain);
      gain.connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.15);
    } catch (e) { /* no audio device: the badge still pulses */ }
  }

  function update(state) {
    count.textContent = state.count;
    badge.classList.toggle('busy', state.count > 0);
    // A new arrival: the count went up, or the newest held request is newer than the last one seen (one
    // left as another came between two polls).
    if (last !== null && (state.count > last || (state.newest && (!newest || state.newest > newest)))) beep();
    last = state.count;
    newest = state.newest;
    on = state.on;
    sw.querySelector('.state').textContent = on ? 'on' : 'off';
    sw.classList.toggle('on', on);
  }

  const heldPage = document.getElementById('held-page');

  async function refresh() {
    if (heldPage) {  // the held-requests page polls the full state itself and hands it over
      document.dispatchEvent(new Event('hold-refresh'));
      return;
    }
    try {
      const r = await fetch(nav.dataset.stateUrl, {credentials: 'same-origin', cache: 'no-store'});
      if (r.ok) update(await r.json());
    } catch (e) { /* the server is restarting: try again */ }
  }

  async function poll() {
    await refresh();
    setTimeout(poll, 1000);
  }

  if (sw.tagName === 'BUTTON') {  // a span for users who may only look
    sw.addEventListener('click', async function () {
      await window.holdPost(nav.dataset.switchUrl, {on: on ? '0' : '1'});
      await refresh();
    });
  }
  mute.addEventListener('click', function () {
    localStorage.setItem('holdMuted', muted() ? '0' : '1');
    muteShow();
  });
  muteShow();
  if (heldPage) {
    document.addEventListener('hold-state', (e) => update(e.detail));
  } else {
    poll();
  }
})();
