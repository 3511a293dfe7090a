// Fuzz: a new worker adopting corrupted state regions, and check-state reading them (see
// targets/state-recovery.ts).
import { defineFuzzTests } from './lib/define';
import { stateRecoveryTarget } from './targets/state-recovery';

defineFuzzTests(stateRecoveryTarget, 300);
