// Every fuzz target, for the runner (run.ts) and its worker threads.
import type { FuzzTarget } from '../lib/harness';
import { splitRingTarget } from './split-ring';
import { vhostUserTarget } from './vhost-user';
import { fuseSessionTarget } from './fuse-session';
import { stateRecoveryTarget } from './state-recovery';

export const TARGETS: FuzzTarget[] = [splitRingTarget, vhostUserTarget, fuseSessionTarget, stateRecoveryTarget];
