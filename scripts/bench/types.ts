// What a bench driver (native/bench or the TypeScript front-end) reports for one cell.
export interface DriverCell {
  ops: number;
  requests: number;
  entries: number;
  seconds: number;
  p50us: number;
  p99us: number;
  /** CPU ns of the daemon's process tree over the measured window. */
  daemonCpuNs: number;
  /** CPU µs of the front-end over the measured window. */
  frontendCpuUs: number;
  kicks: number;
  posted: number;
  errors: number;
  firstError: string;
}

export interface DriverSession {
  run(workload: string, depth: number, o: { warmup: number; duration: number; calls: 'each' | 'batch' }): Promise<DriverCell>;
  close(): Promise<void>;
}
