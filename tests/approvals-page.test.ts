import assert from 'node:assert/strict';
import { versionTokenFor } from '../lib/version-token';
import { createEnrolment, findEnrolment, useEnrolment } from '../web/enrolment';
import { escapeHtml, listPage } from '../web/page';
import { groupWaiting, rotationWaiting } from '../web/waiting';
import type { GroupProgress, Progress } from '../workflows/messages';
import { tempDir } from './helpers';

const SPEC = `sha256:${'b'.repeat(64)}`;
const RUN = 'run-1';
const progressOf = (change: Partial<Progress> = {}): Progress => ({
  secret: 'db',
  stage: 'approve',
  specHash: SPEC,
  requestedBy: 'carol',
  emergency: false,
  approval: { required: true, needed: 1, approvedBy: [], ignored: [], ignoredCount: 0, waitingFor: ['alice'], escalated: false },
  versions: { current: 'v-old', pending: versionTokenFor(`rotation/db/${RUN}`) },
  consumers: [],
  stages: [],
  ...change,
});

describe('the approvals page (what it offers and shows)', () => {
  it('offers the document rekey approve would sign for a run whose version and spec vouch for it', () => {
    const w = rotationWaiting('default', 'rotation/db', RUN, progressOf(), SPEC);
    assert.deepEqual(w.problems, []);
    const doc = w.document!('approve', 'ok', Date.parse('2026-01-01T00:00:00Z'));
    assert.deepEqual(
      { ...doc },
      {
        kind: 'rekey.dev/decision', namespace: 'default', workflowId: 'rotation/db', runId: RUN, secret: 'db', pendingVersionId: versionTokenFor(`rotation/db/${RUN}`),
        specHash: SPEC, decision: 'approve', comment: 'ok', issuedAt: '2026-01-01T00:00:00.000Z', expiresAt: '2026-01-01T00:15:00.000Z',
      },
    );
  });

  it('does not offer a run whose progress lies: another secret, a version not the run\'s, a spec not reviewed, not waiting', () => {
    const problems = (workflowId: string, p: Progress, reviewed: string | null = SPEC) => {
      const w = rotationWaiting('default', workflowId, RUN, p, reviewed ?? undefined);
      assert.equal(w.document, undefined);
      return w.problems.join('; ');
    };
    assert.match(problems('rotation/other', progressOf()), /workflow rotation\/other is not the rotation of db/);
    assert.match(problems('rotation/db', progressOf({ versions: { pending: versionTokenFor('rotation/db/another-run') } })), /pending version is not the one run run-1 writes/);
    assert.match(problems('rotation/db', progressOf({ specHash: `sha256:${'c'.repeat(64)}` })), /runs spec sha256:c+, but the reviewed manifests say/);
    assert.match(problems('rotation/db', progressOf(), null), /db is not in this server's manifests/);
    assert.match(problems('rotation/db', progressOf({ stage: 'promote' })), /not waiting for approval/);
  });

  it('offers a group one decision bound to every member\'s version, and only when each version is its member run\'s and the spec is reviewed', () => {
    const group = (change: Partial<GroupProgress> = {}): GroupProgress => ({
      group: 'payments',
      stage: 'approve',
      specHash: SPEC,
      requestedBy: 'carol',
      members: [
        { secret: 'db', state: 'prepared', runId: 'r1', pendingVersionId: versionTokenFor('rotation/db/r1') },
        { secret: 'key', state: 'prepared', runId: 'r2', pendingVersionId: versionTokenFor('rotation/key/r2') },
      ],
      approval: { required: true, needed: 1, approvedBy: [], ignored: [], ignoredCount: 0, waitingFor: ['alice'], escalated: false },
      ...change,
    });
    const w = groupWaiting('default', 'group/payments', RUN, group(), SPEC);
    assert.deepEqual(w.problems, []);
    const doc = w.document!('approve', undefined, Date.parse('2026-01-01T00:00:00Z'));
    assert.equal(doc.workflowId, 'group/payments');
    assert.equal(doc.secret, 'payments');
    assert.equal(doc.pendingVersionId, `db@${versionTokenFor('rotation/db/r1')},key@${versionTokenFor('rotation/key/r2')}`);
    const lying = group({ members: [{ secret: 'db', state: 'prepared', runId: 'r1', pendingVersionId: versionTokenFor('rotation/db/other') }] });
    assert.match(groupWaiting('default', 'group/payments', RUN, lying, SPEC).problems.join('; '), /member db's pending version is not the one its run writes/);
    assert.match(groupWaiting('default', 'group/payments', RUN, group(), `sha256:${'c'.repeat(64)}`).problems.join('; '), /runs spec .* but the reviewed manifests say/);
    assert.match(groupWaiting('default', 'group/other', RUN, group(), SPEC).problems.join('; '), /not a run of group payments/);
  });

  it('shows hostile progress as text, bounded', () => {
    const hostile = '<script>alert(1)</script>"\'&';
    const consumers = Array.from({ length: 5000 }, (_, i) => ({ name: `c${i}${hostile}`, state: 'verified' as const }));
    const w = rotationWaiting('default', 'rotation/db', RUN, progressOf({ requestedBy: hostile, reason: hostile.repeat(100), consumers }), SPEC);
    const html = listPage([w], 'token', []);
    assert.ok(!html.includes('<script>alert'), 'unescaped markup');
    assert.ok(html.includes(escapeHtml(hostile)));
    assert.ok(html.length < 20_000, `a progress answer made a ${html.length}-character page`);
    assert.match(html, /and 4968 more/);
    // Garbage instead of a progress answer is shown as unknown, and never offered.
    const garbage = rotationWaiting('default', 'rotation/db', RUN, { secret: 42, approval: 'x', consumers: 'y' } as unknown as Progress, SPEC);
    assert.equal(garbage.document, undefined);
  });

  it('enrolment links expire and work once', async () => {
    const dir = await tempDir();
    const now = Date.now();
    const { token } = await createEnrolment(dir, 'alice', 60_000, now);
    assert.equal((await findEnrolment(dir, token, now + 61_000))?.person, undefined, 'expired');
    const fresh = await createEnrolment(dir, 'bob', 60_000, now);
    const [a, b] = await Promise.all([useEnrolment(dir, fresh.token, now), useEnrolment(dir, fresh.token, now)]);
    assert.deepEqual([a, b].filter(Boolean).map((e) => e!.person), ['bob'], 'used by exactly one');
    assert.equal(await findEnrolment(dir, fresh.token, now), undefined);
    assert.equal(await findEnrolment(dir, '../../etc/passwd', now), undefined);
  });
});
