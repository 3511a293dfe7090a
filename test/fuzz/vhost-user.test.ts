// Fuzz: the vhost-user control plane (see targets/vhost-user.ts).
import { defineFuzzTests } from './lib/define';
import { vhostUserTarget } from './targets/vhost-user';

defineFuzzTests(vhostUserTarget, 1000);
