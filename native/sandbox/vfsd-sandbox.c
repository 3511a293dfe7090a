// vfsd-sandbox: starts a virtiofsd-ts worker in the sandbox the keeper describes on the command
// line (src/keeper/sandbox.ts builds it; policy lives there, this program only carries it out),
// then execve()s the worker. It must run before Node does: Node starts threads at once, and a
// multithreaded process may not unshare a mount namespace (unshare(2)), while a seccomp filter
// installed with no_new_privs right before execve() is kept by the new image and inherited by
// every thread it creates (seccomp(2), prctl(2) PR_SET_NO_NEW_PRIVS).
//
//   vfsd-sandbox [options] -- PROGRAM ARG...
//     --mode namespace|chroot|none   namespace: own mount, pid, ipc, uts and net namespaces (and a
//                                    user namespace when not root), root = a read-only tmpfs
//                                    holding only the --ro/--dev/--share binds and /proc/self/fd.
//                                    chroot: no namespaces (the worker chroots itself once loaded).
//                                    none: neither.
//     --seccomp kill|log|trap|none   action for a syscall outside the allowlist (seccomp-allow.h)
//     --caps LIST                    comma-separated capability names to keep in the bounding set
//                                    (root only); everything else is dropped, no inheritable or
//                                    ambient capabilities are left
//     --ro SRC DST                   namespace: bind SRC read-only at DST in the new root
//     --dev NAME                     namespace: bind /dev/NAME (e.g. null) at /dev/NAME
//     --share PATH                   namespace: bind the shared directory at PATH (read-write)
//     --fd N                         keep fd N open for PROGRAM (all other fds above 2 are closed)
//   vfsd-sandbox --make-share-tree PATH --send-fd N
//     Clone the mount tree at PATH as a detached tree (open_tree(2) OPEN_TREE_CLONE), nosuid and
//     nodev, and send its fd over the unix socket N. The keeper keeps it and hands it to every
//     worker: all workers then see the same mounts with the same mount ids, which the inode maps
//     in shared memory rely on, and ".." at its root leads nowhere (a detached tree has no parent).
//
// Namespace mode runs three processes: this one (the pid the keeper knows), pid 1 of the new pid
// namespace (waits, reaps, forwards signals) and pid 2, the worker. Killing this one kills pid 1
// (PR_SET_PDEATHSIG) and with it the whole namespace (pid_namespaces(7)). The worker's channel
// fds are closed by the first two, so a closed channel means the worker itself has gone.
//
// Any step that fails prints one JSON log line naming it and exits 125: the keeper refuses to
// start on that (fail closed).

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/mount.h>
#include <linux/seccomp.h>

#define SETUP_FAILED 125

enum mode { MODE_NAMESPACE, MODE_CHROOT, MODE_NONE };

#define MAX_BINDS 256
#define MAX_FDS 16

struct bind {
  const char *src;
  const char *dst;
  int fd;  // O_PATH fd of src, opened before the mount namespace is rebuilt
  enum { BIND_RO, BIND_DEV, BIND_SHARE } kind;
};

static struct {
  enum mode mode;
  const char *seccomp;
  const char *caps;
  struct bind binds[MAX_BINDS];
  int nbinds;
  int keep[MAX_FDS];
  int nkeep;
  char **cmd;
  const char *tree;
  int send_fd;
} o = {.mode = MODE_NAMESPACE, .seccomp = "kill", .send_fd = -1};

/** The pid the keeper knows (this process's), passed to the worker for its log lines. */
static pid_t outer_pid;
/** Started as root (no user namespace): the capability bounding set is ours to set. */
static int as_root;

// ---- failure reporting: one JSON line, as every other log line of the daemon ----

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

/** Report the part of the sandbox that could not be set up, and exit. */
static void __attribute__((noreturn, format(printf, 2, 3))) fail(int err, const char *fmt, ...) {
  char part[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(part, sizeof part, fmt, ap);
  va_end(ap);
  char msg[1200];
  snprintf(msg, sizeof msg, "sandbox: %s: %s", part, err ? strerror(err) : "failed");
  struct timeval tv;
  gettimeofday(&tv, NULL);
  fprintf(stderr, "{\"level\":50,\"time\":%lld,\"role\":\"sandbox\",\"pid\":%d,\"part\":",
          (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000, (int)outer_pid);
  json_string(stderr, part);
  fprintf(stderr, ",\"errno\":%d,\"msg\":", err);
  json_string(stderr, msg);
  fputs("}\n", stderr);
  fflush(stderr);
  _exit(SETUP_FAILED);
}

#define CHECK(expr, ...)                   \
  do {                                     \
    if ((expr) < 0) fail(errno, __VA_ARGS__); \
  } while (0)

// ---- capabilities ----

// Indexed by capability number (capabilities(7)).
static const char *const cap_names[] = {
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
    "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
    "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
    "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
    "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
    "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
};
#define NCAP_NAMES ((int)(sizeof cap_names / sizeof cap_names[0]))

static uint64_t parse_caps(const char *list) {
  uint64_t keep = 0;
  char *copy = strdup(list);
  for (char *save = NULL, *name = strtok_r(copy, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
    int n = -1;
    for (int i = 0; i < NCAP_NAMES; i++)
      if (strcmp(name, cap_names[i]) == 0) n = i;
    if (n < 0) fail(EINVAL, "capabilities: unknown capability '%s'", name);
    keep |= UINT64_C(1) << n;
  }
  free(copy);
  return keep;
}

/**
 * Bounding set = keep; no inheritable or ambient capabilities. execve() then gives root exactly
 * the bounding set (capabilities(7), "Transformation of capabilities during execve()").
 */
static void limit_caps(uint64_t keep) {
  for (int cap = 0; cap < 64; cap++) {
    int r = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
    if (r < 0) break;  // past the kernel's last capability
    if (r == 1 && !(keep & (UINT64_C(1) << cap)))
      CHECK(prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "capabilities: drop %s from the bounding set",
            cap < NCAP_NAMES ? cap_names[cap] : "?");
  }
  CHECK(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "capabilities: clear ambient");
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[2];
  CHECK(syscall(SYS_capget, &h, d), "capabilities: capget");
  d[0].inheritable = d[1].inheritable = 0;
  CHECK(syscall(SYS_capset, &h, d), "capabilities: clear inheritable");
}

/** Nothing at all: for this process and pid 1, which only wait and forward signals. */
static void drop_all_caps(void) {
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[2] = {{0}, {0}};
  CHECK(syscall(SYS_capset, &h, d), "capabilities: drop all (waiting process)");
}

// ---- seccomp ----

struct allowed {
  int nr;
  int ret;
};
#define ALLOW(nr) {nr, 0},
#define FAIL_ENOSYS(nr) {nr, ENOSYS},
static const struct allowed syscall_list[] = {
#include "seccomp-allow.h"
};

#if defined(__x86_64__)
#define VFSD_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define VFSD_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "vfsd-sandbox: seccomp filter: unsupported architecture"
#endif

static uint32_t seccomp_action(const char *mode) {
  if (strcmp(mode, "kill") == 0) return SECCOMP_RET_KILL_PROCESS;
  if (strcmp(mode, "trap") == 0) return SECCOMP_RET_TRAP;
  if (strcmp(mode, "log") == 0) return SECCOMP_RET_LOG;
  fail(EINVAL, "seccomp: unknown mode '%s' (kill, log, trap or none)", mode);
}

/**
 * The filter: other architectures (and x32 numbers on x86_64) get the action; each listed
 * syscall is allowed (or fails with its errno); everything else gets the action. Each entry is a
 * compare and a return, so no jump is longer than one instruction.
 */
static void install_seccomp(const char *mode) {
  if (strcmp(mode, "none") == 0) return;
  uint32_t action = seccomp_action(mode);
  CHECK(syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action), "seccomp: action '%s' not supported by this kernel", mode);
  size_t n = sizeof syscall_list / sizeof syscall_list[0];
  size_t len = 0;
  struct sock_filter *prog = calloc(8 + 2 * n, sizeof *prog);
  prog[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
  prog[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, VFSD_AUDIT_ARCH, 1, 0);
  prog[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, action);
  prog[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#if defined(__x86_64__)
  prog[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u /* __X32_SYSCALL_BIT */, 0, 1);
  prog[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, action);
#endif
  for (size_t i = 0; i < n; i++) {
    uint32_t ret = syscall_list[i].ret ? SECCOMP_RET_ERRNO | (uint32_t)syscall_list[i].ret : SECCOMP_RET_ALLOW;
    prog[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)syscall_list[i].nr, 0, 1);
    prog[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ret);
  }
  prog[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, action);
  struct sock_fprog fprog = {.len = (unsigned short)len, .filter = prog};
  CHECK(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog), "seccomp: install the filter (%s)", mode);
  free(prog);
}

// ---- file descriptors ----

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/** Close every fd above 2 that was not named with --fd (workers get only what they are meant to). */
static void close_other_fds(void) {
  qsort(o.keep, (size_t)o.nkeep, sizeof o.keep[0], cmp_int);
  unsigned int from = 3;
  for (int i = 0; i < o.nkeep; i++) {
    if ((unsigned int)o.keep[i] > from) CHECK(syscall(SYS_close_range, from, o.keep[i] - 1, 0), "close inherited fds");
    if ((unsigned int)o.keep[i] >= from) from = (unsigned int)o.keep[i] + 1;
  }
  CHECK(syscall(SYS_close_range, from, ~0u, 0), "close inherited fds");
}

static void close_kept_fds(void) {
  for (int i = 0; i < o.nkeep; i++) close(o.keep[i]);
}

// ---- user namespace (not root) ----

static void write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) fail(errno, "user namespace: open %s", path);
  ssize_t len = (ssize_t)strlen(text);
  if (write(fd, text, (size_t)len) != len) fail(errno, "user namespace: write %s", path);
  close(fd);
}

/** Map our uid and gid to themselves (user_namespaces(7)); setgroups must be denied first. */
static void map_ids(uid_t uid, gid_t gid) {
  char line[64];
  write_file("/proc/self/setgroups", "deny\n");
  snprintf(line, sizeof line, "%u %u 1\n", (unsigned)uid, (unsigned)uid);
  write_file("/proc/self/uid_map", line);
  snprintf(line, sizeof line, "%u %u 1\n", (unsigned)gid, (unsigned)gid);
  write_file("/proc/self/gid_map", line);
}

// ---- the new root (namespace mode, in the worker, pid 2) ----

static int sys_open_tree(int dfd, const char *path, unsigned int flags) {
  return (int)syscall(SYS_open_tree, dfd, path, flags);
}

static int sys_move_mount(int from_dfd, const char *from, int to_dfd, const char *to, unsigned int flags) {
  return (int)syscall(SYS_move_mount, from_dfd, from, to_dfd, to, flags);
}

static int sys_mount_setattr(int dfd, const char *path, unsigned int flags, uint64_t set, uint64_t propagation) {
  struct mount_attr attr = {.attr_set = set, .propagation = propagation};
  return (int)syscall(SYS_mount_setattr, dfd, path, flags, &attr, sizeof attr);
}

static void path_join(char *out, size_t size, const char *a, const char *b) {
  if ((size_t)snprintf(out, size, "%s%s", a, b) >= size) fail(ENAMETOOLONG, "new root: %s%s", a, b);
}

/** mkdir -p of path's directories (and path itself as a directory or an empty file). */
static void make_path(const char *path, int is_dir) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) fail(ENAMETOOLONG, "new root: %s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0755) < 0 && errno != EEXIST) fail(errno, "new root: mkdir %s", buf);
    *p = '/';
  }
  if (is_dir) {
    if (mkdir(buf, 0755) < 0 && errno != EEXIST) fail(errno, "new root: mkdir %s", buf);
  } else {
    int fd = open(buf, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) fail(errno, "new root: create %s", buf);
    close(fd);
  }
}

/** A clone of b's tree with its flags, attached at root + b->dst. */
static void attach_bind(const char *root, const struct bind *b) {
  struct stat st;
  CHECK(fstat(b->fd, &st), "bind %s: stat", b->src);
  char dst[4096];
  path_join(dst, sizeof dst, root, b->dst);
  make_path(dst, S_ISDIR(st.st_mode));
  int tree = sys_open_tree(b->fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
  if (tree < 0) fail(errno, "bind %s: open_tree", b->src);
  uint64_t attrs = b->kind == BIND_RO ? MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
                 : b->kind == BIND_DEV ? MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC
                 : MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
  CHECK(sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, attrs, 0), "bind %s: mount_setattr", b->src);
  CHECK(sys_move_mount(tree, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH), "bind %s at %s: move_mount", b->src, b->dst);
  close(tree);
}

static int cmp_bind(const void *a, const void *b) {
  return strcmp(((const struct bind *)a)->dst, ((const struct bind *)b)->dst);
}

/**
 * Build the worker's root and pivot into it: a tmpfs holding only the binds and /proc/self/fd
 * (bound from a proc instance of the new pid namespace, as the C virtiofsd exposes only
 * /proc/self/fd: the rest of /proc, /proc/sys and /proc/sysrq-trigger among it, stays out).
 */
static void build_root(void) {
  // Our changes must not propagate back to the host (mount_namespaces(7)).
  CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "make / private");
  // Sources are resolved now, in the host's tree: the tmpfs below may cover them.
  for (int i = 0; i < o.nbinds; i++) {
    o.binds[i].fd = open(o.binds[i].src, O_PATH | O_CLOEXEC);
    if (o.binds[i].fd < 0) fail(errno, "bind %s: open", o.binds[i].src);
  }
  const char *root = NULL;
  static const char *const mountpoints[] = {"/tmp", "/mnt", "/proc"};
  for (size_t i = 0; i < sizeof mountpoints / sizeof mountpoints[0] && !root; i++) {
    struct stat st;
    if (lstat(mountpoints[i], &st) == 0 && S_ISDIR(st.st_mode)) root = mountpoints[i];
  }
  if (!root) fail(ENOENT, "new root: no directory to mount it on (/tmp, /mnt, /proc)");
  CHECK(mount("vfsd-root", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m,nr_inodes=4096"), "new root: mount tmpfs on %s", root);
  // Parents before what lies inside them (a share inside the package, or the other way round),
  // so the inner bind ends up on top.
  qsort(o.binds, (size_t)o.nbinds, sizeof o.binds[0], cmp_bind);
  for (int i = 0; i < o.nbinds; i++) attach_bind(root, &o.binds[i]);

  // /proc/self/fd of this process (pid 2), from a fresh proc of the new pid namespace mounted
  // aside and detached again once bound.
  char tmp[4096], fdir[4096], self_fd[4096];
  path_join(tmp, sizeof tmp, root, "/.proc");
  path_join(fdir, sizeof fdir, root, "/proc/self/fd");
  path_join(self_fd, sizeof self_fd, tmp, "/self/fd");
  make_path(tmp, 1);
  CHECK(mount("proc", tmp, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "mount /proc");
  make_path(fdir, 1);
  CHECK(mount(self_fd, fdir, NULL, MS_BIND, NULL), "bind /proc/self/fd");
  CHECK(umount2(tmp, MNT_DETACH), "detach the aside /proc");
  CHECK(rmdir(tmp), "remove the aside /proc");

  // The tmpfs itself read-only (the binds keep their own flags), then pivot into it and drop the
  // old root (the pivot_root(".", ".") idiom of pivot_root(2)).
  CHECK(sys_mount_setattr(AT_FDCWD, root, 0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0), "new root: read-only");
  CHECK(chdir(root), "new root: chdir");
  CHECK(syscall(SYS_pivot_root, ".", "."), "pivot_root");
  CHECK(umount2(".", MNT_DETACH), "detach the old root");
  CHECK(chdir("/"), "chdir /");
  for (int i = 0; i < o.nbinds; i++) close(o.binds[i].fd);
}

// ---- processes ----

static pid_t forward_to;

static void forward(int sig) {
  if (forward_to > 0) kill(forward_to, sig);
}

static void forward_signals(pid_t to) {
  forward_to = to;
  struct sigaction sa = {.sa_handler = forward};
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
}

/** Wait for pid; its wait status. */
static int wait_for(pid_t pid) {
  int st = 0;
  for (;;) {
    pid_t r = waitpid(pid, &st, 0);
    if (r == pid) return st;
    if (r < 0 && errno != EINTR) return W_EXITCODE(SETUP_FAILED, 0);
  }
}

/** Leave the way the worker left: its exit code, or its signal (without a core file). */
static void __attribute__((noreturn)) exit_like(int st) {
  if (WIFSIGNALED(st)) {
    int sig = WTERMSIG(st);
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    kill(getpid(), sig);
    _exit(128 + sig);
  }
  _exit(WIFEXITED(st) ? WEXITSTATUS(st) : SETUP_FAILED);
}

/** Caps, no_new_privs, seccomp, then the program. */
static void __attribute__((noreturn)) exec_worker(void) {
  if (o.caps && as_root) limit_caps(parse_caps(o.caps));
  CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs");
  install_seccomp(o.seccomp);
  char pid[32];
  snprintf(pid, sizeof pid, "%d", (int)outer_pid);
  setenv("VFSD_WORKER_PID", pid, 1);
  execv(o.cmd[0], o.cmd);
  fail(errno, "execve %s", o.cmd[0]);
}

/** pid 1 of the new pid namespace: start the worker, reap, report its status, leave. */
static void __attribute__((noreturn)) ns_init(int alive_r, int status_w) {
  // If our parent (the pid the keeper knows) dies, so do we, and with us the namespace. It may
  // have died already: then the pipe it holds open reads as EOF.
  CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "pdeathsig");
  struct pollfd p = {.fd = alive_r, .events = POLLIN};
  if (poll(&p, 1, 0) > 0) _exit(SETUP_FAILED);
  pid_t worker = fork();
  if (worker < 0) fail(errno, "fork (worker)");
  if (worker == 0) {
    close(alive_r);
    close(status_w);
    build_root();
    exec_worker();
  }
  close_kept_fds();
  drop_all_caps();
  CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs (pid 1)");
  install_seccomp(o.seccomp);
  forward_signals(worker);
  int st = 0;
  for (;;) {
    int s;
    pid_t r = wait(&s);
    if (r == worker) {
      st = s;
      break;
    }
    if (r < 0 && errno == ECHILD) break;
  }
  if (write(status_w, &st, sizeof st) != (ssize_t)sizeof st) { /* the parent reads our own status then */ }
  _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

static void __attribute__((noreturn)) run_namespace(void) {
  uid_t uid = geteuid();
  gid_t gid = getegid();
  int flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET;
  // Root drops its supplementary groups; an unprivileged user cannot (setgroups is denied in its
  // user namespace) and gains nothing from the namespace but its own uid.
  if (uid == 0) CHECK(setgroups(0, NULL), "setgroups");
  else flags |= CLONE_NEWUSER;
  CHECK(unshare(flags), "unshare (mount, pid, ipc, uts, net%s namespaces)", uid ? ", user" : "");
  if (uid != 0) map_ids(uid, gid);
  int alive[2], status[2];
  CHECK(pipe2(alive, O_CLOEXEC), "pipe");
  CHECK(pipe2(status, O_CLOEXEC), "pipe");
  pid_t init = fork();
  if (init < 0) fail(errno, "fork (pid 1)");
  if (init == 0) {
    close(alive[1]);
    close(status[0]);
    ns_init(alive[0], status[1]);
  }
  close(alive[0]);
  close(status[1]);
  close_kept_fds();
  drop_all_caps();
  CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs (waiting process)");
  install_seccomp(o.seccomp);
  forward_signals(init);
  int st = wait_for(init);
  int worker_st;
  if (read(status[0], &worker_st, sizeof worker_st) == (ssize_t)sizeof worker_st) st = worker_st;
  exit_like(st);
}

// ---- the share tree ----

static void __attribute__((noreturn)) make_share_tree(void) {
  uid_t uid = geteuid();
  // Cloning a mount tree needs CAP_SYS_ADMIN over the mount namespace: a user's own one.
  if (uid != 0) {
    gid_t gid = getegid();
    CHECK(unshare(CLONE_NEWUSER | CLONE_NEWNS), "share tree: unshare (user, mount namespaces)");
    map_ids(uid, gid);
  }
  int tree = sys_open_tree(AT_FDCWD, o.tree, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
  if (tree < 0) fail(errno, "share tree: open_tree %s", o.tree);
  // A slave of the share's mounts: mounts the host makes under a shared share later appear (as in
  // the Rust virtiofsd, which makes / MS_SLAVE), nothing propagates back. On a private host
  // mount, the tree is the mounts as they are now.
  CHECK(sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, MS_SLAVE), "share tree: mount_setattr");
  char byte = 0;
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
  } u;
  memset(&u, 0, sizeof u);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &tree, sizeof tree);
  CHECK(sendmsg(o.send_fd, &msg, 0), "share tree: send");
  _exit(0);
}

// ---- command line ----

static void __attribute__((noreturn)) usage(const char *why) {
  fail(EINVAL, "command line: %s", why);
}

static void parse(int argc, char **argv) {
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (!v) usage(a);
    if (strcmp(a, "--mode") == 0) {
      if (strcmp(v, "namespace") == 0) o.mode = MODE_NAMESPACE;
      else if (strcmp(v, "chroot") == 0) o.mode = MODE_CHROOT;
      else if (strcmp(v, "none") == 0) o.mode = MODE_NONE;
      else usage("--mode takes namespace, chroot or none");
    } else if (strcmp(a, "--seccomp") == 0) {
      if (strcmp(v, "none") != 0) seccomp_action(v);
      o.seccomp = v;
    } else if (strcmp(a, "--caps") == 0) {
      parse_caps(v);
      o.caps = v;
    } else if (strcmp(a, "--ro") == 0 || strcmp(a, "--dev") == 0 || strcmp(a, "--share") == 0) {
      if (o.nbinds == MAX_BINDS) usage("too many binds");
      struct bind *b = &o.binds[o.nbinds++];
      if (a[2] == 'r') {
        if (i + 2 >= argc) usage("--ro takes SRC DST");
        b->kind = BIND_RO;
        b->src = v;
        b->dst = argv[i + 2];
        i++;
      } else if (a[2] == 'd') {
        char *dev = NULL;
        if (strchr(v, '/') || !*v || asprintf(&dev, "/dev/%s", v) < 0) usage("--dev takes a name");
        b->kind = BIND_DEV;
        b->src = b->dst = dev;
      } else {
        b->kind = BIND_SHARE;
        b->src = b->dst = v;
      }
      if (b->src[0] != '/' || b->dst[0] != '/') usage("bind paths must be absolute");
    } else if (strcmp(a, "--fd") == 0) {
      if (o.nkeep == MAX_FDS) usage("too many --fd");
      int fd = atoi(v);
      if (fd < 3) usage("--fd takes a number above 2");
      o.keep[o.nkeep++] = fd;
    } else if (strcmp(a, "--make-share-tree") == 0) {
      o.tree = v;
    } else if (strcmp(a, "--send-fd") == 0) {
      o.send_fd = atoi(v);
    } else {
      usage(a);
    }
    i++;
  }
  o.cmd = argv + i;
  if (o.tree) {
    if (o.send_fd < 0) usage("--make-share-tree needs --send-fd");
    return;
  }
  if (!o.cmd[0]) usage("no program after --");
  if (o.mode != MODE_NAMESPACE && o.nbinds > 0) usage("--ro, --dev and --share need --mode namespace");
}

int main(int argc, char **argv) {
  outer_pid = getpid();
  as_root = geteuid() == 0;
  parse(argc, argv);
  if (o.tree) make_share_tree();
  // A worker must not outlive its keeper: a hung one would never see its channel close. Kept
  // across the execve of the worker (prctl(2)); the keeper may be gone already (reparented).
  CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "pdeathsig");
  if (getppid() == 1) _exit(SETUP_FAILED);
  close_other_fds();
  if (o.mode == MODE_NAMESPACE) run_namespace();
  // chroot and none: no namespaces, no fork; the worker is this process.
  if (as_root) CHECK(setgroups(0, NULL), "setgroups");
  exec_worker();
}
