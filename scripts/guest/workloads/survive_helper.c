// survive_helper: the programs behind survive.sh (the kill -9 / upgrade workload).
// Every system call is checked; any failure prints what, where and errno and exits 1.
//
//   survive_helper churn DIR CLOCKDIR ITERS TRACE [--no-drop] [--until FILE]
//       Deterministic churn in DIR (which must exist and be empty): files rewritten with
//       generated content and read back, truncates, an O_APPEND log held open the whole run,
//       write-then-rename replacements, create/unlink, mkdir/rmdir, hard links, symlinks, and
//       every 10 iterations a stat of the files in DIR/../fixed whose st_ino must not change.
//       Every 40 iterations a clock marker CLOCKDIR/sync-N is created (the host watches the
//       directory to map guest time onto its own); CLOCKDIR/sync-end when the churn is over.
//       --until FILE: after the ITERS iterations, go on with iterations that leave no trace in
//       DIR (a scratch file and directory, created, written, read back, removed) until FILE
//       exists (the host creates it when its schedule is done) or 150 s have passed: the
//       result tree stays the same however long the host needs.
//       Each operation's CLOCK_MONOTONIC start and end go to TRACE (written at the end, also on
//       failure; for a marker, the iteration field is the marker's number, -1 for sync-end).
//       The final state is verified byte for byte against what the iterations wrote (after
//       dropping the guest's caches unless --no-drop).
//   survive_helper hold DIR STOPFILE READYFILE
//       Opens DIR/held-{0,1,2}.bin (existing, generated content) and creates, fills and
//       unlinks DIR/unlinked.bin; keeps all four open. Until STOPFILE exists: every ~0.3 s
//       drops the page cache of one file (fadvise) and re-reads a block through the held fd,
//       and rewrites a block of the unlinked file. At STOPFILE: reads everything back through
//       the held fds and checks content, st_ino (unchanged) and st_nlink (0 for the unlinked).
//   survive_helper lock FILE STOPFILE READYFILE
//       Takes an fcntl write lock on bytes 0..99 of FILE (F_SETLK) and holds it until STOPFILE
//       exists; READYFILE gets its pid.
//   survive_helper getlk FILE PID
//       From another process: F_GETLK must show the write lock on 0..99 held by PID, and a
//       F_SETLK of the same range must fail with EAGAIN/EACCES.
//   survive_helper getlk-free FILE
//       F_GETLK must show no lock.
//   survive_helper gen SEED SIZE
//       Writes the generated content for SEED (SIZE bytes) to stdout (for survive.sh's fixed files).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static const char *prog = "survive_helper";
static const char *trace_path;
static void trace_flush(void);

static void die(const char *fmt, ...) {
  int e = errno;
  va_list ap;
  fprintf(stderr, "%s: FAIL: ", prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (errno %d: %s)\n", e, strerror(e));
  trace_flush();
  exit(1);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void msleep(int ms) {
  struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

// ------------------------------------------------------------------ content

static void gen(unsigned char *buf, size_t n, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 0x9e3779b9u;
  if (!x) x = 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >> 17; x ^= x << 5;
    buf[i] = (unsigned char)(x >> 8);
  }
}

static size_t gen_size(uint32_t seed) { return 1 + (seed * 7919u) % 65536u; }

static void write_all(int fd, const void *b, size_t n, const char *what) {
  const unsigned char *p = b;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) { if (errno == EINTR) continue; die("write %s", what); }
    if (w == 0) { errno = EIO; die("write %s returned 0", what); }
    p += w; n -= (size_t)w;
  }
}

static void pwrite_all(int fd, const void *b, size_t n, off_t off, const char *what) {
  const unsigned char *p = b;
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, off);
    if (w < 0) { if (errno == EINTR) continue; die("pwrite %s", what); }
    if (w == 0) { errno = EIO; die("pwrite %s returned 0", what); }
    p += w; n -= (size_t)w; off += w;
  }
}

static size_t pread_all(int fd, void *b, size_t n, off_t off, const char *what) {
  unsigned char *p = b;
  size_t got = 0;
  while (got < n) {
    ssize_t r = pread(fd, p + got, n - got, off + (off_t)got);
    if (r < 0) { if (errno == EINTR) continue; die("pread %s", what); }
    if (r == 0) break;
    got += (size_t)r;
  }
  return got;
}

/** Reads the whole file at path and compares it with want[0..n). */
static void check_file(const char *path, const unsigned char *want, size_t n) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("open %s for verification", path);
  struct stat st;
  if (fstat(fd, &st) < 0) die("fstat %s", path);
  if ((size_t)st.st_size != n) { errno = 0; die("%s: size %lld, want %zu", path, (long long)st.st_size, n); }
  unsigned char *got = malloc(n + 1);
  if (!got) die("malloc");
  size_t r = pread_all(fd, got, n + 1, 0, path);
  if (r != n) { errno = 0; die("%s: read %zu bytes, want %zu", path, r, n); }
  if (memcmp(got, want, n) != 0) {
    size_t i = 0;
    while (i < n && got[i] == want[i]) i++;
    errno = 0;
    die("%s: content differs at byte %zu of %zu", path, i, n);
  }
  free(got);
  if (close(fd) < 0) die("close %s", path);
}

static void drop_caches(void) {
  sync();
  int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd < 0) die("open drop_caches");
  write_all(fd, "3\n", 2, "drop_caches");
  if (close(fd) < 0) die("close drop_caches");
}

// ------------------------------------------------------------------ trace

enum { OP_WRITE, OP_READBACK, OP_TRUNC, OP_APPEND, OP_RENAME, OP_CREATE, OP_UNLINK, OP_MKDIR,
       OP_RMDIR, OP_LINK, OP_SYMLINK, OP_STAT, OP_SYNC, OP_FSYNC, OP_VERIFY, OP_CLOSE, OP_CHMOD, OP__N };
static const char *opname[OP__N] = { "write", "readback", "trunc", "append", "rename", "create",
  "unlink", "mkdir", "rmdir", "link", "symlink", "stat", "sync", "fsync", "verify", "close", "chmod" };

struct rec { double t0, t1; int iter; int op; };
static struct rec *trace;
static size_t ntrace, captrace;

static void trace_add(int iter, int op, double t0, double t1) {
  if (ntrace == captrace) {
    captrace = captrace ? captrace * 2 : 65536;
    trace = realloc(trace, captrace * sizeof *trace);
    if (!trace) { fprintf(stderr, "%s: out of memory for the trace\n", prog); exit(1); }
  }
  trace[ntrace++] = (struct rec){ t0, t1, iter, op };
}

static void trace_flush(void) {
  if (!trace_path || !ntrace) return;
  FILE *f = fopen(trace_path, "w");
  if (!f) { fprintf(stderr, "%s: cannot write trace %s: %s\n", prog, trace_path, strerror(errno)); return; }
  fprintf(f, "# iter op start end (CLOCK_MONOTONIC seconds)\n");
  for (size_t i = 0; i < ntrace; i++)
    fprintf(f, "%d %s %.6f %.6f\n", trace[i].iter, opname[trace[i].op], trace[i].t0, trace[i].t1);
  if (fclose(f) != 0) fprintf(stderr, "%s: writing trace %s: %s\n", prog, trace_path, strerror(errno));
  ntrace = 0;
}

#define TIMED(iter, op, stmt) do { double t0_ = now(); stmt; trace_add((iter), (op), t0_, now()); } while (0)

// ------------------------------------------------------------------ churn

#define NF 16      // f_NN: rewritten files
#define NR 8       // r_N: write-then-rename targets
#define NFIXED 8   // ../fixed/a..h: st_ino watched
#define SYNC_EVERY 40

static int churn(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: churn DIR CLOCKDIR ITERS TRACE [--no-drop] [--until FILE]\n"); return 2; }
  const char *dir = argv[0], *clockdir = argv[1];
  int iters = atoi(argv[2]);
  trace_path = argv[3];
  int drop = 1;
  const char *until = NULL;
  for (int a = 4; a < argc; a++) {
    if (strcmp(argv[a], "--no-drop") == 0) drop = 0;
    else if (strcmp(argv[a], "--until") == 0 && a + 1 < argc) until = argv[++a];
    else { fprintf(stderr, "churn: unknown argument %s\n", argv[a]); return 2; }
  }
  if (iters < 10) { fprintf(stderr, "ITERS must be >= 10\n"); return 2; }
  if (chdir(dir) < 0) die("chdir %s", dir);

  static unsigned char buf[65536 + 4096];
  char p[256], q[256];
  uint32_t fseed[NF];
  size_t flen[NF];
  uint32_t rseed[NR];
  int rset[NR];
  memset(rset, 0, sizeof rset);
  for (int j = 0; j < NF; j++) flen[j] = (size_t)-1;

  ino_t fixed_ino[NFIXED];
  for (int k = 0; k < NFIXED; k++) {
    struct stat st;
    snprintf(p, sizeof p, "../fixed/%c", 'a' + k);
    if (stat(p, &st) < 0) die("stat %s at start", p);
    fixed_ino[k] = st.st_ino;
  }

  int logfd = open("log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (logfd < 0) die("open log");
  size_t loglen = 0;
  int nsync = 0;

  double t_start = now();
  for (int i = 0; i < iters; i++) {
    // clock marker: the host maps guest CLOCK_MONOTONIC onto its own clock with these
    if (i % SYNC_EVERY == 0) {
      snprintf(p, sizeof p, "%s/sync-%04d", clockdir, nsync++);
      double t0 = now();
      int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      double t1 = now();
      if (fd < 0) die("create %s", p);
      trace_add(nsync - 1, OP_SYNC, t0, t1);
      if (close(fd) < 0) die("close %s", p);
    }

    // 1. rewrite f_{i%NF} with generated content; sometimes fsync, sometimes truncate to half
    int j = i % NF;
    uint32_t seed = (uint32_t)i + 1;
    size_t n = gen_size(seed);
    gen(buf, n, seed);
    snprintf(p, sizeof p, "f_%02d", j);
    int fd, r0;
    TIMED(i, OP_CREATE, fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd < 0) die("iter %d: open %s O_TRUNC", i, p);
    TIMED(i, OP_WRITE, write_all(fd, buf, n, p));
    if (i % 8 == 3) {
      int r;
      TIMED(i, OP_FSYNC, r = fsync(fd));
      if (r < 0) die("iter %d: fsync %s", i, p);
    }
    if (i % 7 == 5) {
      int r;
      TIMED(i, OP_TRUNC, r = ftruncate(fd, (off_t)(n / 2)));
      if (r < 0) die("iter %d: ftruncate %s", i, p);
      n /= 2;
    }
    TIMED(i, OP_CLOSE, r0 = close(fd));
    if (r0 < 0) die("iter %d: close %s", i, p);
    fseed[j] = seed;
    flen[j] = n;
    TIMED(i, OP_READBACK, check_file(p, buf, n));

    // 2. one line onto the O_APPEND log (the fd stays open the whole run)
    {
      char line[64];
      int ll = snprintf(line, sizeof line, "%06d %08x %zu\n", i, seed * 2654435761u, n);
      ssize_t w;
      TIMED(i, OP_APPEND, w = write(logfd, line, (size_t)ll));
      if (w != ll) die("iter %d: append to log returned %zd of %d", i, w, ll);
      loglen += (size_t)ll;
    }

    // 3. write a temp file and rename it over r_{i%NR}
    {
      int k = i % NR;
      uint32_t rs = (uint32_t)i + 1000003u;
      size_t rn = 1 + rs % 3000;
      gen(buf, rn, rs);
      snprintf(p, sizeof p, "tmp.%d", i);
      snprintf(q, sizeof q, "r_%d", k);
      TIMED(i, OP_CREATE, fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
      if (fd < 0) die("iter %d: create %s", i, p);
      TIMED(i, OP_WRITE, write_all(fd, buf, rn, p));
      int r;
      TIMED(i, OP_CHMOD, r = fchmod(fd, 0644));
      if (r < 0) die("iter %d: fchmod %s", i, p);
      TIMED(i, OP_CLOSE, r = close(fd));
      if (r < 0) die("iter %d: close %s", i, p);
      TIMED(i, OP_RENAME, r = rename(p, q));
      if (r < 0) die("iter %d: rename %s -> %s", i, p, q);
      rseed[k] = rs;
      rset[k] = 1;
    }

    // 4. create c_i, unlink c_{i-3}
    {
      snprintf(p, sizeof p, "c_%d", i);
      TIMED(i, OP_CREATE, fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
      if (fd < 0) die("iter %d: create %s", i, p);
      char c[32];
      int cl = snprintf(c, sizeof c, "c %d\n", i);
      TIMED(i, OP_WRITE, write_all(fd, c, (size_t)cl, p));
      TIMED(i, OP_CLOSE, r0 = close(fd));
      if (r0 < 0) die("iter %d: close %s", i, p);
      if (i >= 3) {
        snprintf(p, sizeof p, "c_%d", i - 3);
        int r;
        TIMED(i, OP_UNLINK, r = unlink(p));
        if (r < 0) die("iter %d: unlink %s", i, p);
      }
    }

    // 5. mkdir d_i with a file in it; remove d_{i-2}
    {
      int r;
      snprintf(p, sizeof p, "d_%d", i);
      TIMED(i, OP_MKDIR, r = mkdir(p, 0755));
      if (r < 0) die("iter %d: mkdir %s", i, p);
      snprintf(p, sizeof p, "d_%d/x", i);
      TIMED(i, OP_CREATE, fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
      if (fd < 0) die("iter %d: create %s", i, p);
      TIMED(i, OP_CLOSE, r = close(fd));
      if (r < 0) die("iter %d: close %s", i, p);
      if (i >= 2) {
        snprintf(p, sizeof p, "d_%d/x", i - 2);
        TIMED(i, OP_UNLINK, r = unlink(p));
        if (r < 0) die("iter %d: unlink %s", i, p);
        snprintf(p, sizeof p, "d_%d", i - 2);
        TIMED(i, OP_RMDIR, r = rmdir(p));
        if (r < 0) die("iter %d: rmdir %s", i, p);
      }
    }

    // 6. every 5: hard link and symlink (replace the previous ones)
    if (i % 5 == 0) {
      int r;
      if (i > 0) {
        TIMED(i, OP_UNLINK, r = unlink("hl"));
        if (r < 0) die("iter %d: unlink hl", i);
        TIMED(i, OP_UNLINK, r = unlink("sl"));
        if (r < 0) die("iter %d: unlink sl", i);
      }
      snprintf(p, sizeof p, "f_%02d", j);
      TIMED(i, OP_LINK, r = link(p, "hl"));
      if (r < 0) die("iter %d: link %s hl", i, p);
      TIMED(i, OP_SYMLINK, r = symlink(p, "sl"));
      if (r < 0) die("iter %d: symlink %s sl", i, p);
    }

    // 7. every 10: the fixed files keep their inode numbers
    if (i % 10 == 9) {
      for (int k = 0; k < NFIXED; k++) {
        struct stat st;
        int r;
        snprintf(p, sizeof p, "../fixed/%c", 'a' + k);
        TIMED(i, OP_STAT, r = stat(p, &st));
        if (r < 0) die("iter %d: stat %s", i, p);
        if (st.st_ino != fixed_ino[k]) { errno = 0; die("iter %d: %s st_ino %llu, was %llu", i, p, (unsigned long long)st.st_ino, (unsigned long long)fixed_ino[k]); }
      }
    }
  }
  double t_loop = now() - t_start;

  // ---- until the host is done: iterations that leave DIR as it is
  int extra = 0;
  if (until) {
    double t_until = now();
    for (; access(until, F_OK) != 0; extra++) {
      if (errno != ENOENT) die("access %s", until);
      if (now() - t_until > 150) { printf("churn: no %s after 150 s; stopping\n", until); break; }
      int i = iters + extra;
      if (extra % SYNC_EVERY == 0) {
        snprintf(p, sizeof p, "%s/sync-%04d", clockdir, nsync++);
        double t0 = now();
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        double t1 = now();
        if (fd < 0) die("create %s", p);
        trace_add(nsync - 1, OP_SYNC, t0, t1);
        if (close(fd) < 0) die("close %s", p);
      }
      uint32_t seed = (uint32_t)i + 1;
      size_t n = gen_size(seed);
      gen(buf, n, seed);
      int fd, r;
      TIMED(i, OP_CREATE, fd = open("scratch", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
      if (fd < 0) die("extra %d: create scratch", extra);
      TIMED(i, OP_WRITE, write_all(fd, buf, n, "scratch"));
      TIMED(i, OP_CLOSE, r = close(fd));
      if (r < 0) die("extra %d: close scratch", extra);
      TIMED(i, OP_READBACK, check_file("scratch", buf, n));
      TIMED(i, OP_MKDIR, r = mkdir("scratch.d", 0755));
      if (r < 0) die("extra %d: mkdir scratch.d", extra);
      TIMED(i, OP_RENAME, r = rename("scratch", "scratch.d/moved"));
      if (r < 0) die("extra %d: rename scratch", extra);
      TIMED(i, OP_UNLINK, r = unlink("scratch.d/moved"));
      if (r < 0) die("extra %d: unlink scratch.d/moved", extra);
      TIMED(i, OP_RMDIR, r = rmdir("scratch.d"));
      if (r < 0) die("extra %d: rmdir scratch.d", extra);
      if (extra % 10 == 9) {
        for (int k = 0; k < NFIXED; k++) {
          struct stat st;
          snprintf(p, sizeof p, "../fixed/%c", 'a' + k);
          TIMED(i, OP_STAT, r = stat(p, &st));
          if (r < 0) die("extra %d: stat %s", extra, p);
          if (st.st_ino != fixed_ino[k]) { errno = 0; die("extra %d: %s st_ino %llu, was %llu", extra, p, (unsigned long long)st.st_ino, (unsigned long long)fixed_ino[k]); }
        }
      }
    }
  }
  double t_all = now() - t_start;

  if (fsync(logfd) < 0) die("fsync log");
  if (close(logfd) < 0) die("close log");
  {
    snprintf(p, sizeof p, "%s/sync-end", clockdir);
    double t0 = now();
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    double t1 = now();
    if (fd < 0) die("create %s", p);
    trace_add(-1, OP_SYNC, t0, t1);
    if (close(fd) < 0) die("close %s", p);
  }

  // ---- verify the final state, from the backend (caches dropped) ----
  double tv = now();
  if (drop) drop_caches();
  for (int j2 = 0; j2 < NF; j2++) {
    if (flen[j2] == (size_t)-1) continue;
    size_t full = gen_size(fseed[j2]);
    gen(buf, full, fseed[j2]);
    snprintf(p, sizeof p, "f_%02d", j2);
    check_file(p, buf, flen[j2]);
  }
  for (int k = 0; k < NR; k++) {
    if (!rset[k]) continue;
    size_t rn = 1 + rseed[k] % 3000;
    gen(buf, rn, rseed[k]);
    snprintf(q, sizeof q, "r_%d", k);
    check_file(q, buf, rn);
  }
  {
    // the log: every line exactly once, in order
    int fd = open("log", O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open log for verification");
    char *lb = malloc(loglen + 2);
    if (!lb) die("malloc");
    size_t got = pread_all(fd, lb, loglen + 1, 0, "log");
    if (got != loglen) { errno = 0; die("log: %zu bytes, want %zu", got, loglen); }
    size_t off = 0;
    for (int i = 0; i < iters; i++) {
      uint32_t seed = (uint32_t)i + 1;
      size_t n = gen_size(seed);
      if (i % 7 == 5) n /= 2;
      char line[64];
      int ll = snprintf(line, sizeof line, "%06d %08x %zu\n", i, seed * 2654435761u, n);
      if (off + (size_t)ll > got || memcmp(lb + off, line, (size_t)ll) != 0) { errno = 0; die("log: line %d wrong at byte %zu", i, off); }
      off += (size_t)ll;
    }
    free(lb);
    close(fd);
  }
  for (int i = 0; i < iters; i++) {
    struct stat st;
    snprintf(p, sizeof p, "c_%d", i);
    int exists = lstat(p, &st) == 0;
    if (!exists && errno != ENOENT) die("lstat %s", p);
    if (exists != (i >= iters - 3)) { errno = 0; die("%s %s", p, exists ? "exists (should be unlinked)" : "missing"); }
    snprintf(p, sizeof p, "d_%d", i);
    exists = lstat(p, &st) == 0;
    if (!exists && errno != ENOENT) die("lstat %s", p);
    if (exists != (i >= iters - 2)) { errno = 0; die("%s %s", p, exists ? "exists (should be removed)" : "missing"); }
    snprintf(p, sizeof p, "tmp.%d", i);
    if (lstat(p, &st) == 0 || errno != ENOENT) { errno = 0; die("%s still exists after its rename", p); }
  }
  {
    struct stat a, b;
    char target[64];
    int last5 = ((iters - 1) / 5) * 5;
    snprintf(p, sizeof p, "f_%02d", last5 % NF);
    if (stat("hl", &a) < 0) die("stat hl");
    if (stat(p, &b) < 0) die("stat %s", p);
    if (a.st_ino != b.st_ino || b.st_nlink != 2) { errno = 0; die("hl is not a second link of %s (ino %llu/%llu nlink %lu)", p, (unsigned long long)a.st_ino, (unsigned long long)b.st_ino, (unsigned long)b.st_nlink); }
    ssize_t tl = readlink("sl", target, sizeof target - 1);
    if (tl < 0) die("readlink sl");
    target[tl] = 0;
    if (strcmp(target, p) != 0) { errno = 0; die("sl -> %s, want %s", target, p); }
  }
  for (int k = 0; k < NFIXED; k++) {
    struct stat st;
    snprintf(p, sizeof p, "../fixed/%c", 'a' + k);
    if (stat(p, &st) < 0) die("stat %s at the end", p);
    if (st.st_ino != fixed_ino[k]) { errno = 0; die("%s st_ino %llu at the end, was %llu", p, (unsigned long long)st.st_ino, (unsigned long long)fixed_ino[k]); }
  }
  trace_add(iters, OP_VERIFY, tv, now());
  printf("churn: %d iterations in %.1f s, then %d scratch iterations (%.1f s in all), %zu timed operations, %d clock markers, verified in %.1f s\n",
         iters, t_loop, extra, t_all, ntrace, nsync + 1, now() - tv);
  trace_flush();
  return 0;
}

// ------------------------------------------------------------------ hold

#define NHELD 3
#define HELD_SIZE 200000
#define UNL_SIZE 131072

static int stop_requested(const char *stopfile) {
  return access(stopfile, F_OK) == 0;
}

static void touch_ready(const char *readyfile, const char *content) {
  char tmp[512];
  snprintf(tmp, sizeof tmp, "%s.tmp", readyfile);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("create %s", tmp);
  write_all(fd, content, strlen(content), tmp);
  if (close(fd) < 0) die("close %s", tmp);
  if (rename(tmp, readyfile) < 0) die("rename %s", tmp);
}

static int hold(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: hold DIR STOPFILE READYFILE\n"); return 2; }
  const char *dir = argv[0], *stopfile = argv[1], *readyfile = argv[2];
  char p[512];
  int fds[NHELD + 1];
  ino_t inos[NHELD + 1];
  static unsigned char want[NHELD + 1][HELD_SIZE], got[HELD_SIZE + 1];
  for (int k = 0; k < NHELD; k++) {
    snprintf(p, sizeof p, "%s/held-%d.bin", dir, k);
    fds[k] = open(p, k == 0 ? O_RDWR | O_CLOEXEC : O_RDONLY | O_CLOEXEC);
    if (fds[k] < 0) die("hold: open %s", p);
    gen(want[k], HELD_SIZE, 7000u + (uint32_t)k);
    struct stat st;
    if (fstat(fds[k], &st) < 0) die("hold: fstat %s", p);
    inos[k] = st.st_ino;
  }
  // the unlinked-but-open file
  snprintf(p, sizeof p, "%s/unlinked.bin", dir);
  int u = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (u < 0) die("hold: create %s", p);
  gen(want[NHELD], UNL_SIZE, 9001u);
  pwrite_all(u, want[NHELD], UNL_SIZE, 0, p);
  if (fsync(u) < 0) die("hold: fsync %s", p);
  if (unlink(p) < 0) die("hold: unlink %s", p);
  fds[NHELD] = u;
  {
    struct stat st;
    if (fstat(u, &st) < 0) die("hold: fstat unlinked");
    inos[NHELD] = st.st_ino;
    if (st.st_nlink != 0) { errno = 0; die("hold: unlinked file has nlink %lu", (unsigned long)st.st_nlink); }
  }
  char msg[64];
  snprintf(msg, sizeof msg, "%d\n", (int)getpid());
  touch_ready(readyfile, msg);

  unsigned rounds = 0;
  uint32_t x = 12345;
  while (!stop_requested(stopfile)) {
    if (rounds++ >= 100000) { errno = 0; die("hold: no stop file after %u rounds", rounds); }
    msleep(300);
    x ^= x << 13; x ^= x >> 17; x ^= x << 5;
    int k = (int)(x % (NHELD + 1));
    size_t size = k == NHELD ? UNL_SIZE : HELD_SIZE;
    size_t off = (x >> 8) % (size - 4096);
    if (k == NHELD) {
      // rewrite a block of the unlinked file (through its held fd), then read it back
      unsigned char blk[4096];
      gen(blk, sizeof blk, x);
      memcpy(want[NHELD] + off, blk, sizeof blk);
      pwrite_all(u, blk, sizeof blk, (off_t)off, "unlinked.bin");
    }
    if (posix_fadvise(fds[k], 0, 0, POSIX_FADV_DONTNEED) != 0) die("hold: fadvise");
    size_t r = pread_all(fds[k], got, 4096, (off_t)off, "held file");
    if (r != 4096 || memcmp(got, want[k] + off, 4096) != 0) { errno = 0; die("hold: file %d: block at %zu differs during the run (read %zu)", k, off, r); }
  }
  // final: everything back through the held fds
  for (int k = 0; k <= NHELD; k++) {
    size_t size = k == NHELD ? UNL_SIZE : HELD_SIZE;
    if (posix_fadvise(fds[k], 0, 0, POSIX_FADV_DONTNEED) != 0) die("hold: fadvise");
    size_t r = pread_all(fds[k], got, size + 1, 0, "held file");
    if (r != size) { errno = 0; die("hold: file %d: %zu bytes at the end, want %zu", k, r, size); }
    if (memcmp(got, want[k], size) != 0) { errno = 0; die("hold: file %d: content differs at the end", k); }
    struct stat st;
    if (fstat(fds[k], &st) < 0) die("hold: fstat file %d at the end", k);
    if (st.st_ino != inos[k]) { errno = 0; die("hold: file %d: st_ino %llu at the end, was %llu", k, (unsigned long long)st.st_ino, (unsigned long long)inos[k]); }
    if (k == NHELD && st.st_nlink != 0) { errno = 0; die("hold: unlinked file has nlink %lu at the end", (unsigned long)st.st_nlink); }
    if (close(fds[k]) < 0) die("hold: close file %d", k);
  }
  printf("hold: %u rounds of re-reads through 4 held fds (one unlinked), all verified\n", rounds);
  return 0;
}

// ------------------------------------------------------------------ locks

static int lock_cmd(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: lock FILE STOPFILE READYFILE\n"); return 2; }
  int fd = open(argv[0], O_RDWR | O_CLOEXEC);
  if (fd < 0) die("lock: open %s", argv[0]);
  struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100 };
  if (fcntl(fd, F_SETLK, &fl) < 0) die("lock: F_SETLK %s", argv[0]);
  char msg[64];
  snprintf(msg, sizeof msg, "%d\n", (int)getpid());
  touch_ready(argv[2], msg);
  for (unsigned n = 0; !stop_requested(argv[1]); n++) {
    if (n >= 100000) { errno = 0; die("lock: no stop file"); }
    msleep(200);
  }
  printf("lock: held F_WRLCK on 0..99 of %s until told to stop\n", argv[0]);
  if (close(fd) < 0) die("lock: close");
  return 0;
}

static int getlk_cmd(int argc, char **argv, int want_free) {
  if (argc < (want_free ? 1 : 2)) { fprintf(stderr, "usage: getlk FILE PID | getlk-free FILE\n"); return 2; }
  int fd = open(argv[0], O_RDWR | O_CLOEXEC);
  if (fd < 0) die("getlk: open %s", argv[0]);
  struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100 };
  if (fcntl(fd, F_GETLK, &fl) < 0) die("getlk: F_GETLK %s", argv[0]);
  if (want_free) {
    if (fl.l_type != F_UNLCK) { errno = 0; die("getlk: %s still locked (type %d pid %d)", argv[0], fl.l_type, fl.l_pid); }
    printf("getlk: %s is unlocked\n", argv[0]);
    return 0;
  }
  int pid = atoi(argv[1]);
  if (fl.l_type != F_WRLCK || fl.l_start != 0 || fl.l_len != 100) {
    errno = 0;
    die("getlk: F_GETLK on %s shows type %d start %lld len %lld pid %d, want the write lock 0..99 of pid %d",
        argv[0], fl.l_type, (long long)fl.l_start, (long long)fl.l_len, fl.l_pid, pid);
  }
  struct flock try = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100 };
  if (fcntl(fd, F_SETLK, &try) == 0) { errno = 0; die("getlk: F_SETLK on %s succeeded: the lock is not held", argv[0]); }
  if (errno != EAGAIN && errno != EACCES) die("getlk: F_SETLK on %s", argv[0]);
  int e = errno;
  if (fl.l_pid != pid) {
    errno = 0;
    die("getlk: %s is write-locked on 0..99 (a conflicting F_SETLK fails with %s), but F_GETLK names pid %d as the holder, want %d",
        argv[0], strerror(e), fl.l_pid, pid);
  }
  printf("getlk: %s write-locked 0..99 by pid %d; a conflicting F_SETLK fails with %s\n", argv[0], fl.l_pid, strerror(e));
  close(fd);
  return 0;
}

static int gen_cmd(int argc, char **argv) {
  if (argc < 2) return 2;
  uint32_t seed = (uint32_t)strtoul(argv[0], NULL, 10);
  size_t n = (size_t)strtoul(argv[1], NULL, 10);
  unsigned char *b = malloc(n ? n : 1);
  if (!b) die("malloc");
  gen(b, n, seed);
  write_all(1, b, n, "stdout");
  free(b);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: survive_helper churn|hold|lock|getlk|getlk-free|gen ...\n"); return 2; }
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *cmd = argv[1];
  if (strcmp(cmd, "churn") == 0) { prog = "survive_helper churn"; return churn(argc - 2, argv + 2); }
  if (strcmp(cmd, "hold") == 0) { prog = "survive_helper hold"; return hold(argc - 2, argv + 2); }
  if (strcmp(cmd, "lock") == 0) { prog = "survive_helper lock"; return lock_cmd(argc - 2, argv + 2); }
  if (strcmp(cmd, "getlk") == 0) { prog = "survive_helper getlk"; return getlk_cmd(argc - 2, argv + 2, 0); }
  if (strcmp(cmd, "getlk-free") == 0) { prog = "survive_helper getlk-free"; return getlk_cmd(argc - 2, argv + 2, 1); }
  if (strcmp(cmd, "gen") == 0) return gen_cmd(argc - 2, argv + 2);
  fprintf(stderr, "unknown command %s\n", cmd);
  return 2;
}
