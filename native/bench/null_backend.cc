// vfsd-bench null: a vhost-user-fs back-end that answers every FUSE request with a canned reply,
// as fast as one thread can, so that the front-end's own ceiling can be measured (a daemon can
// never look faster than the front-end driving it).
//
// It speaks just enough vhost-user (QEMU docs/interop/vhost-user.rst) for the front-end in this
// program and for QEMU's start sequence: features, protocol features MQ + REPLY_ACK, the memory
// table, and split rings with indirect descriptors and EVENT_IDX (virtio 1.2 section 2.7).
// Replies: INIT, GETATTR, LOOKUP, OPEN/OPENDIR, CREATE, WRITE, READDIR and READDIRPLUS get
// well-formed bodies (a directory of --dir-entries names); READ claims the requested size without
// writing the data (no copy: the point is the front-end's cost); FORGETs are returned unanswered;
// everything else gets an empty success.
#include "vu.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace {

using namespace vu;

constexpr unsigned NUM_QUEUES = 2;  // hiprio + one request queue, as QEMU's default
constexpr uint64_t OFFERED = bit(F_VERSION_1) | bit(F_INDIRECT_DESC) | bit(F_EVENT_IDX) | bit(F_PROTOCOL_FEATURES);
constexpr uint64_t OFFERED_PROTOCOL = bit(PF_MQ) | bit(PF_REPLY_ACK);
constexpr unsigned MAX_SEGS = 1024;  // QEMU's VIRTQUEUE_MAX_SIZE bounds a chain

struct Region { uint64_t gpa, size, uaddr; uint8_t* host; size_t maplen; };

struct Queue {
  unsigned num = 0;
  vring_desc* desc = nullptr;
  vring_avail* avail = nullptr;
  vring_used* used = nullptr;
  uint16_t last_avail = 0, used_idx = 0;
  int kick = -1, call = -1;
  bool enabled = false;
};

struct Seg { uint8_t* p; uint32_t len; };

class NullBackend {
 public:
  NullBackend(int sock, unsigned dir_entries) : sock_(sock), dir_entries_(dir_entries) {}
  int run();

 private:
  int sock_;
  unsigned dir_entries_;
  uint64_t features_ = 0, protocol_ = 0;
  std::vector<Region> regions_;
  Queue q_[NUM_QUEUES];
  uint64_t next_nodeid_ = 100;
  Seg out_[MAX_SEGS], in_[MAX_SEGS];
  unsigned nout_ = 0, nin_ = 0;
  uint8_t req_[512];        // in_header + arguments, gathered
  uint8_t rep_[64 * 1024];  // reply, scattered into the device-writable buffers

  bool ready(const Queue& q) const {
    return q.desc && q.kick >= 0 && (q.enabled || !(features_ & bit(F_PROTOCOL_FEATURES)));
  }
  uint8_t* from_gpa(uint64_t a, uint64_t len) const;
  uint8_t* from_uaddr(uint64_t a, uint64_t len) const;
  bool control(Msg& m);
  void serve(Queue& q);
  bool walk(Queue& q, uint16_t head);
  uint32_t answer();
  uint32_t readdir(const fuse_read_in& in, uint8_t* out, bool plus);
  void reply_u64(uint32_t request, uint64_t v) { send_msg(sock_, request, VERSION | FLAG_REPLY, &v, sizeof v); }
};

uint8_t* NullBackend::from_gpa(uint64_t a, uint64_t len) const {
  for (const Region& r : regions_)
    if (a >= r.gpa && a - r.gpa <= r.size && len <= r.size - (a - r.gpa)) return r.host + (a - r.gpa);
  return nullptr;
}

uint8_t* NullBackend::from_uaddr(uint64_t a, uint64_t len) const {
  for (const Region& r : regions_)
    if (a >= r.uaddr && a - r.uaddr <= r.size && len <= r.size - (a - r.uaddr)) return r.host + (a - r.uaddr);
  return nullptr;
}

// One front-end message. Returns false when the connection must end.
bool NullBackend::control(Msg& m) {
  const uint32_t idx = *reinterpret_cast<uint32_t*>(m.payload) & VRING_INDEX_MASK;
  bool replied = false;
  auto take_fd = [&]() { return m.fds.empty() ? -1 : m.fds[0]; };
  switch (m.h.request) {
    case GET_FEATURES: reply_u64(m.h.request, OFFERED); replied = true; break;
    case SET_FEATURES: features_ = m.u64(); break;
    case GET_PROTOCOL_FEATURES: reply_u64(m.h.request, OFFERED_PROTOCOL); replied = true; break;
    case SET_PROTOCOL_FEATURES: protocol_ = m.u64(); break;
    case GET_QUEUE_NUM: reply_u64(m.h.request, NUM_QUEUES); replied = true; break;
    case SET_OWNER: break;
    case SET_MEM_TABLE: {
      for (Region& r : regions_) munmap(r.host, r.maplen);
      regions_.clear();
      MemTable t;
      memcpy(&t, m.payload, sizeof t);
      if (t.nregions > MAX_REGIONS || t.nregions != m.fds.size()) die("SET_MEM_TABLE: region and fd counts differ");
      for (uint32_t i = 0; i < t.nregions; i++) {
        const MemRegion& mr = t.regions[i];
        size_t len = mr.size + mr.mmap_offset;
        void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, m.fds[i], 0);
        if (p == MAP_FAILED) die("SET_MEM_TABLE: mmap failed");
        close(m.fds[i]);
        regions_.push_back({mr.gpa, mr.size, mr.uaddr, static_cast<uint8_t*>(p) + mr.mmap_offset, len});
      }
      m.fds.clear();
      break;
    }
    case SET_VRING_NUM:
      if (idx < NUM_QUEUES) q_[idx].num = reinterpret_cast<VringState*>(m.payload)->num;
      break;
    case SET_VRING_BASE:
      if (idx < NUM_QUEUES) q_[idx].last_avail = q_[idx].used_idx = uint16_t(reinterpret_cast<VringState*>(m.payload)->num);
      break;
    case SET_VRING_ADDR: {
      VringAddr a;
      memcpy(&a, m.payload, sizeof a);
      if (idx >= NUM_QUEUES) break;
      Queue& q = q_[idx];
      RingLayout l(q.num);
      q.desc = reinterpret_cast<vring_desc*>(from_uaddr(a.desc, l.avail));
      q.avail = reinterpret_cast<vring_avail*>(from_uaddr(a.avail, 6 + 2 * q.num));
      q.used = reinterpret_cast<vring_used*>(from_uaddr(a.used, 6 + sizeof(vring_used_elem) * q.num));
      if (!q.desc || !q.avail || !q.used) die("SET_VRING_ADDR: ring outside the memory table");
      break;
    }
    case GET_VRING_BASE: {  // stop the ring and hand back where it stood
      if (idx < NUM_QUEUES) {
        Queue& q = q_[idx];
        if (q.kick >= 0) close(q.kick);
        q.kick = -1;
        q.desc = nullptr;
        VringState st{idx, q.last_avail};
        send_msg(sock_, m.h.request, VERSION | FLAG_REPLY, &st, sizeof st);
        replied = true;
      }
      break;
    }
    case SET_VRING_KICK: case SET_VRING_CALL: case SET_VRING_ERR: {
      int fd = (m.u64() & VRING_NOFD) ? -1 : take_fd();
      if (fd >= 0) m.fds.erase(m.fds.begin());
      if (idx >= NUM_QUEUES || m.h.request == SET_VRING_ERR) { if (fd >= 0) close(fd); break; }
      int& slot = m.h.request == SET_VRING_KICK ? q_[idx].kick : q_[idx].call;
      if (slot >= 0) close(slot);
      slot = fd;
      if (fd >= 0 && m.h.request == SET_VRING_KICK) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
      break;
    }
    case SET_VRING_ENABLE:
      if (idx < NUM_QUEUES) {
        q_[idx].enabled = reinterpret_cast<VringState*>(m.payload)->num != 0;
        if (ready(q_[idx])) serve(q_[idx]);  // a kick may have come before the enable
      }
      break;
    default: break;  // accepted and ignored
  }
  for (int fd : m.fds) close(fd);
  if ((m.h.flags & FLAG_NEED_REPLY) && !replied && (protocol_ & bit(PF_REPLY_ACK))) reply_u64(m.h.request, 0);
  return true;
}

// Collect the chain at head into out_/in_ (following one indirect table, as Linux posts them).
bool NullBackend::walk(Queue& q, uint16_t head) {
  nout_ = nin_ = 0;
  const vring_desc* t = q.desc;
  unsigned max = q.num, i = head;
  if (i >= max) return false;
  if (t[i].flags & VRING_DESC_F_INDIRECT) {
    if (t[i].len % sizeof(vring_desc)) return false;
    max = t[i].len / sizeof(vring_desc);
    t = reinterpret_cast<const vring_desc*>(from_gpa(t[i].addr, t[i].len));
    if (!t || max == 0) return false;
    i = 0;
  }
  for (unsigned n = 0;; n++) {
    if (n >= max || i >= max || nout_ >= MAX_SEGS || nin_ >= MAX_SEGS) return false;
    const vring_desc& d = t[i];
    uint8_t* p = from_gpa(d.addr, d.len);
    if (!p) return false;
    if (d.flags & VRING_DESC_F_WRITE) in_[nin_++] = {p, d.len};
    else if (nin_ == 0) out_[nout_++] = {p, d.len};
    else return false;  // readable after writable
    if (!(d.flags & VRING_DESC_F_NEXT)) return true;
    i = d.next;
  }
}

static void fill_attr(fuse_attr& a, uint64_t ino, uint32_t mode, uint64_t size) {
  memset(&a, 0, sizeof a);
  a.ino = ino;
  a.size = size;
  a.blocks = (size + 511) / 512;
  a.mode = mode;
  a.nlink = 1;
  a.blksize = 4096;
}

uint32_t NullBackend::readdir(const fuse_read_in& in, uint8_t* out, bool plus) {
  uint32_t used = 0;
  for (uint64_t i = in.offset; i < dir_entries_; i++) {
    char name[32];
    int nl = snprintf(name, sizeof name, "f%06llu", static_cast<unsigned long long>(i));
    size_t head = plus ? offsetof(fuse_direntplus, dirent) : 0;
    size_t reclen = FUSE_DIRENT_ALIGN(head + FUSE_NAME_OFFSET + size_t(nl));
    if (used + reclen > in.size || sizeof(fuse_out_header) + used + reclen > sizeof rep_) break;
    memset(out + used, 0, reclen);
    if (plus) {
      auto* e = reinterpret_cast<fuse_direntplus*>(out + used);
      e->entry_out.nodeid = 1000 + i;
      fill_attr(e->entry_out.attr, 1000 + i, S_IFREG | 0644, 0);
    }
    auto* d = reinterpret_cast<fuse_dirent*>(out + used + head);
    d->ino = 1000 + i;
    d->off = i + 1;
    d->namelen = uint32_t(nl);
    d->type = DT_REG;
    memcpy(d->name, name, size_t(nl));
    used += uint32_t(reclen);
  }
  return used;
}

// Compose the reply to the request gathered in req_ into rep_; returns its length (0: no reply).
uint32_t NullBackend::answer() {
  auto* ih = reinterpret_cast<fuse_in_header*>(req_);
  const uint8_t* arg = req_ + sizeof *ih;
  auto* oh = reinterpret_cast<fuse_out_header*>(rep_);
  uint8_t* body = rep_ + sizeof *oh;
  uint32_t len = 0;
  int32_t error = 0;
  switch (ih->opcode) {
    case FUSE_FORGET: case FUSE_BATCH_FORGET: return 0;
    case FUSE_INIT: {
      auto* in = reinterpret_cast<const fuse_init_in*>(arg);
      auto* o = reinterpret_cast<fuse_init_out*>(body);
      memset(o, 0, sizeof *o);
      o->major = FUSE_KERNEL_VERSION;
      o->minor = FUSE_KERNEL_MINOR_VERSION;
      o->max_readahead = in->max_readahead;
      o->flags = in->flags & (FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_DO_READDIRPLUS | FUSE_MAX_PAGES | FUSE_INIT_EXT);
      o->max_write = 1 << 20;
      o->max_pages = 256;
      o->time_gran = 1;
      len = sizeof *o;
      break;
    }
    case FUSE_GETATTR: {
      auto* o = reinterpret_cast<fuse_attr_out*>(body);
      memset(o, 0, sizeof *o);
      fill_attr(o->attr, ih->nodeid, S_IFREG | 0644, 64 << 20);
      len = sizeof *o;
      break;
    }
    case FUSE_LOOKUP: case FUSE_CREATE: {
      auto* o = reinterpret_cast<fuse_entry_out*>(body);
      memset(o, 0, sizeof *o);
      o->nodeid = ih->opcode == FUSE_LOOKUP ? 2 : next_nodeid_++;
      fill_attr(o->attr, o->nodeid, S_IFREG | 0644, 64 << 20);
      len = sizeof *o;
      if (ih->opcode == FUSE_CREATE) {
        auto* op = reinterpret_cast<fuse_open_out*>(body + len);
        memset(op, 0, sizeof *op);
        op->fh = 1;
        len += sizeof *op;
      }
      break;
    }
    case FUSE_OPEN: case FUSE_OPENDIR: {
      auto* o = reinterpret_cast<fuse_open_out*>(body);
      memset(o, 0, sizeof *o);
      o->fh = 1;
      len = sizeof *o;
      break;
    }
    case FUSE_READ: {
      // The size is claimed, the data not written: only the header goes into guest memory.
      auto* in = reinterpret_cast<const fuse_read_in*>(arg);
      oh->len = uint32_t(sizeof *oh) + in->size;
      oh->error = 0;
      oh->unique = ih->unique;
      return sizeof *oh;
    }
    case FUSE_READDIRPLUS: case FUSE_READDIR:
      len = readdir(*reinterpret_cast<const fuse_read_in*>(arg), body, ih->opcode == FUSE_READDIRPLUS);
      break;
    case FUSE_WRITE: {
      auto* o = reinterpret_cast<fuse_write_out*>(body);
      o->size = reinterpret_cast<const fuse_write_in*>(arg)->size;
      o->padding = 0;
      len = sizeof *o;
      break;
    }
    case FUSE_RELEASE: case FUSE_RELEASEDIR: case FUSE_UNLINK: case FUSE_FLUSH: case FUSE_FSYNC:
      break;
    default: error = -ENOSYS; break;
  }
  oh->len = uint32_t(sizeof *oh) + len;
  oh->error = error;
  oh->unique = ih->unique;
  return oh->len;
}

void NullBackend::serve(Queue& q) {
  const bool event_idx = features_ & bit(F_EVENT_IDX);
  for (;;) {
    uint16_t avail = load_acquire(&q.avail->idx);
    if (avail == q.last_avail) {
      if (!event_idx) return;
      // Ask for a kick on the next entry, then look again: one may have come in between.
      store_release(avail_event(q.used, q.num), q.last_avail);
      full_fence();
      if (load_acquire(&q.avail->idx) == q.last_avail) return;
      continue;
    }
    const uint16_t old_used = q.used_idx;
    while (q.last_avail != avail) {
      uint16_t head = q.avail->ring[q.last_avail % q.num];
      q.last_avail++;
      uint32_t used_len = 0;
      if (walk(q, head) && nout_ > 0) {
        // Gather the header and arguments (a READ/WRITE's pages are not needed).
        size_t got = 0;
        for (unsigned i = 0; i < nout_ && got < sizeof req_; i++) {
          size_t k = std::min<size_t>(out_[i].len, sizeof req_ - got);
          memcpy(req_ + got, out_[i].p, k);
          got += k;
        }
        if (got >= sizeof(fuse_in_header)) {
          uint32_t len = answer();
          if (len > 0) {
            uint32_t want = reinterpret_cast<fuse_out_header*>(rep_)->len;
            size_t put = 0;
            for (unsigned i = 0; i < nin_ && put < len; i++) {
              size_t k = std::min<size_t>(in_[i].len, len - put);
              memcpy(in_[i].p, rep_ + put, k);
              put += k;
            }
            used_len = want;
          }
        }
      }
      vring_used_elem& e = q.used->ring[q.used_idx % q.num];
      e.id = head;
      e.len = used_len;
      q.used_idx++;
    }
    store_release(&q.used->idx, q.used_idx);
    full_fence();
    bool notify = event_idx ? vring_need_event(*used_event(q.avail, q.num), q.used_idx, old_used)
                            : !(q.avail->flags & VRING_AVAIL_F_NO_INTERRUPT);
    if (notify && q.call >= 0) eventfd_signal(q.call);
  }
}

int NullBackend::run() {
  Msg m;
  for (;;) {
    pollfd p[1 + NUM_QUEUES];
    int qi[1 + NUM_QUEUES];
    int n = 0;
    p[n++] = {sock_, POLLIN, 0};
    for (unsigned i = 0; i < NUM_QUEUES; i++)
      if (ready(q_[i])) { qi[n] = int(i); p[n++] = {q_[i].kick, POLLIN, 0}; }
    if (poll(p, nfds_t(n), -1) < 0) {
      if (errno == EINTR) continue;
      die("poll failed");
    }
    for (int i = 1; i < n; i++) {
      if (!(p[i].revents & POLLIN)) continue;
      eventfd_drain(p[i].fd);
      serve(q_[qi[i]]);
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      int rc = recv_msg(sock_, m);
      if (rc <= 0) return 0;  // the front-end went away: done, like the real daemons
      if (!control(m)) return 1;
    }
  }
}

}  // namespace

// Listen on socket_path, serve one connection, exit when it closes.
int null_backend_main(const char* socket_path, unsigned dir_entries) {
  int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (strlen(socket_path) >= sizeof sa.sun_path) die("socket path too long");
  strcpy(sa.sun_path, socket_path);
  unlink(socket_path);
  if (bind(ls, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0 || listen(ls, 1) < 0) die(std::string("bind/listen ") + socket_path + ": " + strerror(errno));
  fprintf(stderr, "null back-end: waiting on %s\n", socket_path);
  int s = accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
  if (s < 0) die("accept failed");
  close(ls);
  unlink(socket_path);
  NullBackend be(s, dir_entries);
  return be.run();
}
