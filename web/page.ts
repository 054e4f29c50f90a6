// The approvals server's pages: server-rendered HTML, mobile first, every string escaped (most come
// from workflows, which anyone with namespace access can start), and one static script that the
// Content-Security-Policy allows (no inline script, no inline style: an injected tag does nothing).
import type { Waiting } from './waiting';

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const e = escapeHtml;

export const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

function layout(title: string, csrf: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf" content="${e(csrf)}">
<title>${e(title)}</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header><h1>${e(title)}</h1></header>
<main>
${body}
</main>
</body>
</html>
`;
}

function card(w: Waiting): string {
  const facts = w.facts.map((f) => `<dt>${e(f.label)}</dt><dd>${e(f.value)}</dd>`).join('\n');
  const actions = w.document
    ? `<label>comment <input class="comment" maxlength="500" autocomplete="off"></label>
<div class="buttons">
<button class="approve" data-decision="approve">Approve</button>
<button class="reject" data-decision="reject">Reject</button>
</div>`
    : `<p class="problem">Not offered for a decision: ${e(w.problems.join('; '))}</p>`;
  return `<section class="waiting" data-workflow-id="${e(w.workflowId)}" data-run-id="${e(w.runId)}">
<h2>${e(w.kind === 'group' ? 'group' : 'rotation')} <code>${e(w.title)}</code></h2>
<dl>
${facts}
</dl>
${actions}
<p class="status" role="status" aria-live="polite"></p>
<pre class="document" hidden></pre>
</section>`;
}

export function listPage(waiting: Waiting[], csrf: string, problems: string[]): string {
  const notes = problems.map((p) => `<p class="problem">${e(p)}</p>`).join('\n');
  const body = waiting.length ? waiting.map(card).join('\n') : '<p class="empty">Nothing is waiting for a decision.</p>';
  return layout('rekey: waiting for a decision', csrf, `${notes}\n${body}\n<p class="note">Your passkey signs the decision itself (this run, this pending version, this spec); the rotation checks it, not this page.</p>`);
}

export function enrolPage(person: string, options: { rpId: string; challenge: string; userId: string; token: string }, csrf: string): string {
  const data = `data-rp-id="${e(options.rpId)}" data-challenge="${e(options.challenge)}" data-user-id="${e(options.userId)}" data-user="${e(person)}" data-token="${e(options.token)}"`;
  return layout(
    `rekey: enrol a passkey for ${person}`,
    csrf,
    `<section class="enrol" ${data}>
<p>Create a passkey for <strong>${e(person)}</strong>. It counts for nothing until its lines are added to the reviewed manifests.</p>
<div class="buttons"><button class="create">Create passkey</button></div>
<p class="status" role="status" aria-live="polite"></p>
<pre class="snippet" hidden></pre>
</section>`,
  );
}

export function messagePage(title: string, message: string): string {
  return layout(title, '', `<p class="problem">${e(message)}</p>`);
}

export const STYLE = `
:root { font-family: system-ui, sans-serif; color-scheme: light dark; }
body { margin: 0; padding: 0 12px 24px; max-width: 40rem; margin-inline: auto; }
header h1 { font-size: 1.2rem; margin: 12px 0; }
section { border: 1px solid #8884; border-radius: 12px; padding: 12px; margin: 12px 0; }
h2 { font-size: 1.05rem; margin: 0 0 8px; word-break: break-all; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 10px; margin: 0 0 10px; font-size: .92rem; }
dt { color: #888; } dd { margin: 0; word-break: break-all; }
label { display: block; font-size: .9rem; margin-bottom: 8px; }
input.comment { width: 100%; box-sizing: border-box; font-size: 1rem; padding: 8px; }
.buttons { display: flex; gap: 10px; }
button { flex: 1; font-size: 1.1rem; padding: 14px; border-radius: 10px; border: 0; color: #fff; background: #444; }
button.approve { background: #1a7f37; } button.reject { background: #b42318; } button.create { background: #1f6feb; }
button:disabled { opacity: .5; }
.status { font-weight: 600; min-height: 1.2em; } .status.refused { color: #b42318; } .status.done { color: #1a7f37; }
.problem { color: #b42318; } .note, .empty { color: #888; font-size: .9rem; }
pre { white-space: pre-wrap; word-break: break-all; font-size: .8rem; background: #8881; padding: 8px; border-radius: 8px; }
`;

/** The page's only script. It reads data attributes, never HTML, and writes with textContent. */
export const SCRIPT = `'use strict';
const csrf = document.querySelector('meta[name=csrf]').content;
const b64u = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
const fromB64u = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
async function post(url, body) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, csrf }), credentials: 'same-origin' });
  let answer = {};
  try { answer = await res.json(); } catch (e) {}
  if (!res.ok) throw new Error(answer.error || res.statusText);
  return answer;
}
function say(status, text, kind) { status.textContent = text; status.className = 'status' + (kind ? ' ' + kind : ''); }

for (const section of document.querySelectorAll('section.waiting')) {
  const status = section.querySelector('.status');
  const shown = section.querySelector('pre.document');
  for (const button of section.querySelectorAll('button[data-decision]')) {
    button.addEventListener('click', async () => {
      const buttons = section.querySelectorAll('button');
      buttons.forEach((b) => (b.disabled = true));
      try {
        const decision = button.dataset.decision;
        const comment = section.querySelector('input.comment').value || undefined;
        say(status, 'Preparing the decision…');
        const made = await post('/api/challenge', { workflowId: section.dataset.workflowId, runId: section.dataset.runId, decision, comment });
        shown.textContent = made.document;
        shown.hidden = false;
        // The challenge is the sha256 of the document shown above, computed here, not taken from the server.
        const challenge = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(made.document)));
        say(status, 'Confirm with your passkey…');
        const credential = await navigator.credentials.get({ publicKey: { challenge, rpId: made.rpId, userVerification: 'required', timeout: 120000 } });
        const r = credential.response;
        const passkey = { credentialId: b64u(credential.rawId), authenticatorData: b64u(r.authenticatorData), clientDataJSON: b64u(r.clientDataJSON), signature: b64u(r.signature) };
        const result = await post('/api/decide', { document: made.document, passkey });
        say(status, result.message, 'done');
      } catch (err) {
        say(status, 'Refused: ' + (err && err.message ? err.message : String(err)), 'refused');
        buttons.forEach((b) => (b.disabled = false));
      }
    });
  }
}

const enrol = document.querySelector('section.enrol');
if (enrol) {
  const status = enrol.querySelector('.status');
  const button = enrol.querySelector('button.create');
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const d = enrol.dataset;
      say(status, 'Creating the passkey…');
      const credential = await navigator.credentials.create({ publicKey: {
        challenge: fromB64u(d.challenge),
        rp: { id: d.rpId, name: 'rekey approvals' },
        user: { id: fromB64u(d.userId), name: d.user, displayName: d.user },
        pubKeyCredParams: [{ type: 'public-key', alg: -7 }, { type: 'public-key', alg: -8 }],
        authenticatorSelection: { residentKey: 'preferred', userVerification: 'required' },
        attestation: 'none',
        timeout: 120000,
      } });
      const r = credential.response;
      const result = await post('/api/enroll/' + encodeURIComponent(d.token), { clientDataJSON: b64u(r.clientDataJSON), attestationObject: b64u(r.attestationObject) });
      const snippet = enrol.querySelector('pre.snippet');
      snippet.textContent = result.snippet;
      snippet.hidden = false;
      say(status, 'Enrolled. Add these lines to the reviewed manifests; until then this passkey counts for nothing.', 'done');
    } catch (err) {
      say(status, 'Refused: ' + (err && err.message ? err.message : String(err)), 'refused');
      button.disabled = false;
    }
  });
}
`;
