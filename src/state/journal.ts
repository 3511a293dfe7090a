// The outcome journal: exactly-once answers for requests that must not run twice (MKDIR,
// CREATE, RENAME, UNLINK, WRITE, ...). One record per descriptor head of a ring (a head is in
// flight once at a time), in a memfd the keeper keeps across workers.
//
// Per request: intent (before the op touches the host) -> op -> done (the reply, before it is
// pushed to the used ring). A restarted worker re-running a request (the in-flight region says
// the guest still waits for it) looks its head up: `done` -> send the recorded reply, do not run
// the op again; `intent` only -> the op may or may not have happened: run it again, and treat the
// errors a completed first run would cause (EEXIST, ENOENT) as success.
//
// Layout: a 64-byte header { u32 magic, u32 version, u32 desc_num, u32 record_size }, then
// desc_num records of 256 bytes: { u32 state, u32 opcode, u32 unique_lo, u32 unique_hi,
// i32 error, u32 reply_len, f64 pre (what was there before the op), u8 reply[224] }.

export const JOURNAL_MAGIC = 0x5646534a; // "VFSJ"
export const JOURNAL_VERSION = 1;
/**
 * The region's layout: a header (u32 magic at 0 (stored last), version, desc_num, record size),
 * then one record per descriptor head: state u32 | opcode u32 | unique lo, hi u32 | error i32 |
 * reply length u32 | pre f64 | reply body.
 */
export const JOURNAL_LAYOUT = {
  header: 64, magic: 0, version: 4, descNum: 8, recordSize: 12,
  record: 256, state: 0, opcode: 4, uniqueLo: 8, uniqueHi: 12, error: 16, len: 20, pre: 24, body: 32,
} as const;
const HEADER = JOURNAL_LAYOUT.header;
const RECORD = JOURNAL_LAYOUT.record;
/** Largest reply body a record holds (CREATE's entry_out + open_out is 144). */
export const JOURNAL_MAX_REPLY = RECORD - JOURNAL_LAYOUT.body;

export const J_EMPTY = 0;
export const J_INTENT = 1;
export const J_DONE = 2;

const { opcode: R_OPCODE, uniqueLo: R_ULO, uniqueHi: R_UHI, error: R_ERROR, len: R_LEN, pre: R_PRE, body: R_BODY } = JOURNAL_LAYOUT;
const { version: H_VERSION, descNum: H_DESC_NUM, recordSize: H_RECORD } = JOURNAL_LAYOUT;

export interface JournalRecord {
  state: typeof J_INTENT | typeof J_DONE;
  error: number;
  body: Uint8Array;
  /** What the intent recorded of the state before the op (the session's PRE_* values). */
  pre: number;
}

export class Journal {
  private readonly dv: DataView;
  private readonly i32: Int32Array;
  private readonly u8: Uint8Array;

  static sizeFor(queueSize: number): number {
    return HEADER + queueSize * RECORD;
  }

  constructor(buf: ArrayBuffer) {
    this.dv = new DataView(buf);
    this.i32 = new Int32Array(buf);
    this.u8 = new Uint8Array(buf);
  }

  format(queueSize: number): void {
    this.u8.fill(0, 0, Journal.sizeFor(queueSize));
    this.dv.setUint32(H_DESC_NUM, queueSize, true);
    this.dv.setUint32(H_RECORD, RECORD, true);
    this.dv.setUint32(H_VERSION, JOURNAL_VERSION, true);
    Atomics.store(this.i32, 0, JOURNAL_MAGIC); // ORDER: the header is valid once the magic is there
  }

  /** null when usable for this queue size, else why not. */
  validate(queueSize: number): string | null {
    if (this.u8.byteLength < Journal.sizeFor(queueSize)) return 'region too small';
    if (Atomics.load(this.i32, 0) !== JOURNAL_MAGIC) return 'bad magic';
    if (this.dv.getUint32(H_VERSION, true) !== JOURNAL_VERSION) return 'bad version';
    if (this.dv.getUint32(H_DESC_NUM, true) !== queueSize) return `made for queue size ${this.dv.getUint32(H_DESC_NUM, true)}`;
    return null;
  }

  private off(head: number): number {
    return HEADER + head * RECORD;
  }

  /** The record at head, if it is this request's (same unique and opcode). */
  find(head: number, uniqueLo: number, uniqueHi: number, opcode: number): JournalRecord | null {
    const o = this.off(head);
    const state = Atomics.load(this.i32, o >> 2);
    if (state !== J_INTENT && state !== J_DONE) return null;
    if (this.dv.getUint32(o + R_OPCODE, true) !== opcode || this.dv.getUint32(o + R_ULO, true) !== uniqueLo
      || this.dv.getUint32(o + R_UHI, true) !== uniqueHi) return null;
    const len = Math.min(this.dv.getUint32(o + R_LEN, true), JOURNAL_MAX_REPLY);
    return { state, error: this.dv.getInt32(o + R_ERROR, true), body: this.u8.subarray(o + R_BODY, o + R_BODY + len), pre: this.dv.getFloat64(o + R_PRE, true) };
  }

  /** The request at head is about to change the host. */
  intent(head: number, uniqueLo: number, uniqueHi: number, opcode: number, pre = 0): void {
    const o = this.off(head);
    // ORDER: invalidate the old record first, fill, then publish the intent.
    Atomics.store(this.i32, o >> 2, J_EMPTY);
    this.dv.setUint32(o + R_OPCODE, opcode, true);
    this.dv.setUint32(o + R_ULO, uniqueLo, true);
    this.dv.setUint32(o + R_UHI, uniqueHi, true);
    this.dv.setUint32(o + R_LEN, 0, true);
    this.dv.setFloat64(o + R_PRE, pre, true);
    Atomics.store(this.i32, o >> 2, J_INTENT);
  }

  /** Its outcome: error (< 0) or 0 and the reply body. Returns false if the body does not fit
   *  (the record then stays an intent: a replay re-runs the op with relaxed errors). */
  done(head: number, error: number, body: Uint8Array): boolean {
    if (body.length > JOURNAL_MAX_REPLY) return false;
    const o = this.off(head);
    // ORDER: the reply and error are written before the state says done.
    this.u8.set(body, o + R_BODY);
    this.dv.setInt32(o + R_ERROR, error, true);
    this.dv.setUint32(o + R_LEN, body.length, true);
    Atomics.store(this.i32, o >> 2, J_DONE);
    return true;
  }
}
