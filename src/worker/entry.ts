// The worker's entry script (what the keeper starts). It only gives tests a point before the
// worker's modules load (hold.ts), then runs the worker.
import { holdAt } from './hold';

holdAt('spawned');
// Loaded only now, so that 'spawned' comes before everything else.
// eslint-disable-next-line @typescript-eslint/no-require-imports
(require('./worker') as typeof import('./worker')).workerMain();
