// vfsd-bench frontend: plays QEMU + a Linux guest's virtio-fs driver against a vhost-user-fs
// daemon, and fires FUSE requests at a fixed depth with batched kicks.
//
// Start-up, in QEMU 7.2's order for vhost-user-fs (the one test/support/frontend.ts replays; each
// message as QEMU docs/interop/vhost-user.rst defines it): GET_FEATURES, GET/SET_PROTOCOL_FEATURES,
// GET_QUEUE_NUM, SET_OWNER, SET_FEATURES, SET_MEM_TABLE (guest RAM: one memfd, shared by fd),
// then per ring SET_VRING_NUM/BASE/ADDR/KICK/CALL and SET_VRING_ENABLE; then FUSE_INIT with the
// flags a Linux 6.1 guest sends.
//
// Rings (virtio 1.2 section 2.7): split, 256 entries, VIRTIO_F_VERSION_1 + INDIRECT_DESC +
// EVENT_IDX. Every request goes through an indirect table, one buffer per FUSE argument and one
// per 4 KiB page, as Linux's virtio_fs lays a request out; FORGETs go on the hiprio ring, one
// descriptor each. Request slot i always uses ring descriptor i, so a used entry names its slot.
//
// The loop: take every used entry there is, let each slot post its next request, publish the
// avail index once and kick only if the device asked for it (EVENT_IDX); when nothing is used,
// re-arm used_event and sleep in epoll_wait() on the call eventfds. So the requests completed
// between two wake-ups go out with one kick. How often the device is asked to call is the
// calls= option (Frontend::wait).
//
// Commands on stdin, one JSON line per answer on stdout:
//   run WORKLOAD DEPTH WARMUP_S DURATION_S [MAX_OPS] [verify] [calls=each|batch]
//   quit
// WORKLOAD: getattr lookup read4k write4k read1m write1m readdirplus readdir create.
#include "vu.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <string>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace {

using namespace vu;

constexpr unsigned QSIZE = 256;
constexpr unsigned MAX_DEPTH = 128;
constexpr unsigned HIPRIO_SLOTS = 16;
constexpr size_t PAGE = 4096, MIB = 1 << 20;
constexpr uint64_t FILE_SIZE = 64 * MIB;  // the data files the bench writes into the share
constexpr unsigned FORGET_EVERY = 1024;   // LOOKUP: give the lookups back in one FORGET this often
constexpr unsigned FORGETS_PER_BATCH = 4000;
constexpr double STALL_S = 30;

// Per request slot: [indirect table | request | reply header + arguments], then its data pages.
constexpr size_t TABLE_OFF = 0, TABLE_MAX = 264;  // in_header, 2 args, 256 pages, out_header, 2 args
constexpr size_t REQ_OFF = 8192, REQ_MAX = 4096;
constexpr size_t REP_OFF = 12288, REP_MAX = 4096;
constexpr size_t META_SIZE = 16384;
static_assert(TABLE_OFF + TABLE_MAX * 16 <= REQ_OFF && REQ_OFF + REQ_MAX <= REP_OFF && REP_OFF + REP_MAX <= META_SIZE,
              "slot layout overlaps");
constexpr size_t HI_BUF = 64 * 1024;

// What a Linux 6.1 guest asks for in FUSE_INIT (fs/fuse/inode.c, fuse_send_init), minus the
// security-context extension, which needs an LSM in the guest.
constexpr uint32_t INIT_FLAGS = FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_ATOMIC_O_TRUNC | FUSE_EXPORT_SUPPORT |
    FUSE_BIG_WRITES | FUSE_DONT_MASK | FUSE_SPLICE_WRITE | FUSE_SPLICE_MOVE | FUSE_SPLICE_READ | FUSE_FLOCK_LOCKS |
    FUSE_HAS_IOCTL_DIR | FUSE_AUTO_INVAL_DATA | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO | FUSE_ASYNC_DIO |
    FUSE_WRITEBACK_CACHE | FUSE_NO_OPEN_SUPPORT | FUSE_PARALLEL_DIROPS | FUSE_HANDLE_KILLPRIV | FUSE_POSIX_ACL |
    FUSE_ABORT_ERROR | FUSE_MAX_PAGES | FUSE_CACHE_SYMLINKS | FUSE_NO_OPENDIR_SUPPORT | FUSE_EXPLICIT_INVAL_DATA |
    FUSE_HANDLE_KILLPRIV_V2 | FUSE_SETXATTR_EXT;

enum class W { getattr, lookup, read4k, write4k, read1m, write1m, readdirplus, readdir, create };
const char* const W_NAMES[] = {"getattr", "lookup", "read4k", "write4k", "read1m", "write1m", "readdirplus", "readdir", "create"};
constexpr int NUM_W = 9;

struct Ring {
  unsigned num = QSIZE;
  vring_desc* desc;
  vring_avail* avail;
  vring_used* used;
  uint64_t desc_gpa, avail_gpa, used_gpa;
  uint16_t shadow = 0, last_published = 0, last_used = 0;
  int kick, call;
  unsigned inflight = 0;
};

struct Slot {
  unsigned idx;
  vring_desc* table;
  uint64_t table_gpa;
  uint8_t *req, *rep, *data;
  uint64_t req_gpa, rep_gpa, data_gpa;
  unsigned n = 0;         // descriptors in the table
  uint32_t req_len = 0;   // bytes of in_header + arguments + pages
  uint32_t rep_len = 0;   // bytes of out_header + out arguments laid out in rep
  uint32_t opcode = 0;
  uint64_t unique = 0;
  double t_post = 0, t_op = 0;
  bool busy = false;
  // per-workload state
  int step = 0;
  uint64_t nodeid = 0, fh = 0, off = 0, lookups = 0;
  uint32_t seq = 0, entries = 0;
  uint32_t rng = 1;
};

struct TreeCpu { uint64_t ns = 0, ticks = 0; unsigned procs = 0, threads = 0; };

// CPU time of a process and all its descendants: the sum of every thread's on-CPU ns from
// /proc/<pid>/task/<tid>/schedstat, and utime+stime ticks from /proc/<pid>/stat (proc(5)).
void tree_cpu(int pid, TreeCpu& t, int depth = 0) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  if (FILE* f = fopen(path, "r")) {
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    if (const char* p = strrchr(buf, ')')) {
      unsigned long long ut = 0, st = 0;
      // fields 3..15 after the comm: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
      if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2) t.ticks += ut + st;
    }
  } else {
    return;  // gone
  }
  t.procs++;
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR* d = opendir(path);
  if (!d) return;
  std::vector<int> kids;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char p2[300];
    snprintf(p2, sizeof p2, "/proc/%d/task/%s/schedstat", pid, e->d_name);
    if (FILE* f = fopen(p2, "r")) {
      unsigned long long ns = 0;
      if (fscanf(f, "%llu", &ns) == 1) { t.ns += ns; t.threads++; }
      fclose(f);
    }
    snprintf(p2, sizeof p2, "/proc/%d/task/%s/children", pid, e->d_name);
    if (FILE* f = fopen(p2, "r")) {
      int k;
      while (fscanf(f, "%d", &k) == 1) kids.push_back(k);
      fclose(f);
    }
  }
  closedir(d);
  if (depth < 5) for (int k : kids) tree_cpu(k, t, depth + 1);
}

struct Result {
  uint64_t ops = 0, requests = 0, entries = 0, kicks = 0, wakeups = 0, posted = 0, forgets = 0, errors = 0;
  double seconds = 0, fe_cpu = 0;
  TreeCpu d0, d1;
  std::vector<float> lat_us;
  std::string first_error;
};

class Frontend {
 public:
  Frontend(int sock, int daemon_pid) : sock_(sock), pid_(daemon_pid) {}
  void setup(const char* file, const char* wfile, const char* dir);
  struct RunOpts { double warmup = 0, duration = 0; uint64_t max_ops = 0; bool verify = false, call_each = false; };
  void run(W w, unsigned depth, const RunOpts& o);
  void finish();

 private:
  int sock_, pid_;
  uint8_t* ram_ = nullptr;
  size_t ram_size_ = 0, top_ = 0;
  int ram_fd_ = -1;
  int epfd_ = -1;  // the call eventfds (edge-triggered) and the vhost-user socket
  uint64_t features_ = 0, protocol_ = 0;
  bool event_idx_ = false;
  Ring rq_, hq_;
  Slot slots_[MAX_DEPTH];
  struct HiSlot { uint8_t* buf; uint64_t gpa; bool busy; } hi_[HIPRIO_SLOTS];
  std::vector<fuse_forget_one> forgets_;
  uint64_t unique_ = 1;
  fuse_init_out init_{};
  // what setup() found
  uint64_t file_node_ = 0, file_fh_ = 0, wfile_node_ = 0, wfile_fh_ = 0, dir_node_ = 0;
  std::string file_name_;
  // the cell being run
  W w_ = W::getattr;
  enum Phase { WARMUP, MEASURE, DRAIN } phase_ = WARMUP;
  bool verify_ = false;
  bool call_each_ = false;  // ask for a call after every used entry (virtio_fs) or after 3/4 in flight
  uint64_t max_ops_ = 0;
  double pass_now_ = 0;
  Result r_;
  uint64_t expect_entries_ = 0;  // entries per scan seen first; later scans must match

  uint64_t alloc(size_t len, size_t align);
  void rpc(uint32_t req, const void* payload, uint32_t size, const int* fds = nullptr, int nfds = 0, uint64_t* reply = nullptr);
  void ring_init(Ring& r, unsigned index);

  // building a request in a slot
  void begin(Slot& s, uint32_t opcode, uint64_t nodeid);
  uint8_t* arg(Slot& s, uint32_t len);
  void pages(Slot& s, uint32_t bytes, bool writable);
  void expect(Slot& s, uint32_t arg1, uint32_t arg2 = 0);
  void post(Slot& s);
  void publish(Ring& r);
  bool wait(double deadline);

  // workloads
  bool start(Slot& s);
  void done(Slot& s, uint32_t used_len);
  void next_readdir(Slot& s, bool ok, uint32_t used_len);
  void next_create(Slot& s, bool ok, const uint8_t* body);
  static size_t create_name(const Slot& s, char* buf, size_t cap) {
    return size_t(snprintf(buf, cap, "bench-create-%u-%u", s.idx, s.seq)) + 1;
  }
  void op_done(Slot& s);
  void error(const Slot& s, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
  void forget(uint64_t nodeid, uint64_t n) { forgets_.push_back({nodeid, n}); }
  void flush_forgets();
  void begin_measure();
  void end_measure();
  unsigned reap_requests();
  unsigned reap_hiprio();
  uint32_t roundtrip(Slot& s);
  void print(unsigned depth);
};

uint64_t Frontend::alloc(size_t len, size_t align) {
  top_ = (top_ + align - 1) & ~(align - 1);
  uint64_t gpa = top_;
  top_ += len;
  if (top_ > ram_size_) die("guest RAM too small");
  return gpa;
}

// Send a control message and wait for its reply (GET_*) or its ack (NEED_REPLY with REPLY_ACK).
void Frontend::rpc(uint32_t req, const void* payload, uint32_t size, const int* fds, int nfds, uint64_t* reply) {
  bool ack = !reply && (protocol_ & bit(PF_REPLY_ACK));
  if (send_msg(sock_, req, VERSION | (ack ? FLAG_NEED_REPLY : 0), payload, size, fds, nfds) < 0) die("vhost-user send failed: daemon gone?");
  if (!reply && !ack) return;
  Msg m;
  int rc = recv_msg(sock_, m);
  for (int fd : m.fds) close(fd);
  if (rc <= 0) die("vhost-user connection closed during start-up");
  if (m.h.request != req || !(m.h.flags & FLAG_REPLY)) die("vhost-user: unexpected reply to request " + std::to_string(req));
  if (reply) *reply = m.u64();
  else if (m.u64() != 0) die("vhost-user: request " + std::to_string(req) + " failed (ack " + std::to_string(m.u64()) + ")");
}

void Frontend::ring_init(Ring& r, unsigned index) {
  RingLayout l(r.num);
  uint64_t base = alloc(l.total, PAGE);
  r.desc_gpa = base + l.desc;
  r.avail_gpa = base + l.avail;
  r.used_gpa = base + l.used;
  r.desc = reinterpret_cast<vring_desc*>(ram_ + r.desc_gpa);
  r.avail = reinterpret_cast<vring_avail*>(ram_ + r.avail_gpa);
  r.used = reinterpret_cast<vring_used*>(ram_ + r.used_gpa);
  r.kick = eventfd(0, EFD_CLOEXEC);
  r.call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (r.kick < 0 || r.call < 0) die("eventfd failed");
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ev.data.fd = r.call;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, r.call, &ev) < 0) die("epoll_ctl failed");
  VringState num{index, r.num}, base0{index, 0};
  rpc(SET_VRING_NUM, &num, sizeof num);
  rpc(SET_VRING_BASE, &base0, sizeof base0);
  // Ring addresses are front-end virtual addresses (vhost-user.rst, "Vring address description").
  VringAddr a{index, 0, uint64_t(uintptr_t(r.desc)), uint64_t(uintptr_t(r.used)), uint64_t(uintptr_t(r.avail)), 0};
  rpc(SET_VRING_ADDR, &a, sizeof a);
  uint64_t i = index;
  rpc(SET_VRING_KICK, &i, sizeof i, &r.kick, 1);
  rpc(SET_VRING_CALL, &i, sizeof i, &r.call, 1);
}

void Frontend::setup(const char* file, const char* wfile, const char* dir) {
  // Guest RAM: rings, hiprio buffers, and per slot its metadata and 1 MiB of data pages.
  ram_size_ = 2 * MIB + HIPRIO_SLOTS * HI_BUF + MAX_DEPTH * (META_SIZE + MIB);
  ram_fd_ = memfd_create("vfsd-bench-guest-ram", MFD_CLOEXEC);
  if (ram_fd_ < 0 || ftruncate(ram_fd_, off_t(ram_size_)) < 0) die("memfd for guest RAM failed");
  void* p = mmap(nullptr, ram_size_, PROT_READ | PROT_WRITE, MAP_SHARED, ram_fd_, 0);
  if (p == MAP_FAILED) die("mmap of guest RAM failed");
  ram_ = static_cast<uint8_t*>(p);

  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.fd = sock_;
  if (epfd_ < 0 || epoll_ctl(epfd_, EPOLL_CTL_ADD, sock_, &ev) < 0) die("epoll failed");

  rpc(GET_FEATURES, nullptr, 0, nullptr, 0, &features_);
  if (features_ & bit(F_PROTOCOL_FEATURES)) {
    uint64_t offered = 0;
    rpc(GET_PROTOCOL_FEATURES, nullptr, 0, nullptr, 0, &offered);
    uint64_t want = offered & (bit(PF_MQ) | bit(PF_REPLY_ACK));
    rpc(SET_PROTOCOL_FEATURES, &want, sizeof want);
    protocol_ = want;  // REPLY_ACK applies from the next message on
    if (protocol_ & bit(PF_MQ)) {
      uint64_t nq = 0;
      rpc(GET_QUEUE_NUM, nullptr, 0, nullptr, 0, &nq);
      if (nq < 2) die("daemon offers fewer than 2 queues");
    }
  }
  rpc(SET_OWNER, nullptr, 0);
  uint64_t acked = features_ & (bit(F_VERSION_1) | bit(F_INDIRECT_DESC) | bit(F_EVENT_IDX) | bit(F_PROTOCOL_FEATURES));
  if (!(acked & bit(F_VERSION_1)) || !(acked & bit(F_INDIRECT_DESC))) die("daemon lacks VIRTIO_F_VERSION_1 or INDIRECT_DESC");
  rpc(SET_FEATURES, &acked, sizeof acked);
  event_idx_ = acked & bit(F_EVENT_IDX);

  MemTable t{};
  t.nregions = 1;
  t.regions[0] = {0, ram_size_, uint64_t(uintptr_t(ram_)), 0};
  rpc(SET_MEM_TABLE, &t, uint32_t(8 + sizeof(MemRegion)), &ram_fd_, 1);

  ring_init(hq_, 0);
  ring_init(rq_, 1);
  for (unsigned q = 0; q < 2 && (acked & bit(F_PROTOCOL_FEATURES)); q++) {
    VringState on{q, 1};
    rpc(SET_VRING_ENABLE, &on, sizeof on);
  }
  uint64_t dummy;
  rpc(GET_FEATURES, nullptr, 0, nullptr, 0, &dummy);  // barrier: everything above is handled

  for (unsigned i = 0; i < HIPRIO_SLOTS; i++) {
    hi_[i].gpa = alloc(HI_BUF, PAGE);
    hi_[i].buf = ram_ + hi_[i].gpa;
    hi_[i].busy = false;
  }
  for (unsigned i = 0; i < MAX_DEPTH; i++) {
    Slot& s = slots_[i];
    s.idx = i;
    uint64_t meta = alloc(META_SIZE, PAGE);
    s.table_gpa = meta + TABLE_OFF;
    s.req_gpa = meta + REQ_OFF;
    s.rep_gpa = meta + REP_OFF;
    s.data_gpa = alloc(MIB, PAGE);
    s.table = reinterpret_cast<vring_desc*>(ram_ + s.table_gpa);
    s.req = ram_ + s.req_gpa;
    s.rep = ram_ + s.rep_gpa;
    s.data = ram_ + s.data_gpa;
  }

  // FUSE_INIT, then the files the workloads use.
  Slot& s = slots_[0];
  begin(s, FUSE_INIT, 0);
  auto* in = reinterpret_cast<fuse_init_in*>(arg(s, sizeof(fuse_init_in)));
  memset(in, 0, sizeof *in);
  in->major = FUSE_KERNEL_VERSION;
  in->minor = FUSE_KERNEL_MINOR_VERSION;
  in->max_readahead = 128 * 1024;
  in->flags = INIT_FLAGS;
  expect(s, sizeof(fuse_init_out));
  roundtrip(s);
  auto* oh = reinterpret_cast<fuse_out_header*>(s.rep);
  if (oh->error) die("FUSE_INIT failed: " + std::to_string(oh->error));
  memcpy(&init_, s.rep + sizeof *oh, std::min<size_t>(sizeof init_, oh->len - sizeof *oh));

  auto lookup = [&](const char* name, uint64_t& node) {
    begin(s, FUSE_LOOKUP, FUSE_ROOT_ID);
    size_t nl = strlen(name) + 1;
    memcpy(arg(s, uint32_t(nl)), name, nl);
    expect(s, sizeof(fuse_entry_out));
    roundtrip(s);
    if (reinterpret_cast<fuse_out_header*>(s.rep)->error) die(std::string("LOOKUP ") + name + " failed");
    node = reinterpret_cast<fuse_entry_out*>(s.rep + sizeof(fuse_out_header))->nodeid;
  };
  auto open = [&](uint64_t node, uint64_t& fh) {
    begin(s, FUSE_OPEN, node);
    auto* o = reinterpret_cast<fuse_open_in*>(arg(s, sizeof(fuse_open_in)));
    o->flags = O_RDWR;
    o->open_flags = 0;
    expect(s, sizeof(fuse_open_out));
    roundtrip(s);
    if (reinterpret_cast<fuse_out_header*>(s.rep)->error) die("OPEN failed");
    fh = reinterpret_cast<fuse_open_out*>(s.rep + sizeof(fuse_out_header))->fh;
  };
  if (file) { lookup(file, file_node_); open(file_node_, file_fh_); file_name_ = file; }
  if (wfile) { lookup(wfile, wfile_node_); open(wfile_node_, wfile_fh_); }
  if (dir) lookup(dir, dir_node_);
  printf("{\"ready\":true,\"features\":%" PRIu64 ",\"protocolFeatures\":%" PRIu64 ",\"eventIdx\":%s,"
         "\"init\":{\"major\":%u,\"minor\":%u,\"flags\":%u,\"maxWrite\":%u,\"maxPages\":%u,\"readdirplus\":%s}}\n",
         features_, protocol_, event_idx_ ? "true" : "false", init_.major, init_.minor, init_.flags, init_.max_write,
         init_.max_pages, (init_.flags & FUSE_DO_READDIRPLUS) ? "true" : "false");
  fflush(stdout);
}

void Frontend::begin(Slot& s, uint32_t opcode, uint64_t nodeid) {
  auto* h = reinterpret_cast<fuse_in_header*>(s.req);
  memset(h, 0, sizeof *h);
  h->opcode = opcode;
  h->unique = s.unique = unique_++;
  h->nodeid = nodeid;
  h->pid = 1;
  s.opcode = opcode;
  s.n = 0;
  s.req_len = sizeof *h;
  s.rep_len = 0;
  s.table[s.n++] = {s.req_gpa, sizeof *h, 0, 0};
}

// Reserve len bytes of request argument, posted as its own buffer.
uint8_t* Frontend::arg(Slot& s, uint32_t len) {
  uint8_t* p = s.req + s.req_len;
  s.table[s.n++] = {s.req_gpa + s.req_len, len, 0, 0};
  s.req_len += len;
  return p;
}

// The slot's data pages, one 4 KiB buffer each, readable (WRITE data) or writable (READ data).
void Frontend::pages(Slot& s, uint32_t bytes, bool writable) {
  for (uint32_t o = 0; o < bytes; o += PAGE)
    s.table[s.n++] = {s.data_gpa + o, uint32_t(std::min<size_t>(PAGE, bytes - o)), uint16_t(writable ? VRING_DESC_F_WRITE : 0), 0};
  if (!writable) s.req_len += bytes;
}

// The device-writable fuse_out_header, and one buffer per reply argument.
void Frontend::expect(Slot& s, uint32_t arg1, uint32_t arg2) {
  s.table[s.n++] = {s.rep_gpa, sizeof(fuse_out_header), VRING_DESC_F_WRITE, 0};
  s.rep_len = sizeof(fuse_out_header);
  for (uint32_t len : {arg1, arg2}) {
    if (!len) continue;
    s.table[s.n++] = {s.rep_gpa + s.rep_len, len, VRING_DESC_F_WRITE, 0};
    s.rep_len += len;
  }
}

void Frontend::post(Slot& s) {
  reinterpret_cast<fuse_in_header*>(s.req)->len = s.req_len;
  for (unsigned i = 0; i + 1 < s.n; i++) {
    s.table[i].flags |= VRING_DESC_F_NEXT;
    s.table[i].next = uint16_t(i + 1);
  }
  reinterpret_cast<fuse_out_header*>(s.rep)->unique = 0;  // a reply must set it
  rq_.desc[s.idx] = {s.table_gpa, uint32_t(s.n * sizeof(vring_desc)), VRING_DESC_F_INDIRECT, 0};
  rq_.avail->ring[rq_.shadow % rq_.num] = uint16_t(s.idx);
  rq_.shadow++;
  rq_.inflight++;
  s.busy = true;
  s.t_post = pass_now_;
  if (phase_ == MEASURE) r_.posted++;
}

// Make the posted entries visible, and kick only when the device asked (virtio 1.2 2.7.10).
void Frontend::publish(Ring& r) {
  if (r.shadow == r.last_published) return;
  store_release(&r.avail->idx, r.shadow);
  full_fence();
  bool kick = event_idx_ ? vring_need_event(load_acquire(avail_event(r.used, r.num)), r.shadow, r.last_published)
                         : !(load_acquire(&r.used->flags) & VRING_USED_F_NO_NOTIFY);
  r.last_published = r.shadow;
  if (kick) {
    eventfd_signal(r.kick);
    if (phase_ == MEASURE) r_.kicks++;
  }
}

// Sleep until a call eventfd fires; false on the deadline. Re-arms used_event first and looks
// once more, so an entry used in between is not missed (Linux's virtqueue_enable_cb_prepare +
// virtqueue_poll do the same). The call eventfds are watched edge-triggered: every signal
// wakes epoll_wait (epoll(7)), so they are never read, and a wake-up costs one system call.
//
// On the request ring, used_event asks for a call either at the next used entry (calls=each:
// what Linux's virtio_fs does, virtqueue_enable_cb) or once 3/4 of the requests in flight are
// used (calls=batch, the default: virtqueue_enable_cb_delayed, as virtio-net uses for its TX
// ring). With calls=each a daemon that signals after every reply pays an eventfd write per
// reply and the front-end a wake-up per reply; calls=batch measures the daemon's own cost.
bool Frontend::wait(double deadline) {
  const uint16_t delay = call_each_ ? 0 : uint16_t(rq_.inflight * 3 / 4);
  store_release(used_event(rq_.avail, rq_.num), uint16_t(rq_.last_used + delay));
  store_release(used_event(hq_.avail, hq_.num), hq_.last_used);
  full_fence();
  if (load_acquire(&rq_.used->idx) != rq_.last_used || load_acquire(&hq_.used->idx) != hq_.last_used) return true;
  epoll_event ev[3];
  for (;;) {
    double left = deadline - now();
    if (left <= 0) return false;
    int n = epoll_wait(epfd_, ev, 3, int(std::min(left, 1.0) * 1000) + 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("epoll_wait failed");
    if (n == 0) continue;
    for (int i = 0; i < n; i++)
      if (ev[i].data.fd == sock_) die("the daemon closed the vhost-user connection");
    if (phase_ == MEASURE) r_.wakeups++;
    return true;
  }
}

void Frontend::error(const Slot& s, const char* fmt, ...) {
  r_.errors++;  // in any phase: a failed reply is never fine
  if (!r_.first_error.empty()) return;
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  r_.first_error = std::string(W_NAMES[int(w_)]) + " opcode " + std::to_string(s.opcode) + ": " + buf;
}

// fuse_read_in and fuse_write_in (also READDIR's) as the bench fills them.
template <class In>
void io_in(In* in, uint64_t fh, uint64_t offset, uint32_t size, uint32_t flags) {
  *in = {};
  in->fh = fh;
  in->offset = offset;
  in->size = size;
  in->flags = flags;
}

static uint32_t xorshift(uint32_t& x) {
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return x;
}

// Post the first request of the slot's next operation; false once the cell is over.
bool Frontend::start(Slot& s) {
  if (phase_ == DRAIN) return false;
  s.t_op = pass_now_;
  switch (w_) {
    case W::getattr: {
      begin(s, FUSE_GETATTR, file_node_);
      memset(arg(s, sizeof(fuse_getattr_in)), 0, sizeof(fuse_getattr_in));
      expect(s, sizeof(fuse_attr_out));
      break;
    }
    case W::lookup: {
      begin(s, FUSE_LOOKUP, FUSE_ROOT_ID);
      memcpy(arg(s, uint32_t(file_name_.size() + 1)), file_name_.c_str(), file_name_.size() + 1);
      expect(s, sizeof(fuse_entry_out));
      break;
    }
    case W::read4k: case W::read1m: case W::write4k: case W::write1m: {
      const uint32_t size = w_ == W::read4k || w_ == W::write4k ? PAGE : MIB;
      s.off = uint64_t(xorshift(s.rng) % (FILE_SIZE / size)) * size;
      if (w_ == W::read4k || w_ == W::read1m) {  // data comes back in the slot's pages
        begin(s, FUSE_READ, file_node_);
        io_in(reinterpret_cast<fuse_read_in*>(arg(s, sizeof(fuse_read_in))), file_fh_, s.off, size, O_RDWR);
        expect(s, 0);
        pages(s, size, true);
      } else {  // data goes out from the slot's pages
        begin(s, FUSE_WRITE, wfile_node_);
        io_in(reinterpret_cast<fuse_write_in*>(arg(s, sizeof(fuse_write_in))), wfile_fh_, s.off, size, O_RDWR);
        pages(s, size, false);
        expect(s, sizeof(fuse_write_out));
      }
      break;
    }
    case W::readdirplus: case W::readdir: {
      s.step = 0;
      s.entries = 0;
      s.off = 0;
      begin(s, FUSE_OPENDIR, dir_node_);
      auto* in = reinterpret_cast<fuse_open_in*>(arg(s, sizeof(fuse_open_in)));
      *in = {};
      in->flags = O_RDONLY | O_DIRECTORY;
      expect(s, sizeof(fuse_open_out));
      break;
    }
    case W::create: {
      s.step = 0;
      s.seq++;
      begin(s, FUSE_CREATE, FUSE_ROOT_ID);
      auto* in = reinterpret_cast<fuse_create_in*>(arg(s, sizeof(fuse_create_in)));
      *in = {};
      in->flags = O_RDWR | O_CREAT | O_EXCL;
      in->mode = 0100644;
      in->umask = 022;
      char name[48];
      uint32_t nl = uint32_t(create_name(s, name, sizeof name));
      memcpy(arg(s, nl), name, nl);
      expect(s, sizeof(fuse_entry_out), sizeof(fuse_open_out));
      break;
    }
  }
  post(s);
  return true;
}

void Frontend::op_done(Slot& s) {
  if (phase_ != MEASURE) return;
  r_.ops++;
  if (r_.lat_us.size() < r_.lat_us.capacity()) r_.lat_us.push_back(float((pass_now_ - s.t_op) * 1e6));
  if (max_ops_ && r_.ops >= max_ops_) end_measure();
}

// A used entry for slot s: check the reply, then post what comes next.
void Frontend::done(Slot& s, uint32_t used_len) {
  s.busy = false;
  rq_.inflight--;
  if (phase_ == MEASURE) r_.requests++;
  auto* oh = reinterpret_cast<const fuse_out_header*>(s.rep);
  const uint8_t* body = s.rep + sizeof *oh;
  bool ok = false;
  if (used_len < sizeof *oh || oh->unique != s.unique)
    error(s, "used length %u, unique %" PRIu64 " for %" PRIu64, used_len, uint64_t(oh->unique), s.unique);
  else if (oh->error != 0)
    error(s, "errno %d", -oh->error);
  else if (oh->len != used_len)
    error(s, "out_header.len %u, used length %u", oh->len, used_len);
  else
    ok = true;
  switch (w_) {
    case W::readdirplus: case W::readdir: return next_readdir(s, ok, used_len);
    case W::create: return next_create(s, ok, body);
    case W::getattr:
      if (ok && (used_len != sizeof *oh + sizeof(fuse_attr_out) || reinterpret_cast<const fuse_attr_out*>(body)->attr.ino == 0))
        error(s, "bad attr reply (%u bytes)", used_len);
      break;
    case W::lookup:
      if (ok && reinterpret_cast<const fuse_entry_out*>(body)->nodeid != file_node_) error(s, "LOOKUP gave another node id");
      if (ok && ++s.lookups >= FORGET_EVERY) {
        forget(file_node_, s.lookups);
        s.lookups = 0;
      }
      break;
    case W::read4k: case W::read1m: {
      uint32_t size = w_ == W::read4k ? PAGE : MIB;
      if (ok && used_len != sizeof *oh + size) error(s, "short read: %u bytes", used_len - uint32_t(sizeof *oh));
      // The bench's data file holds byte (offset / 1 MiB) & 0xff at every offset.
      if (ok && verify_)
        for (uint32_t o = 0; o < size; o += PAGE) {
          uint8_t want = uint8_t((s.off + o) / MIB);
          if (s.data[o] != want || s.data[o + PAGE - 1] != want) {
            error(s, "wrong data at offset %" PRIu64, s.off + o);
            break;
          }
        }
      break;
    }
    case W::write4k: case W::write1m:
      if (ok && reinterpret_cast<const fuse_write_out*>(body)->size != (w_ == W::write4k ? PAGE : MIB)) error(s, "short write");
      break;
  }
  op_done(s);
  start(s);
}

// OPENDIR, then READDIRPLUS (or READDIR) from offset 0 until an empty reply, then RELEASEDIR;
// each READDIRPLUS is one op. Every entry with a node id counts as a lookup, given back by FORGET.
void Frontend::next_readdir(Slot& s, bool ok, uint32_t used_len) {
  if (s.step == 0) {  // OPENDIR answered
    if (!ok) return void(start(s));
    s.fh = reinterpret_cast<const fuse_open_out*>(s.rep + sizeof(fuse_out_header))->fh;
    s.step = phase_ == DRAIN ? 2 : 1;
  } else if (s.step == 1) {  // READDIRPLUS answered; its entries are in the data page
    const uint32_t bytes = ok ? used_len - uint32_t(sizeof(fuse_out_header)) : 0;
    const uint8_t* p = s.data;
    const uint8_t* end = s.data + bytes;
    uint32_t n = 0;
    const bool plus = w_ == W::readdirplus;
    while (p + (plus ? FUSE_NAME_OFFSET_DIRENTPLUS : FUSE_NAME_OFFSET) <= end) {
      auto* ep = reinterpret_cast<const fuse_direntplus*>(p);
      const fuse_dirent* e = plus ? &ep->dirent : reinterpret_cast<const fuse_dirent*>(p);
      size_t rec = plus ? FUSE_DIRENTPLUS_SIZE(ep) : FUSE_DIRENT_SIZE(e);
      if (e->namelen == 0 || e->namelen > 255 || p + rec > end) {
        error(s, "bad dirent at byte %zu", size_t(p - s.data));
        ok = false;
        break;
      }
      const char* nm = e->name;
      bool dot = (e->namelen == 1 && nm[0] == '.') || (e->namelen == 2 && nm[0] == '.' && nm[1] == '.');
      if (!dot) n++;
      if (plus && ep->entry_out.nodeid) forget(ep->entry_out.nodeid, 1);
      s.off = e->off;
      p += rec;
    }
    s.entries += n;
    if (phase_ == MEASURE) r_.entries += n;
    s.t_op = s.t_post;
    op_done(s);
    if (ok && bytes == 0) {  // end of the directory
      if (expect_entries_ == 0) expect_entries_ = s.entries;
      else if (s.entries != expect_entries_) error(s, "a scan saw %u entries, an earlier one %" PRIu64, s.entries, expect_entries_);
      s.step = 2;
    } else if (!ok || phase_ == DRAIN) {
      s.step = 2;
    }
  } else {  // RELEASEDIR answered: the scan is over
    return void(start(s));
  }
  if (s.step == 1) {
    begin(s, w_ == W::readdirplus ? FUSE_READDIRPLUS : FUSE_READDIR, dir_node_);
    // One page per request, as Linux 6.1's fuse_readdir_uncached asks.
    io_in(reinterpret_cast<fuse_read_in*>(arg(s, sizeof(fuse_read_in))), s.fh, s.off, PAGE, O_RDONLY | O_DIRECTORY);
    expect(s, 0);
    pages(s, PAGE, true);
  } else {
    begin(s, FUSE_RELEASEDIR, dir_node_);
    auto* in = reinterpret_cast<fuse_release_in*>(arg(s, sizeof(fuse_release_in)));
    *in = {};
    in->fh = s.fh;
    in->flags = O_RDONLY | O_DIRECTORY;
    expect(s, 0);
  }
  post(s);
}

// CREATE, WRITE 4 KiB, RELEASE, UNLINK: one op. The node id goes back in the next FORGET batch.
void Frontend::next_create(Slot& s, bool ok, const uint8_t* body) {
  if (s.step == 0) {  // CREATE answered: write 4 KiB
    if (!ok) return void(start(s));
    s.nodeid = reinterpret_cast<const fuse_entry_out*>(body)->nodeid;
    s.fh = reinterpret_cast<const fuse_open_out*>(body + sizeof(fuse_entry_out))->fh;
    begin(s, FUSE_WRITE, s.nodeid);
    io_in(reinterpret_cast<fuse_write_in*>(arg(s, sizeof(fuse_write_in))), s.fh, 0, PAGE, O_RDWR);
    pages(s, PAGE, false);
    expect(s, sizeof(fuse_write_out));
  } else if (s.step == 1) {  // WRITE answered: release
    if (ok && reinterpret_cast<const fuse_write_out*>(body)->size != PAGE) error(s, "short write");
    begin(s, FUSE_RELEASE, s.nodeid);
    auto* in = reinterpret_cast<fuse_release_in*>(arg(s, sizeof(fuse_release_in)));
    *in = {};
    in->fh = s.fh;
    in->flags = O_RDWR;
    expect(s, 0);
  } else if (s.step == 2) {  // RELEASE answered: unlink
    begin(s, FUSE_UNLINK, FUSE_ROOT_ID);
    char name[48];
    uint32_t nl = uint32_t(create_name(s, name, sizeof name));
    memcpy(arg(s, nl), name, nl);
    expect(s, 0);
  } else {  // UNLINK answered
    forget(s.nodeid, 1);
    op_done(s);
    return void(start(s));
  }
  s.step++;
  post(s);
}

// Post pending FORGETs on the hiprio ring: FUSE_FORGET for one node, FUSE_BATCH_FORGET for more.
void Frontend::flush_forgets() {
  for (unsigned i = 0; i < HIPRIO_SLOTS && !forgets_.empty(); i++) {
    HiSlot& h = hi_[i];
    if (h.busy) continue;
    size_t n = std::min<size_t>(forgets_.size(), FORGETS_PER_BATCH);
    auto* ih = reinterpret_cast<fuse_in_header*>(h.buf);
    memset(ih, 0, sizeof *ih);
    ih->unique = unique_++;
    ih->pid = 1;
    uint32_t len = sizeof *ih;
    const fuse_forget_one* src = forgets_.data() + (forgets_.size() - n);
    if (n == 1) {
      ih->opcode = FUSE_FORGET;
      ih->nodeid = src->nodeid;
      reinterpret_cast<fuse_forget_in*>(h.buf + len)->nlookup = src->nlookup;
      len += sizeof(fuse_forget_in);
    } else {
      ih->opcode = FUSE_BATCH_FORGET;
      auto* b = reinterpret_cast<fuse_batch_forget_in*>(h.buf + len);
      b->count = uint32_t(n);
      b->dummy = 0;
      len += sizeof *b;
      memcpy(h.buf + len, src, n * sizeof *src);
      len += uint32_t(n * sizeof *src);
    }
    ih->len = len;
    forgets_.resize(forgets_.size() - n);
    // One buffer, no reply buffers: how Linux's virtio_fs sends a FORGET.
    hq_.desc[i] = {h.gpa, len, 0, 0};
    hq_.avail->ring[hq_.shadow % hq_.num] = uint16_t(i);
    hq_.shadow++;
    hq_.inflight++;
    h.busy = true;
    if (phase_ == MEASURE) r_.forgets++;
  }
}

// Take every used entry the device has published, oldest first.
template <class F>
unsigned reap(Ring& r, F&& each) {
  const uint16_t idx = load_acquire(&r.used->idx);
  unsigned n = 0;
  for (; r.last_used != idx; n++) {
    const vring_used_elem e = r.used->ring[r.last_used % r.num];
    r.last_used++;
    each(e);
  }
  return n;
}

unsigned Frontend::reap_requests() {
  return reap(rq_, [&](const vring_used_elem& e) {
    if (e.id >= MAX_DEPTH || !slots_[e.id].busy) die("used entry for a descriptor not in flight: " + std::to_string(e.id));
    done(slots_[e.id], e.len);
  });
}

unsigned Frontend::reap_hiprio() {
  return reap(hq_, [&](const vring_used_elem& e) {
    if (e.id >= HIPRIO_SLOTS || !hi_[e.id].busy) die("hiprio used entry not in flight");
    hi_[e.id].busy = false;
    hq_.inflight--;
  });
}

// One request on its own (start-up and clean-up), waiting for its reply.
uint32_t Frontend::roundtrip(Slot& s) {
  pass_now_ = now();
  post(s);
  publish(rq_);
  double deadline = now() + STALL_S;
  uint32_t len = 0;
  for (;;) {
    unsigned n = reap(rq_, [&](const vring_used_elem& e) {
      if (e.id != s.idx) die("unexpected used entry");
      len = e.len;
    });
    if (n) break;
    if (!wait(deadline)) die("no reply to opcode " + std::to_string(s.opcode) + " within 30 s");
  }
  s.busy = false;
  rq_.inflight--;
  return len;
}

void Frontend::begin_measure() {
  phase_ = MEASURE;
  if (pid_ > 0) tree_cpu(pid_, r_.d0);
  r_.fe_cpu = self_cpu();
  r_.seconds = now();
  pass_now_ = r_.seconds;
}

void Frontend::end_measure() {
  double t = now();
  r_.seconds = t - r_.seconds;
  r_.fe_cpu = self_cpu() - r_.fe_cpu;
  if (pid_ > 0) tree_cpu(pid_, r_.d1);
  phase_ = DRAIN;
}

void Frontend::run(W w, unsigned depth, const RunOpts& o) {
  const double warmup = o.warmup, duration = o.duration;
  w_ = w;
  verify_ = o.verify;
  call_each_ = o.call_each;
  max_ops_ = o.max_ops;
  r_ = Result();
  r_.lat_us.reserve(8'000'000);
  expect_entries_ = 0;
  for (unsigned i = 0; i < depth; i++) {
    slots_[i].rng = 0x9e3779b9u ^ (i * 7919u + 1);
    slots_[i].lookups = 0;
  }
  bool needs_file = w == W::getattr || w == W::lookup || w == W::read4k || w == W::read1m;
  if ((needs_file && !file_node_) || ((w == W::write4k || w == W::write1m) && !wfile_node_) || ((w == W::readdirplus || w == W::readdir) && !dir_node_)) {
    printf("{\"ok\":false,\"error\":\"%s needs a file or directory the front-end was not given\"}\n", W_NAMES[int(w)]);
    fflush(stdout);
    return;
  }

  double t0 = now();
  phase_ = WARMUP;
  if (warmup <= 0) begin_measure();
  double warm_end = t0 + warmup;
  double end = t0 + warmup + duration;
  pass_now_ = now();
  for (unsigned i = 0; i < depth; i++) start(slots_[i]);
  publish(rq_);
  double last_progress = now();
  while (rq_.inflight > 0 || hq_.inflight > 0 || !forgets_.empty()) {
    pass_now_ = now();
    if (phase_ == WARMUP && pass_now_ >= warm_end) { begin_measure(); end = pass_now_ + duration; }
    if (phase_ == MEASURE && duration > 0 && pass_now_ >= end) end_measure();
    if (phase_ == DRAIN && w_ == W::lookup)  // give back the lookups the slots still hold
      for (unsigned i = 0; i < depth; i++)
        if (slots_[i].lookups) { forget(file_node_, slots_[i].lookups); slots_[i].lookups = 0; }
    unsigned n = reap_requests() + reap_hiprio();
    flush_forgets();
    publish(rq_);
    publish(hq_);
    if (n > 0) { last_progress = pass_now_; continue; }
    if (!wait(last_progress + STALL_S)) die("no used entry for 30 s (" + std::to_string(rq_.inflight) + " requests in flight)");
  }
  if (phase_ != DRAIN) end_measure();
  print(depth);
}

void Frontend::print(unsigned depth) {
  std::vector<float>& v = r_.lat_us;
  auto pct = [&](double p) -> double {
    if (v.empty()) return 0;
    size_t k = std::min(v.size() - 1, size_t(p * double(v.size())));
    std::nth_element(v.begin(), v.begin() + long(k), v.end());
    return v[k];
  };
  double p50 = pct(0.5), p99 = pct(0.99);
  std::string err;
  for (char c : r_.first_error) err += (c == '"' || c == '\\') ? ' ' : c;
  printf("{\"ok\":true,\"workload\":\"%s\",\"depth\":%u,\"ops\":%" PRIu64 ",\"requests\":%" PRIu64 ",\"entries\":%" PRIu64
         ",\"seconds\":%.6f,\"p50us\":%.2f,\"p99us\":%.2f,\"frontendCpuS\":%.6f,\"daemonCpuNs\":%" PRIu64
         ",\"daemonCpuTicks\":%" PRIu64 ",\"daemonProcs\":%u,\"daemonThreads\":%u,\"posted\":%" PRIu64 ",\"kicks\":%" PRIu64
         ",\"wakeups\":%" PRIu64 ",\"forgets\":%" PRIu64 ",\"entriesPerScan\":%" PRIu64 ",\"errors\":%" PRIu64
         ",\"firstError\":\"%s\"}\n",
         W_NAMES[int(w_)], depth, r_.ops, r_.requests, r_.entries, r_.seconds, p50, p99, r_.fe_cpu, r_.d1.ns - r_.d0.ns,
         r_.d1.ticks - r_.d0.ticks, r_.d1.procs, r_.d1.threads, r_.posted, r_.kicks, r_.wakeups, r_.forgets, expect_entries_,
         r_.errors, err.c_str());
  fflush(stdout);
}

// Give back the open files and node ids setup() took.
void Frontend::finish() {
  Slot& s = slots_[0];
  for (auto [node, fh] : {std::pair{file_node_, file_fh_}, std::pair{wfile_node_, wfile_fh_}}) {
    if (!node) continue;
    begin(s, FUSE_RELEASE, node);
    auto* in = reinterpret_cast<fuse_release_in*>(arg(s, sizeof(fuse_release_in)));
    *in = {};
    in->fh = fh;
    in->flags = O_RDWR;
    expect(s, 0);
    roundtrip(s);
  }
  for (uint64_t node : {file_node_, wfile_node_, dir_node_})
    if (node) forget(node, 1);
  pass_now_ = now();
  flush_forgets();
  publish(hq_);
  double deadline = now() + STALL_S;
  while (hq_.inflight > 0) {
    if (reap_hiprio() == 0 && !wait(deadline)) break;
  }
}

bool parse_workload(const char* s, W& w) {
  for (int i = 0; i < NUM_W; i++)
    if (!strcmp(s, W_NAMES[i])) { w = W(i); return true; }
  return false;
}

}  // namespace

int frontend_main(const char* socket_path, int daemon_pid, const char* file, const char* wfile, const char* dir) {
  int s = -1;
  double deadline = now() + 10;
  for (;;) {  // the daemon may still be creating its socket
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (strlen(socket_path) >= sizeof sa.sun_path) die("socket path too long");
    strcpy(sa.sun_path, socket_path);
    if (connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) break;
    int e = errno;
    close(s);
    if ((e != ENOENT && e != ECONNREFUSED) || now() > deadline) die(std::string("connect ") + socket_path + ": " + strerror(e));
    usleep(20000);
  }
  static Frontend fe(s, daemon_pid);
  fe.setup(file, wfile, dir);
  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    if (!strncmp(line, "quit", 4)) break;
    char wname[32] = "";
    unsigned depth = 0;
    int used = 0;
    Frontend::RunOpts o;
    W w;
    int k = sscanf(line, "run %31s %u %lf %lf%n", wname, &depth, &o.warmup, &o.duration, &used);
    bool ok = k == 4 && parse_workload(wname, w) && depth >= 1 && depth <= MAX_DEPTH;
    // Then any of: MAX_OPS, verify, calls=each, calls=batch.
    for (char* tok = strtok(line + used, " \t\n"); ok && tok; tok = strtok(nullptr, " \t\n")) {
      if (!strcmp(tok, "verify")) o.verify = true;
      else if (!strcmp(tok, "calls=each")) o.call_each = true;
      else if (!strcmp(tok, "calls=batch")) o.call_each = false;
      else if (char* end; (o.max_ops = strtoull(tok, &end, 10), *end != 0)) ok = false;
    }
    if (!ok || (o.duration <= 0 && o.max_ops == 0)) {
      printf("{\"ok\":false,\"error\":\"usage: run WORKLOAD DEPTH(1-%u) WARMUP_S DURATION_S [MAX_OPS] [verify] [calls=each|batch]\"}\n", MAX_DEPTH);
      fflush(stdout);
      continue;
    }
    fe.run(w, depth, o);
  }
  fe.finish();
  close(s);
  return 0;
}
