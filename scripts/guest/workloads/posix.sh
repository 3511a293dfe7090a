#!/bin/sh
# Workload "posix": compile posix_suite.c in the guest and run it in an empty dir on the share.
set -eu
D="$1"
gcc -O2 -Wall -o /tmp/posix_suite "$WL/posix_suite.c"
mkdir -p "$D/t"
/tmp/posix_suite "$D/t"
