/* posix_suite: POSIX/Linux file-system conformance checks for a virtio-fs mount.
 *
 *   posix_suite DIR      (DIR must exist and be empty; the suite leaves a small, deterministic
 *                         tree behind for digesting and removes its big/sparse files)
 *
 * One line per check: "ok N name", "ok N name # SKIP reason" or "not ok N name: detail";
 * last line "P passed, F failed, S skipped"; exit status 1 if anything failed.
 * Compiled in the guest: gcc -O2 -Wall -o posix_suite posix_suite.c
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif

static int num, passed, failed, skipped;
static const char *cur;
static int cur_fail, cur_skip;
static char cur_msg[512];

static void begin(const char *name) { cur = name; cur_fail = 0; cur_skip = 0; cur_msg[0] = 0; }
static void fail_at(int line, const char *expr, int err) {
  if (cur_fail) return;
  cur_fail = 1;
  snprintf(cur_msg, sizeof cur_msg, "line %d: %s (errno %d %s)", line, expr, err, err ? strerror(err) : "-");
}
static void skip(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cur_msg, sizeof cur_msg, fmt, ap);
  va_end(ap);
  cur_skip = 1;
}
static void end(void) {
  num++;
  if (cur_fail) { failed++; printf("not ok %d %s: %s\n", num, cur, cur_msg); }
  else if (cur_skip) { skipped++; printf("ok %d %s # SKIP %s\n", num, cur, cur_msg); }
  else { passed++; printf("ok %d %s\n", num, cur); }
  fflush(stdout);
}
/* EXPECT(cond): record the first failure of the current check, with errno at that moment */
#define EXPECT(c) do { errno = 0; if (!(c)) fail_at(__LINE__, #c, errno); } while (0)
/* ERR(call, E): call must fail with errno E */
#define ERR(call, E) do { errno = 0; long r_ = (long)(call); int e_ = errno; \
    if (!(r_ == -1 && e_ == (E))) { char b_[256]; snprintf(b_, sizeof b_, "%s -> %ld, want -1/%s", #call, r_, #E); fail_at(__LINE__, b_, e_); } } while (0)

static int put(const char *path, const char *data, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  if (fd < 0) return -1;
  ssize_t n = write(fd, data, strlen(data));
  int r = close(fd);
  return (n == (ssize_t)strlen(data) && r == 0) ? 0 : -1;
}
static ssize_t get(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, cap - 1);
  close(fd);
  if (n >= 0) buf[n] = 0;
  return n;
}
static int ts_after(struct timespec a, struct timespec b) { /* a > b */
  return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec > b.tv_nsec);
}
static void drop_caches(void) {
  sync();
  int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
  if (fd >= 0) { if (write(fd, "3", 1) < 0) { /* ignore */ } close(fd); }
}
static void tiny_sleep(void) { struct timespec t = {0, 20 * 1000 * 1000}; nanosleep(&t, NULL); }
static int cmpstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
  if (argc < 2 || chdir(argv[1]) != 0) { fprintf(stderr, "usage: posix_suite DIR\n"); return 2; }
  umask(022);
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct stat st, st2;
  char buf[65536];
  int fd, fd2;

  /* ------------------------------------------------------------------ open flags */
  begin("open O_CREAT|O_EXCL creates with mode");
  fd = open("excl", O_WRONLY | O_CREAT | O_EXCL, 0640);
  EXPECT(fd >= 0);
  EXPECT(fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0640 && st.st_size == 0);
  close(fd);
  end();

  begin("open O_CREAT|O_EXCL on existing -> EEXIST");
  ERR(open("excl", O_WRONLY | O_CREAT | O_EXCL, 0640), EEXIST);
  end();

  begin("open missing without O_CREAT -> ENOENT");
  ERR(open("does-not-exist", O_RDONLY), ENOENT);
  end();

  begin("O_TRUNC empties the file");
  EXPECT(put("trunc", "0123456789", 0644) == 0);
  fd = open("trunc", O_WRONLY | O_TRUNC);
  EXPECT(fd >= 0 && fstat(fd, &st) == 0 && st.st_size == 0);
  close(fd);
  EXPECT(stat("trunc", &st) == 0 && st.st_size == 0);
  end();

  begin("O_APPEND writes at end despite lseek");
  EXPECT(put("append", "abc", 0644) == 0);
  fd = open("append", O_WRONLY | O_APPEND);
  EXPECT(fd >= 0);
  EXPECT(lseek(fd, 0, SEEK_SET) == 0);
  EXPECT(write(fd, "def", 3) == 3);
  EXPECT(lseek(fd, 0, SEEK_CUR) == 6);
  close(fd);
  EXPECT(get("append", buf, sizeof buf) == 6 && strcmp(buf, "abcdef") == 0);
  end();

  /* ------------------------------------------------------------------ read/write/pread/pwrite */
  begin("write then read back 64 KiB");
  fd = open("rw", O_RDWR | O_CREAT | O_TRUNC, 0644);
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = (char)(i * 31 + 7);
  EXPECT(write(fd, buf, sizeof buf) == (ssize_t)sizeof buf);
  close(fd);
  drop_caches();
  {
    static char rb[65536];
    fd = open("rw", O_RDONLY);
    ssize_t got = 0, r;
    while ((r = read(fd, rb + got, sizeof rb - (size_t)got)) > 0) got += r;
    EXPECT(got == (ssize_t)sizeof rb && memcmp(rb, buf, sizeof rb) == 0);
    EXPECT(read(fd, rb, 1) == 0); /* EOF */
    close(fd);
  }
  end();

  begin("pread/pwrite do not move the file offset");
  fd = open("rw", O_RDWR);
  EXPECT(lseek(fd, 100, SEEK_SET) == 100);
  EXPECT(pwrite(fd, "PW", 2, 5000) == 2);
  {
    char two[3] = {0};
    EXPECT(pread(fd, two, 2, 5000) == 2 && memcmp(two, "PW", 2) == 0);
  }
  EXPECT(lseek(fd, 0, SEEK_CUR) == 100);
  close(fd);
  end();

  begin("lseek SEEK_END and beyond EOF");
  fd = open("rw", O_RDWR);
  EXPECT(lseek(fd, 0, SEEK_END) == 65536);
  EXPECT(lseek(fd, 10, SEEK_END) == 65546);
  EXPECT(write(fd, "Z", 1) == 1);
  EXPECT(fstat(fd, &st) == 0 && st.st_size == 65547);
  {
    char z[10];
    EXPECT(pread(fd, z, 10, 65536) == 10 && memcmp(z, "\0\0\0\0\0\0\0\0\0\0", 10) == 0);
  }
  close(fd);
  end();

  begin("lseek SEEK_DATA/SEEK_HOLE");
  fd = open("sparse", O_RDWR | O_CREAT | O_TRUNC, 0644);
  EXPECT(pwrite(fd, "data", 4, 0) == 4);
  EXPECT(pwrite(fd, "more", 4, 1 << 20) == 4);
  EXPECT(fsync(fd) == 0);
  {
    off_t d0 = lseek(fd, 0, SEEK_DATA);
    off_t h0 = lseek(fd, 0, SEEK_HOLE);
    off_t d1 = lseek(fd, 8192, SEEK_DATA);
    off_t hend = lseek(fd, (1 << 20) + 1, SEEK_HOLE);
    EXPECT(d0 == 0);
    EXPECT(h0 > 0 && h0 <= 65536);      /* fs block granularity */
    EXPECT(d1 > 8192 && d1 <= (1 << 20));
    EXPECT(hend == (1 << 20) + 4);       /* implicit hole at EOF */
    ERR(lseek(fd, (1 << 20) + 10, SEEK_DATA), ENXIO);
  }
  close(fd);
  end();

  begin("ftruncate shrink and grow");
  fd = open("ftr", O_RDWR | O_CREAT | O_TRUNC, 0644);
  EXPECT(write(fd, "0123456789", 10) == 10);
  EXPECT(ftruncate(fd, 4) == 0 && fstat(fd, &st) == 0 && st.st_size == 4);
  EXPECT(ftruncate(fd, 8192) == 0 && fstat(fd, &st) == 0 && st.st_size == 8192);
  close(fd);
  end();

  begin("truncate to larger size reads zeros");
  drop_caches();
  {
    static char zb[8192];
    fd = open("ftr", O_RDONLY);
    EXPECT(read(fd, zb, sizeof zb) == 8192);
    EXPECT(memcmp(zb, "0123", 4) == 0);
    int allzero = 1;
    for (size_t i = 4; i < sizeof zb; i++) if (zb[i]) { allzero = 0; break; }
    EXPECT(allzero);
    close(fd);
  }
  EXPECT(truncate("ftr", 2) == 0 && stat("ftr", &st) == 0 && st.st_size == 2);
  end();

  begin("fsync and fdatasync");
  fd = open("rw", O_RDWR);
  EXPECT(pwrite(fd, "S", 1, 0) == 1);
  EXPECT(fsync(fd) == 0);
  EXPECT(fdatasync(fd) == 0);
  close(fd);
  end();

  /* ------------------------------------------------------------------ stat after operations */
  begin("stat: size, nlink, mode, uid after create");
  EXPECT(put("st", "hello", 0604) == 0);
  EXPECT(stat("st", &st) == 0);
  EXPECT(st.st_size == 5 && st.st_nlink == 1 && (st.st_mode & 07777) == 0604 && S_ISREG(st.st_mode));
  EXPECT(st.st_uid == getuid() && st.st_gid == getgid());
  EXPECT(st.st_blksize > 0);
  end();

  begin("stat: mtime and ctime advance on write");
  {
    struct timespec old[2] = {{1000000000, 0}, {1000000000, 0}};
    EXPECT(utimensat(AT_FDCWD, "st", old, 0) == 0);
    EXPECT(stat("st", &st) == 0 && st.st_mtim.tv_sec == 1000000000);
    tiny_sleep();
    fd = open("st", O_WRONLY | O_APPEND);
    EXPECT(write(fd, "!", 1) == 1);
    close(fd);
    EXPECT(stat("st", &st2) == 0);
    EXPECT(st2.st_mtim.tv_sec > 1000000000);
    EXPECT(ts_after(st2.st_ctim, st.st_ctim));
    EXPECT(st2.st_size == 6);
  }
  end();

  begin("stat: ctime advances on chmod, mtime does not");
  EXPECT(stat("st", &st) == 0);
  tiny_sleep();
  EXPECT(chmod("st", 0640) == 0);
  EXPECT(stat("st", &st2) == 0);
  EXPECT(ts_after(st2.st_ctim, st.st_ctim));
  EXPECT(st2.st_mtim.tv_sec == st.st_mtim.tv_sec && st2.st_mtim.tv_nsec == st.st_mtim.tv_nsec);
  EXPECT((st2.st_mode & 07777) == 0640);
  end();

  begin("directory mtime advances on create/unlink");
  EXPECT(mkdir("dmt", 0755) == 0);
  {
    struct timespec old[2] = {{1000000000, 0}, {1000000000, 0}};
    EXPECT(utimensat(AT_FDCWD, "dmt", old, 0) == 0);
    EXPECT(put("dmt/f", "x", 0644) == 0);
    EXPECT(stat("dmt", &st) == 0 && st.st_mtim.tv_sec > 1000000000);
    EXPECT(utimensat(AT_FDCWD, "dmt", old, 0) == 0);
    EXPECT(unlink("dmt/f") == 0);
    EXPECT(stat("dmt", &st) == 0 && st.st_mtim.tv_sec > 1000000000);
  }
  end();

  begin("directory nlink counts subdirectories");
  EXPECT(mkdir("dnl", 0755) == 0 && mkdir("dnl/a", 0755) == 0 && mkdir("dnl/b", 0755) == 0);
  EXPECT(stat("dnl", &st) == 0 && st.st_nlink == 4);
  EXPECT(rmdir("dnl/b") == 0 && stat("dnl", &st) == 0 && st.st_nlink == 3);
  end();

  /* ------------------------------------------------------------------ unlink/rename */
  begin("unlink while open: still readable, nlink 0");
  EXPECT(put("uwo", "still here", 0644) == 0);
  fd = open("uwo", O_RDWR);
  EXPECT(fd >= 0);
  EXPECT(unlink("uwo") == 0);
  ERR(stat("uwo", &st), ENOENT);
  memset(buf, 0, 64);
  EXPECT(pread(fd, buf, 64, 0) == 10 && strcmp(buf, "still here") == 0);
  EXPECT(pwrite(fd, "STILL", 5, 0) == 5);
  EXPECT(pread(fd, buf, 64, 0) == 10 && memcmp(buf, "STILL here", 10) == 0);
  EXPECT(fstat(fd, &st) == 0 && st.st_nlink == 0 && st.st_size == 10);
  close(fd);
  end();

  begin("rename over existing file replaces it");
  EXPECT(put("ra", "AAA", 0644) == 0 && put("rb", "BBBBB", 0600) == 0);
  fd = open("rb", O_RDONLY); /* old target stays readable through an open fd */
  EXPECT(rename("ra", "rb") == 0);
  ERR(stat("ra", &st), ENOENT);
  EXPECT(get("rb", buf, sizeof buf) == 3 && strcmp(buf, "AAA") == 0);
  EXPECT(stat("rb", &st) == 0 && (st.st_mode & 0777) == 0644);
  EXPECT(read(fd, buf, 10) == 5 && memcmp(buf, "BBBBB", 5) == 0);
  close(fd);
  end();

  begin("rename directory with contents");
  EXPECT(mkdir("rd1", 0755) == 0 && mkdir("rd1/sub", 0755) == 0 && put("rd1/sub/f", "f", 0644) == 0);
  EXPECT(mkdir("rdparent", 0755) == 0);
  EXPECT(rename("rd1", "rdparent/rd2") == 0);
  EXPECT(get("rdparent/rd2/sub/f", buf, sizeof buf) == 1);
  ERR(stat("rd1", &st), ENOENT);
  end();

  begin("rename dir over empty dir ok, over non-empty -> ENOTEMPTY");
  EXPECT(mkdir("re_empty", 0755) == 0);
  EXPECT(rename("rdparent/rd2", "re_empty") == 0);
  EXPECT(stat("re_empty/sub/f", &st) == 0);
  EXPECT(mkdir("re_src", 0755) == 0);
  ERR(rename("re_src", "re_empty"), ENOTEMPTY);
  end();

  begin("rename dir into its own subdir -> EINVAL");
  ERR(rename("re_empty", "re_empty/sub/inside"), EINVAL);
  end();

  begin("renameat2 RENAME_NOREPLACE and RENAME_EXCHANGE");
  EXPECT(put("x1", "one", 0644) == 0 && put("x2", "two", 0644) == 0);
  ERR(renameat2(AT_FDCWD, "x1", AT_FDCWD, "x2", RENAME_NOREPLACE), EEXIST);
  {
    int r = renameat2(AT_FDCWD, "x1", AT_FDCWD, "x2", RENAME_EXCHANGE);
    if (r != 0 && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) skip("RENAME_EXCHANGE: %s", strerror(errno));
    else {
      EXPECT(r == 0);
      EXPECT(get("x1", buf, sizeof buf) == 3 && strcmp(buf, "two") == 0);
      EXPECT(get("x2", buf, sizeof buf) == 3 && strcmp(buf, "one") == 0);
    }
  }
  end();

  /* ------------------------------------------------------------------ directories */
  begin("mkdir existing -> EEXIST");
  EXPECT(mkdir("dexist", 0700) == 0);
  EXPECT(stat("dexist", &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700);
  ERR(mkdir("dexist", 0700), EEXIST);
  ERR(mkdir("excl", 0700), EEXIST);
  end();

  begin("rmdir non-empty -> ENOTEMPTY; rmdir file -> ENOTDIR; unlink dir -> EISDIR");
  EXPECT(mkdir("dne", 0755) == 0 && put("dne/f", "x", 0644) == 0);
  ERR(rmdir("dne"), ENOTEMPTY);
  ERR(rmdir("dne/f"), ENOTDIR);
  ERR(unlink("dne"), EISDIR);
  EXPECT(unlink("dne/f") == 0 && rmdir("dne") == 0);
  end();

  begin("name too long -> ENAMETOOLONG");
  {
    char longname[300];
    memset(longname, 'n', 256);
    longname[256] = 0;
    ERR(open(longname, O_WRONLY | O_CREAT, 0644), ENAMETOOLONG);
    longname[255] = 0;
    fd = open(longname, O_WRONLY | O_CREAT, 0644);
    EXPECT(fd >= 0);
    close(fd);
    EXPECT(unlink(longname) == 0);
  }
  end();

  begin("readdir lists exactly 1500 created entries (many READDIR calls)");
  EXPECT(mkdir("many", 0755) == 0);
  {
    enum { N = 1500 };
    char name[128];
    for (int i = 0; i < N; i++) {
      snprintf(name, sizeof name, "many/entry-with-a-fairly-long-name-to-fill-pages-%05d", i);
      if (i % 10 == 0) { if (mkdir(name, 0755) != 0) { EXPECT(0); break; } }
      else if (put(name, "", 0644) != 0) { EXPECT(0); break; }
    }
    drop_caches();
    DIR *d = opendir("many");
    EXPECT(d != NULL);
    int count = 0, dots = 0, bad = 0, dirs = 0;
    static unsigned char seen[N];
    memset(seen, 0, sizeof seen);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) { dots++; continue; }
      int idx;
      if (sscanf(e->d_name, "entry-with-a-fairly-long-name-to-fill-pages-%05d", &idx) != 1 || idx < 0 || idx >= N || seen[idx]) { bad++; continue; }
      seen[idx] = 1;
      count++;
      if (e->d_type == DT_DIR) dirs++;
      else if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN) bad++;
    }
    if (d) closedir(d);
    EXPECT(count == N && dots == 2 && bad == 0);
    EXPECT(dirs == N / 10 || dirs == 0);
  }
  end();

  begin("readdir after deleting every third entry; rewinddir; telldir/seekdir");
  {
    enum { N = 1500 };
    char name[128];
    for (int i = 0; i < N; i += 3) {
      snprintf(name, sizeof name, "many/entry-with-a-fairly-long-name-to-fill-pages-%05d", i);
      if ((i % 10 == 0 ? rmdir(name) : unlink(name)) != 0) { EXPECT(0); break; }
    }
    DIR *d = opendir("many");
    int count = 0, count2 = 0;
    struct dirent *e;
    long pos = -1;
    char at_pos[256] = "";
    while (d && (e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.') continue;
      if (count == 700) { pos = telldir(d); }
      if (count == 701) snprintf(at_pos, sizeof at_pos, "%s", e->d_name);
      count++;
    }
    EXPECT(count == N - (N + 2) / 3);
    if (d) {
      rewinddir(d);
      while ((e = readdir(d)) != NULL) if (e->d_name[0] != '.') count2++;
      EXPECT(count2 == count);
      seekdir(d, pos);
      while ((e = readdir(d)) != NULL && e->d_name[0] == '.') {}
      EXPECT(e != NULL && strcmp(e->d_name, at_pos) == 0);
      closedir(d);
    }
  }
  end();

  begin("readdir of a small dir is exactly the created set");
  EXPECT(mkdir("small", 0755) == 0);
  EXPECT(put("small/b", "", 0644) == 0 && put("small/a", "", 0644) == 0 && mkdir("small/c", 0755) == 0);
  EXPECT(symlink("a", "small/d") == 0 && mkfifo("small/e", 0644) == 0);
  {
    DIR *d = opendir("small");
    char *names[16];
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL && n < 16) names[n++] = strdup(e->d_name);
    if (d) closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmpstr);
    char joined[256] = "";
    for (int i = 0; i < n; i++) { strcat(joined, names[i]); strcat(joined, " "); free(names[i]); }
    EXPECT(strcmp(joined, ". .. a b c d e ") == 0);
    if (strcmp(joined, ". .. a b c d e ") != 0) snprintf(cur_msg, sizeof cur_msg, "got '%s'", joined);
  }
  end();

  /* ------------------------------------------------------------------ links */
  begin("symlink/readlink/lstat");
  EXPECT(symlink("target/../file name", "sl") == 0);
  {
    char t[256];
    ssize_t n = readlink("sl", t, sizeof t);
    EXPECT(n == 19 && memcmp(t, "target/../file name", 19) == 0);
  }
  EXPECT(lstat("sl", &st) == 0 && S_ISLNK(st.st_mode) && st.st_size == 19);
  ERR(stat("sl", &st), ENOENT);
  ERR(readlink("st", buf, 10), EINVAL);
  ERR(symlink("x", "sl"), EEXIST);
  end();

  begin("symlink to file follows on open");
  EXPECT(symlink("st", "sl2") == 0);
  EXPECT(get("sl2", buf, sizeof buf) == 6 && memcmp(buf, "hello!", 6) == 0);
  EXPECT(stat("sl2", &st) == 0 && S_ISREG(st.st_mode));
  end();

  begin("hard link count and shared content");
  EXPECT(put("hl", "hard", 0644) == 0);
  EXPECT(link("hl", "hl2") == 0 && link("hl", "dexist/hl3") == 0);
  EXPECT(stat("hl", &st) == 0 && st.st_nlink == 3);
  EXPECT(stat("dexist/hl3", &st2) == 0 && st2.st_ino == st.st_ino && st2.st_nlink == 3);
  EXPECT(unlink("hl2") == 0 && stat("hl", &st) == 0 && st.st_nlink == 2);
  ERR(link("hl", "hl"), EEXIST);
  ERR(link("dexist", "dlink"), EPERM);
  end();

  /* ------------------------------------------------------------------ attributes */
  begin("chmod/fchmod incl. setuid/setgid/sticky");
  EXPECT(put("cm", "x", 0644) == 0);
  EXPECT(chmod("cm", 04755) == 0 && stat("cm", &st) == 0 && (st.st_mode & 07777) == 04755);
  fd = open("cm", O_RDONLY);
  EXPECT(fchmod(fd, 02711) == 0 && fstat(fd, &st) == 0 && (st.st_mode & 07777) == 02711);
  close(fd);
  EXPECT(chmod("dexist", 01777) == 0 && stat("dexist", &st) == 0 && (st.st_mode & 07777) == 01777);
  EXPECT(chmod("dexist", 0755) == 0);
  end();

  begin("chown/fchown/lchown");
  EXPECT(chown("cm", 1001, 1002) == 0 && stat("cm", &st) == 0 && st.st_uid == 1001 && st.st_gid == 1002);
  fd = open("cm", O_RDONLY);
  EXPECT(fchown(fd, 2001, (gid_t)-1) == 0 && fstat(fd, &st) == 0 && st.st_uid == 2001 && st.st_gid == 1002);
  close(fd);
  EXPECT(lchown("sl", 3001, 3002) == 0 && lstat("sl", &st) == 0 && st.st_uid == 3001 && st.st_gid == 3002);
  end();

  begin("utimensat explicit, UTIME_OMIT, UTIME_NOW, AT_SYMLINK_NOFOLLOW");
  {
    struct timespec ts[2] = {{1234567890, 123456789}, {1111111111, 987654321}};
    EXPECT(utimensat(AT_FDCWD, "cm", ts, 0) == 0);
    EXPECT(stat("cm", &st) == 0);
    EXPECT(st.st_atim.tv_sec == 1234567890 && st.st_atim.tv_nsec == 123456789);
    EXPECT(st.st_mtim.tv_sec == 1111111111 && st.st_mtim.tv_nsec == 987654321);
    struct timespec ts2[2] = {{0, UTIME_OMIT}, {1500000000, 0}};
    EXPECT(utimensat(AT_FDCWD, "cm", ts2, 0) == 0);
    EXPECT(stat("cm", &st) == 0 && st.st_atim.tv_sec == 1234567890 && st.st_mtim.tv_sec == 1500000000);
    struct timespec ts3[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
    time_t before = time(NULL);
    EXPECT(utimensat(AT_FDCWD, "cm", ts3, 0) == 0);
    EXPECT(stat("cm", &st) == 0 && st.st_mtim.tv_sec >= before - 5 && st.st_mtim.tv_sec <= time(NULL) + 5);
    struct timespec ts4[2] = {{1300000000, 0}, {1300000000, 0}};
    EXPECT(utimensat(AT_FDCWD, "sl", ts4, AT_SYMLINK_NOFOLLOW) == 0);
    EXPECT(lstat("sl", &st) == 0 && st.st_mtim.tv_sec == 1300000000);
    struct timeval tv[2] = {{1400000000, 5}, {1400000001, 7}};
    fd = open("cm", O_RDONLY);
    EXPECT(futimes(fd, tv) == 0 && fstat(fd, &st) == 0 && st.st_mtim.tv_sec == 1400000001 && st.st_mtim.tv_nsec == 7000);
    close(fd);
  }
  end();

  begin("access() R_OK/W_OK/X_OK/F_OK as root");
  EXPECT(put("acc", "x", 0644) == 0);
  EXPECT(access("acc", F_OK) == 0 && access("acc", R_OK | W_OK) == 0);
  ERR(access("acc", X_OK), EACCES);
  EXPECT(chmod("acc", 0100) == 0 && access("acc", X_OK) == 0);
  ERR(access("nope", F_OK), ENOENT);
  end();

  begin("permission checks as uid 1000 (fork + setresuid)");
  EXPECT(put("perm0600", "secret", 0600) == 0);
  EXPECT(mkdir("permdir", 0777) == 0 && chmod("permdir", 0777) == 0);
  {
    pid_t p = fork();
    if (p == 0) {
      int bad = 0;
      if (setgroups(0, NULL) != 0 || setresgid(1000, 1000, 1000) != 0 || setresuid(1000, 1000, 1000) != 0) _exit(99);
      if (open("perm0600", O_RDONLY) != -1 || errno != EACCES) bad |= 1;
      if (access("perm0600", R_OK) != -1 || errno != EACCES) bad |= 2;
      int f = open("permdir/mine", O_WRONLY | O_CREAT | O_EXCL, 0644);
      if (f < 0) bad |= 4; else close(f);
      struct stat s;
      if (stat("permdir/mine", &s) != 0 || s.st_uid != 1000 || s.st_gid != 1000) bad |= 8;
      if (chmod("perm0600", 0666) != -1 || errno != EPERM) bad |= 16;
      if (chown("permdir/mine", 0, 0) != -1 || errno != EPERM) bad |= 32;
      if (mkdir("nonroot-in-root-dir", 0755) != -1 || errno != EACCES) bad |= 64;
      _exit(bad);
    }
    int status = 0;
    EXPECT(waitpid(p, &status, 0) == p);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) snprintf(cur_msg, sizeof cur_msg, "child failure mask %d", WEXITSTATUS(status));
  }
  end();

  begin("statfs reports a FUSE file system with sane numbers");
  {
    struct statfs sf;
    EXPECT(statfs(".", &sf) == 0);
    EXPECT(sf.f_type == FUSE_SUPER_MAGIC);
    EXPECT(sf.f_bsize > 0 && sf.f_blocks > 0 && sf.f_bfree <= sf.f_blocks && sf.f_bavail <= sf.f_bfree);
    EXPECT(sf.f_namelen == 255);
  }
  end();

  /* ------------------------------------------------------------------ fallocate / copy_file_range */
  begin("fallocate allocate, KEEP_SIZE, PUNCH_HOLE");
  fd = open("falloc", O_RDWR | O_CREAT | O_TRUNC, 0644);
  {
    int r = fallocate(fd, 0, 0, 1 << 20);
    if (r != 0 && errno == EOPNOTSUPP) skip("fallocate: EOPNOTSUPP");
    else {
      EXPECT(r == 0);
      EXPECT(fstat(fd, &st) == 0 && st.st_size == (1 << 20) && st.st_blocks * 512 >= (1 << 20));
      EXPECT(fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20) == 0);
      EXPECT(fstat(fd, &st) == 0 && st.st_size == (1 << 20));
      memset(buf, 'F', 8192);
      EXPECT(pwrite(fd, buf, 8192, 0) == 8192);
      EXPECT(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0);
      char c[2];
      EXPECT(pread(fd, c, 2, 4094) == 2 && c[0] == 0 && c[1] == 0);
      EXPECT(pread(fd, c, 1, 4096) == 1 && c[0] == 'F');
    }
  }
  close(fd);
  end();

  begin("copy_file_range copies data");
  {
    int in = open("rw", O_RDONLY), out = open("cfr", O_RDWR | O_CREAT | O_TRUNC, 0644);
    loff_t off_in = 1000, off_out = 0;
    ssize_t total = 0, r;
    while (total < 50000 && (r = copy_file_range(in, &off_in, out, &off_out, (size_t)(50000 - total), 0)) > 0) total += r;
    EXPECT(total == 50000);
    static char a[50000], b[50000];
    EXPECT(pread(in, a, sizeof a, 1000) == (ssize_t)sizeof a);
    EXPECT(pread(out, b, sizeof b, 0) == (ssize_t)sizeof b);
    EXPECT(memcmp(a, b, sizeof a) == 0);
    EXPECT(fstat(out, &st) == 0 && st.st_size == 50000);
    close(in);
    close(out);
  }
  end();

  /* ------------------------------------------------------------------ locks */
  begin("fcntl F_SETLK conflicts seen by another process (F_GETLK)");
  fd = open("lockfile", O_RDWR | O_CREAT | O_TRUNC, 0644);
  {
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100};
    EXPECT(fcntl(fd, F_SETLK, &fl) == 0);
    pid_t p = fork();
    if (p == 0) {
      int f = open("lockfile", O_RDWR);
      struct flock g = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 50, .l_len = 10};
      int bad = 0;
      if (fcntl(f, F_GETLK, &g) != 0 || g.l_type != F_WRLCK || g.l_pid != getppid()) bad |= 1;
      struct flock h = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 50, .l_len = 10};
      if (fcntl(f, F_SETLK, &h) != -1 || (errno != EAGAIN && errno != EACCES)) bad |= 2;
      struct flock k = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 200, .l_len = 10};
      if (fcntl(f, F_SETLK, &k) != 0) bad |= 4; /* non-overlapping range is free */
      _exit(bad);
    }
    int status = 0;
    waitpid(p, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) snprintf(cur_msg, sizeof cur_msg, "child failure mask %d", WEXITSTATUS(status));
    fl.l_type = F_UNLCK;
    EXPECT(fcntl(fd, F_SETLK, &fl) == 0);
  }
  end();

  begin("OFD locks conflict between two open file descriptions");
  {
    fd2 = open("lockfile", O_RDWR);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    EXPECT(fcntl(fd, F_OFD_SETLK, &fl) == 0);
    struct flock g = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    ERR(fcntl(fd2, F_OFD_SETLK, &g), EAGAIN);
    fl.l_type = F_UNLCK;
    EXPECT(fcntl(fd, F_OFD_SETLK, &fl) == 0);
    EXPECT(fcntl(fd2, F_OFD_SETLK, &g) == 0);
    close(fd2);
  }
  end();

  begin("flock(2) exclusive vs exclusive on two open files");
  {
    fd2 = open("lockfile", O_RDWR);
    EXPECT(flock(fd, LOCK_EX | LOCK_NB) == 0);
    ERR(flock(fd2, LOCK_EX | LOCK_NB), EWOULDBLOCK);
    EXPECT(flock(fd, LOCK_UN) == 0);
    EXPECT(flock(fd2, LOCK_SH | LOCK_NB) == 0);
    close(fd2);
  }
  close(fd);
  end();

  /* ------------------------------------------------------------------ *at / flags */
  begin("openat O_NOFOLLOW on symlink -> ELOOP");
  {
    int dfd = open(".", O_RDONLY | O_DIRECTORY);
    EXPECT(dfd >= 0);
    ERR(openat(dfd, "sl2", O_RDONLY | O_NOFOLLOW), ELOOP);
    int p = openat(dfd, "sl2", O_PATH | O_NOFOLLOW);
    EXPECT(p >= 0 && fstat(p, &st) == 0 && S_ISLNK(st.st_mode));
    if (p >= 0) close(p);
    close(dfd);
  }
  end();

  begin("O_DIRECTORY on a file -> ENOTDIR; file as path component -> ENOTDIR");
  ERR(open("st", O_RDONLY | O_DIRECTORY), ENOTDIR);
  ERR(open("st/x", O_RDONLY), ENOTDIR);
  ERR(mkdir("st/x", 0755), ENOTDIR);
  end();

  begin("*at family relative to a directory fd");
  {
    int dfd = open("dexist", O_RDONLY | O_DIRECTORY);
    EXPECT(dfd >= 0);
    int f = openat(dfd, "at-file", O_WRONLY | O_CREAT | O_EXCL, 0600);
    EXPECT(f >= 0 && write(f, "at", 2) == 2);
    if (f >= 0) close(f);
    EXPECT(fstatat(dfd, "at-file", &st, 0) == 0 && st.st_size == 2);
    EXPECT(mkdirat(dfd, "at-dir", 0750) == 0);
    EXPECT(renameat(dfd, "at-file", dfd, "at-dir/at-file2") == 0);
    EXPECT(linkat(dfd, "at-dir/at-file2", dfd, "at-link", 0) == 0);
    EXPECT(symlinkat("at-dir/at-file2", dfd, "at-sym") == 0);
    EXPECT(fchmodat(dfd, "at-link", 0640, 0) == 0);
    EXPECT(fchownat(dfd, "at-sym", 7, 8, AT_SYMLINK_NOFOLLOW) == 0);
    EXPECT(fstatat(dfd, "at-sym", &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_uid == 7 && S_ISLNK(st.st_mode));
    EXPECT(faccessat(dfd, "at-link", R_OK, 0) == 0);
    EXPECT(unlinkat(dfd, "at-link", 0) == 0);
    ERR(unlinkat(dfd, "at-dir", 0), EISDIR);
    EXPECT(fstat(dfd, &st) == 0 && S_ISDIR(st.st_mode));
    close(dfd);
  }
  end();

  /* ------------------------------------------------------------------ special files */
  begin("mknod fifo and pass data through it");
  EXPECT(mknod("fifo", S_IFIFO | 0644, 0) == 0);
  EXPECT(stat("fifo", &st) == 0 && S_ISFIFO(st.st_mode) && (st.st_mode & 0777) == 0644);
  fd = open("fifo", O_RDWR);
  EXPECT(fd >= 0 && write(fd, "pipe", 4) == 4);
  memset(buf, 0, 8);
  EXPECT(read(fd, buf, 8) == 4 && memcmp(buf, "pipe", 4) == 0);
  close(fd);
  end();

  begin("mknod char device node (stat only)");
  EXPECT(mknod("chardev", S_IFCHR | 0600, makedev(1, 3)) == 0);
  EXPECT(stat("chardev", &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3);
  end();

  begin("mknod unix socket node");
  EXPECT(mknod("socknode", S_IFSOCK | 0644, 0) == 0);
  EXPECT(lstat("socknode", &st) == 0 && S_ISSOCK(st.st_mode));
  end();

  /* ------------------------------------------------------------------ big / sparse */
  begin("sparse write beyond 4 GiB");
  fd = open("big", O_RDWR | O_CREAT | O_TRUNC, 0644);
  {
    const off_t off = (off_t)5 << 30;  /* 5 GiB */
    EXPECT(pwrite(fd, "end-of-big", 10, off) == 10);
    EXPECT(fstat(fd, &st) == 0 && st.st_size == off + 10);
    EXPECT(st.st_blocks * 512 < (1 << 20));
    EXPECT(fsync(fd) == 0);
    drop_caches();
    memset(buf, 0, 16);
    EXPECT(pread(fd, buf, 10, off) == 10 && memcmp(buf, "end-of-big", 10) == 0);
    EXPECT(pread(fd, buf, 16, ((off_t)4 << 30) + 12345) == 16 && memcmp(buf, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16) == 0);
    EXPECT(pwrite(fd, "x", 1, ((off_t)1 << 32) - 1) == 1);   /* straddle the 4 GiB boundary */
    EXPECT(pwrite(fd, "y", 1, (off_t)1 << 32) == 1);
    EXPECT(pread(fd, buf, 2, ((off_t)1 << 32) - 1) == 2 && buf[0] == 'x' && buf[1] == 'y');
    EXPECT(ftruncate(fd, 4096) == 0 && fstat(fd, &st) == 0 && st.st_size == 4096);
  }
  close(fd);
  EXPECT(unlink("big") == 0);
  end();

  begin("O_TMPFILE + linkat (SKIP if the backend lacks FUSE_TMPFILE)");
  fd = open(".", O_TMPFILE | O_RDWR, 0600);
  if (fd < 0) skip("O_TMPFILE: %s", strerror(errno));
  else {
    EXPECT(write(fd, "tmp", 3) == 3);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    EXPECT(linkat(AT_FDCWD, path, AT_FDCWD, "tmpfile-linked", AT_SYMLINK_FOLLOW) == 0);
    EXPECT(get("tmpfile-linked", buf, sizeof buf) == 3);
    close(fd);
    EXPECT(unlink("tmpfile-linked") == 0); /* leave the tree the same whether supported or not */
  }
  end();

  begin("O_DIRECT write/read (report only if unsupported)");
  fd = open("direct", O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0644);
  if (fd < 0) skip("O_DIRECT: %s", strerror(errno));
  else {
    void *al = NULL;
    EXPECT(posix_memalign(&al, 4096, 8192) == 0);
    memset(al, 'D', 8192);
    EXPECT(pwrite(fd, al, 8192, 0) == 8192);
    memset(al, 0, 8192);
    EXPECT(pread(fd, al, 8192, 0) == 8192 && ((char *)al)[8191] == 'D');
    free(al);
    close(fd);
  }
  end();

  /* ------------------------------------------------------------------ many open files, cleanup */
  begin("300 files open at once, all readable");
  EXPECT(mkdir("open300", 0755) == 0);
  {
    int fds[300];
    char name[64];
    int okc = 0;
    for (int i = 0; i < 300; i++) {
      snprintf(name, sizeof name, "open300/f%03d", i);
      fds[i] = open(name, O_RDWR | O_CREAT | O_TRUNC, 0644);
      if (fds[i] >= 0 && write(fds[i], name, strlen(name)) == (ssize_t)strlen(name)) okc++;
    }
    int rd = 0;
    for (int i = 0; i < 300; i++) {
      char b[64] = {0};
      snprintf(name, sizeof name, "open300/f%03d", i);
      if (fds[i] >= 0 && pread(fds[i], b, sizeof b, 0) == (ssize_t)strlen(name) && !strcmp(b, name)) rd++;
      if (fds[i] >= 0) close(fds[i]);
    }
    EXPECT(okc == 300 && rd == 300);
  }
  end();

  begin("recursive removal of the many-entries dir");
  {
    DIR *d = opendir("many");
    struct dirent *e;
    char name[512];
    int errs = 0;
    while (d && (e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.') continue;
      snprintf(name, sizeof name, "many/%s", e->d_name);
      if (unlink(name) != 0 && !(errno == EISDIR && rmdir(name) == 0)) errs++;
    }
    if (d) closedir(d);
    EXPECT(errs == 0);
    EXPECT(rmdir("many") == 0);
  }
  end();

  printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
  return failed ? 1 : 0;
}
