// Fuzz: FUSE decoding and dispatch over the passthrough (see targets/fuse-session.ts).
import { defineFuzzTests } from './lib/define';
import { fuseSessionTarget } from './targets/fuse-session';

defineFuzzTests(fuseSessionTarget, 300);
