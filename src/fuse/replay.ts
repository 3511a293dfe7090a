// Exactly-once answers for requests a crashed worker may have run (see docs/crash-consistency.md).
//
// A restarted worker re-runs every request the guest still waits for. For an idempotent one
// that is harmless; a non-idempotent one (its op table entry has a `replay` rule) is recorded
// in the ring's outcome journal: an intent, with what the op will find (a probe), before it
// runs, and its outcome with the reply before the reply is pushed. A re-run then
//   - finds the outcome: answers it again without running (begin);
//   - finds only the intent: runs, but an error the first run caused is taken as success
//     (relax: EEXIST after a MKDIR that did land, ENOENT after an UNLINK that did), and an effect
//     the first run left is not done twice (landed: an O_APPEND WRITE that grew the file, a
//     RENAME_EXCHANGE that swapped the names);
//   - was the request the previous worker was stuck in when the keeper's watchdog killed it:
//     answered EIO, not run into the same wall again.
// This module owns that policy; the session only calls begin/run/record, and the op table
// supplies each op's probe and relaxations.

import type { Logger } from '../log';
import { E } from '../linux/constants';
import { OP, OP_NAMES, SIZE } from './abi';
import { J_DONE, type Journal } from '../state/journal';
import { crashpoint } from '../state/crashpoint';
import { Replay as Kind } from '../virtio/queue-runner';
import type { Ctx } from './filesystem';
import type { Req } from './request';

/** What an intent records a name was before the first run (0: not recorded). */
export const PRE_ABSENT = 1;
export const PRE_EXISTED = 2;
/** RENAME_EXCHANGE: PRE_INO + the source name's inode number before the first run. */
export const PRE_INO = 3;

/** The host-side questions a probe asks (the passthrough answers them). */
export interface ReplayProbes {
  /** The inode number of `name` in `parent` (low 48 bits), -1 if there is none; no reference taken. */
  nameIno(ctx: Ctx, parent: number, name: string): number;
  hasXattr(ctx: Ctx, nodeid: number, name: string): boolean;
  /** The guest's lookup count of a node, -1 if unknown. */
  lookupCount(nodeid: number): number;
  /** Size of the file behind an O_APPEND handle, -1 for other handles. */
  appendSize(fh: number): number;
}

/** How one non-idempotent op is answered exactly once (its op table entry's `replay`). */
export interface ReplayRule<Env> {
  /** What the first run will find (PRE_*, or a count or size + 1), recorded with the intent; 0: nothing. */
  probe(env: Env, req: Req): number;
  /** A re-run whose first run's effect is visible: its answer, without running again; null: run it. */
  landed?(env: Env, req: Req): number | null;
  /** A re-run's error r, when the first run caused it: the answer it stands for (r: none). */
  relax?(env: Env, req: Req, r: number): number;
}

/** Where begin() puts an answer from the journal: the reply buffer (body at SIZE.out_header). */
export interface ReplayEnv {
  readonly out: Uint8Array;
}

export class ReplayPolicy<Env> {
  constructor(private readonly log: Logger) {}

  /**
   * Before an op runs: a reply length or -errno when the request is answered without running
   * (from the journal, or as stuck), NO_ANSWER to run it. Records the intent of a journaled
   * request (req.journal is then set).
   */
  begin(env: Env & ReplayEnv, rule: ReplayRule<Env> | undefined, req: Req, kind: Kind, journal: Journal | null): number {
    const journaled = journal !== null && rule !== undefined;
    if (kind === Kind.Stuck && this.stuck(req, journaled ? journal : null)) return -E.EIO;
    if (!journaled) return NO_ANSWER;
    if (kind !== Kind.Fresh) {
      const rec = journal.find(req.head, req.uniqueLo, req.uniqueHi, req.opcode);
      if (rec && rec.state === J_DONE) {
        // Ran to completion before the crash: answer as it was answered, do not run it again.
        this.log.info({ op: OP_NAMES[req.opcode], head: req.head }, 'replayed request answered from the journal');
        if (rec.error < 0) return rec.error;
        env.out.set(rec.body, SIZE.out_header);
        return rec.body.length;
      }
      if (rec) {
        req.relaxed = true;
        req.pre = rec.pre;
      }
    }
    if (!req.relaxed) req.pre = rule.probe(env, req);
    journal.intent(req.head, req.uniqueLo, req.uniqueHi, req.opcode, req.pre);
    req.journal = journal;
    crashpoint('after-journal-intent');
    return NO_ANSWER;
  }

  /**
   * Run a re-run (req.relaxed) of op as it needs: not again if its first run's effect landed,
   * and an error its first run caused taken as the answer that run gave. The session calls
   * op.run() itself for every other request.
   */
  rerun(env: Env, op: { readonly replay?: ReplayRule<Env>; run(env: Env, req: Req): number }, req: Req, noReply: number): number {
    const rule = op.replay;
    const landed = rule?.landed?.(env, req) ?? null;
    if (landed !== null) return landed;
    const r = op.run(env, req);
    if (r === noReply || r >= 0 || rule?.relax === undefined) return r;
    // The intent recorded what was there before the first run: an error that run cannot have
    // caused is the request's own answer.
    if ((r === -E.EEXIST && req.pre === PRE_EXISTED) || (r === -E.ENOENT && req.pre === PRE_ABSENT)) return r;
    const out = rule.relax(env, req, r);
    if (out !== r) this.log.info({ op: OP_NAMES[req.opcode], errno: r }, 'replayed request: its error taken as the first run having completed');
    return out;
  }

  /** Journal the outcome of a journaled request (r: reply length or -errno), before its reply can reach the guest. */
  record(req: Req, r: number, body: Uint8Array): void {
    if (req.journal === null) return;
    crashpoint('after-op');
    req.journal.done(req.head, r < 0 ? r : 0, r < 0 ? EMPTY : body);
    crashpoint('after-journal-done');
  }

  /**
   * A request the previous worker was stuck in when the keeper's watchdog killed it: answered
   * EIO instead of run into the same wall (an fd that blocks forever, storage that does not
   * answer). Not for what waits by design (SETLKW, which ring stops cancel) or has no reply,
   * nor for a journaled request that completed (the journal's answer stands). False: run it.
   */
  private stuck(req: Req, journal: Journal | null): boolean {
    const op = req.opcode;
    if (op === OP.FUSE_SETLKW || op === OP.FUSE_FORGET || op === OP.FUSE_BATCH_FORGET || op === OP.FUSE_INTERRUPT) return false;
    if (journal?.find(req.head, req.uniqueLo, req.uniqueHi, op)?.state === J_DONE) return false;
    this.log.warn({ op: OP_NAMES[op] ?? op, nodeid: req.nodeid, head: req.head }, 'request the previous worker was stuck in: answered EIO, not run again');
    if (journal) {
      // Recorded, so that a crash before the reply is pushed gives the same answer again.
      journal.intent(req.head, req.uniqueLo, req.uniqueHi, op, 0);
      journal.done(req.head, -E.EIO, EMPTY);
    }
    return true;
  }
}

/** begin(): run the op (not a reply length, not an errno). */
export const NO_ANSWER = -200000;
const EMPTY = new Uint8Array(0);
