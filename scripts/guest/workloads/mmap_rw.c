/* mmap_rw FILE: write through a MAP_SHARED mapping and read back with read(); write with
 * pwrite() and read back through a fresh mapping; extend a file via ftruncate + mmap store.
 * Prints "ok"/"not ok" lines; exit status = number of failures. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int fails;
static void check(int c, const char *what) {
  if (c) printf("ok %s\n", what);
  else { printf("not ok %s: %s\n", what, strerror(errno)); fails++; }
}

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "mmap.dat";
  const size_t len = 1 << 20;
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  check(fd >= 0, "open");
  if (fd < 0) return 1;
  check(ftruncate(fd, (off_t)len) == 0, "ftruncate 1MiB");
  unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  check(m != MAP_FAILED, "mmap shared rw");
  if (m == MAP_FAILED) return 1;
  for (size_t i = 0; i < len; i++) m[i] = (unsigned char)(i * 7 + (i >> 12));
  check(msync(m, len, MS_SYNC) == 0, "msync");
  check(munmap(m, len) == 0, "munmap");
  check(close(fd) == 0, "close");

  /* read it back with read(), after dropping caches the caller may have done */
  unsigned char *buf = malloc(len);
  fd = open(path, O_RDONLY);
  size_t got = 0;
  while (got < len) { ssize_t r = read(fd, buf + got, len - got); if (r <= 0) break; got += (size_t)r; }
  check(got == len, "read back full length");
  int same = 1;
  for (size_t i = 0; i < len; i++) if (buf[i] != (unsigned char)(i * 7 + (i >> 12))) { same = 0; break; }
  check(same, "mmap-written data read back via read()");
  close(fd);

  /* pwrite, then see it through a new read-only mapping */
  fd = open(path, O_RDWR);
  const char msg[] = "written-by-pwrite";
  check(pwrite(fd, msg, sizeof msg, 4096 * 3 + 5) == (ssize_t)sizeof msg, "pwrite");
  m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
  check(m != MAP_FAILED && memcmp(m + 4096 * 3 + 5, msg, sizeof msg) == 0, "pwrite visible in mmap");
  if (m != MAP_FAILED) munmap(m, len);

  /* private mapping writes must not reach the file */
  m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (m != MAP_FAILED) { memset(m, 0xEE, 4096); munmap(m, 4096); }
  unsigned char first;
  check(pread(fd, &first, 1, 0) == 1 && first == 0, "MAP_PRIVATE write not visible in file");

  /* grow the file with ftruncate and store through the mapping at the new tail */
  check(ftruncate(fd, (off_t)(len * 2)) == 0, "ftruncate grow");
  m = mmap(NULL, len * 2, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m != MAP_FAILED) {
    memcpy(m + len * 2 - 4, "TAIL", 4);
    check(msync(m, len * 2, MS_SYNC) == 0, "msync grown");
    munmap(m, len * 2);
  }
  char tail[4] = {0};
  check(pread(fd, tail, 4, (off_t)(len * 2 - 4)) == 4 && memcmp(tail, "TAIL", 4) == 0, "tail store via mmap");
  struct stat st;
  check(fstat(fd, &st) == 0 && st.st_size == (off_t)(len * 2), "size after grow");
  close(fd);
  free(buf);
  printf("mmap_rw: %d failed\n", fails);
  return fails;
}
