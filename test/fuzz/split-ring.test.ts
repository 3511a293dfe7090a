// Fuzz: the split-ring walk, chain cursors and the queue runner (see targets/split-ring.ts).
import { defineFuzzTests } from './lib/define';
import { splitRingTarget } from './targets/split-ring';

defineFuzzTests(splitRingTarget, 1500);
