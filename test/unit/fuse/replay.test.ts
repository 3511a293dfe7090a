// The exactly-once policy (src/fuse/replay.ts) over a real journal: a re-run is answered from
// the journal when its first run completed, run relaxed when only its intent is there, not run
// again when its effect landed, and answered EIO when the previous worker was stuck in it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReplayPolicy, NO_ANSWER, PRE_ABSENT, PRE_EXISTED, type ReplayRule } from '../../../src/fuse/replay';
import { Req } from '../../../src/fuse/request';
import { Replay } from '../../../src/virtio/queue-runner';
import { Journal, J_DONE, J_INTENT } from '../../../src/state/journal';
import { OP, SIZE } from '../../../src/fuse/abi';
import { E } from '../../../src/linux/constants';
import { silentLogger } from '../../../src/log';

interface Env { out: Uint8Array; probed: number; ran: number; answer: number }
const NO_REPLY = -100000;

function setup(opcode: number = OP.FUSE_MKDIR): { env: Env; journal: Journal; policy: ReplayPolicy<Env>; req: () => Req } {
  const journal = new Journal(new ArrayBuffer(Journal.sizeFor(8)));
  journal.format(8);
  const env: Env = { out: new Uint8Array(4096), probed: 0, ran: 0, answer: 0 };
  const done = { readDone: () => {}, writeDone: () => {}, statusDone: () => {} };
  const req = (): Req => {
    const r = new Req(done);
    r.opcode = opcode;
    r.uniqueLo = 42;
    r.head = 3;
    return r;
  };
  return { env, journal, policy: new ReplayPolicy<Env>(silentLogger), req };
}

const rule: ReplayRule<Env> = {
  probe: (env) => { env.probed++; return PRE_ABSENT; },
  relax: (_env, _req, r) => (r === -E.EEXIST ? 0 : r),
};
const op = { replay: rule, run: (env: Env): number => { env.ran++; return env.answer; } };

test('a fresh journaled request records its intent with the probe, then its outcome', () => {
  const { env, journal, policy, req } = setup();
  const r = req();
  assert.equal(policy.begin(env, rule, r, Replay.Fresh, journal), NO_ANSWER);
  assert.equal(env.probed, 1);
  assert.equal(journal.find(3, 42, 0, OP.FUSE_MKDIR)?.state, J_INTENT);
  assert.equal(journal.find(3, 42, 0, OP.FUSE_MKDIR)?.pre, PRE_ABSENT);
  policy.record(r, 4, new Uint8Array([1, 2, 3, 4]));
  assert.equal(journal.find(3, 42, 0, OP.FUSE_MKDIR)?.state, J_DONE);
});

test('a re-run whose first run completed is answered from the journal, not run', () => {
  const { env, journal, policy, req } = setup();
  journal.intent(3, 42, 0, OP.FUSE_MKDIR, PRE_ABSENT);
  journal.done(3, 0, new Uint8Array([9, 8, 7]));
  assert.equal(policy.begin(env, rule, req(), Replay.Replay, journal), 3);
  assert.deepEqual([...env.out.subarray(SIZE.out_header, SIZE.out_header + 3)], [9, 8, 7]);
  journal.done(3, -E.ENOSPC, new Uint8Array(0));
  assert.equal(policy.begin(env, rule, req(), Replay.Replay, journal), -E.ENOSPC);
  assert.equal(env.probed, 0);
});

test('a re-run with only its intent runs relaxed: the error its first run caused means success', () => {
  const { env, journal, policy, req } = setup();
  journal.intent(3, 42, 0, OP.FUSE_MKDIR, PRE_ABSENT);
  const r = req();
  assert.equal(policy.begin(env, rule, r, Replay.Replay, journal), NO_ANSWER);
  assert.ok(r.relaxed);
  assert.equal(r.pre, PRE_ABSENT);
  env.answer = -E.EEXIST;
  assert.equal(policy.rerun(env, op, r, NO_REPLY), 0, 'EEXIST after the first run made it');
  // Had the name existed before the first run, EEXIST is the request's own answer.
  r.pre = PRE_EXISTED;
  assert.equal(policy.rerun(env, op, r, NO_REPLY), -E.EEXIST);
});

test('a re-run whose effect landed is answered without running again', () => {
  const { env, policy, req } = setup();
  const r = req();
  r.relaxed = true;
  const landedOp = { replay: { ...rule, landed: (): number => 8 }, run: op.run };
  assert.equal(policy.rerun(env, landedOp, r, NO_REPLY), 8);
  assert.equal(env.ran, 0);
});

test('the request the previous worker was stuck in is answered EIO and recorded; SETLKW and FORGET are not', () => {
  const { env, journal, policy, req } = setup();
  const r = req();
  assert.equal(policy.begin(env, rule, r, Replay.Stuck, journal), -E.EIO);
  const rec = journal.find(3, 42, 0, OP.FUSE_MKDIR);
  assert.equal(rec?.state, J_DONE, 'a crash before the reply gives the same answer');
  assert.equal(rec?.error, -E.EIO);
  for (const opcode of [OP.FUSE_SETLKW, OP.FUSE_FORGET]) {
    const s = setup(opcode);
    assert.equal(s.policy.begin(s.env, undefined, s.req(), Replay.Stuck, null), NO_ANSWER);
  }
  // Not journaled: answered EIO, nothing recorded.
  const s = setup(OP.FUSE_GETATTR);
  assert.equal(s.policy.begin(s.env, undefined, s.req(), Replay.Stuck, s.journal), -E.EIO);
  assert.equal(s.journal.find(3, 42, 0, OP.FUSE_GETATTR), null);
});

test('a stuck request whose first run completed keeps the journal\'s answer', () => {
  const { env, journal, policy, req } = setup();
  journal.intent(3, 42, 0, OP.FUSE_MKDIR, PRE_ABSENT);
  journal.done(3, 0, new Uint8Array([5]));
  assert.equal(policy.begin(env, rule, req(), Replay.Stuck, journal), 1);
});
