#!/bin/sh
# Workload "gcc": write a small multi-file C program into the share, compile (objects, a static
# archive, headers read from the share), run the binary from the share, check its output.
set -eu
D="$1"
cd "$D"
mkdir -p include src build
cat > include/util.h <<'H'
#ifndef UTIL_H
#define UTIL_H
#include <stdint.h>
#include <stddef.h>
uint32_t fnv1a(const void *p, size_t n);
void fill(unsigned char *buf, size_t n, uint32_t seed);
#endif
H
cat > src/util.c <<'C'
#include "util.h"
uint32_t fnv1a(const void *p, size_t n) {
  const unsigned char *c = p; uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) { h ^= c[i]; h *= 16777619u; }
  return h;
}
void fill(unsigned char *buf, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; i++) { seed = seed * 1103515245u + 12345u; buf[i] = (unsigned char)(seed >> 16); }
}
C
cat > src/main.c <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "util.h"
int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "data.bin";
  size_t n = 3 * 1024 * 1024 + 17;
  unsigned char *a = malloc(n), *b = malloc(n);
  if (!a || !b) return 2;
  fill(a, n, 42);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(a, 1, n, f) != n || fclose(f) != 0) { perror("write"); return 3; }
  f = fopen(path, "rb");
  if (!f || fread(b, 1, n, f) != n || fclose(f) != 0) { perror("read"); return 4; }
  if (memcmp(a, b, n) != 0) { fprintf(stderr, "mismatch\n"); return 5; }
  printf("fnv1a=%08x size=%zu\n", fnv1a(b, n), n);
  return 0;
}
C
gcc -O2 -Wall -Werror -Iinclude -c src/util.c -o build/util.o
gcc -O2 -Wall -Werror -Iinclude -c src/main.c -o build/main.o
ar rcsD build/libutil.a build/util.o
gcc -o build/prog build/main.o -Lbuild -lutil
echo "built: $(cd build && printf '%s ' *)"
out="$(./build/prog "$D/build/data.bin")"
echo "prog: $out"
# the same binary writing to the guest's tmpfs must print the same
expected="$(./build/prog /tmp/data.bin)"
rm -f /tmp/data.bin
[ "$out" = "$expected" ] || { echo "not ok prog output differs between share and tmpfs"; exit 1; }
echo "ok prog output matches tmpfs run"
# compile again from a cold cache, the object must be byte-identical
sync; echo 3 > /proc/sys/vm/drop_caches
gcc -O2 -Wall -Werror -Iinclude -c src/util.c -o /tmp/util2.o
if cmp build/util.o /tmp/util2.o; then echo "ok object rebuilt identically after drop_caches"; else
  echo "not ok object differs after drop_caches"; exit 1; fi
rm -f /tmp/util2.o
