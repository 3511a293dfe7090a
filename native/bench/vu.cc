// vhost-user message framing over a unix socket (QEMU docs/interop/vhost-user.rst, "Message
// Specification"): a 12-byte header, then `size` bytes of payload; fds ride on the message as
// SCM_RIGHTS ancillary data (unix(7), cmsg(3)).
#include "vu.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace vu {

uint64_t Msg::u64() const {
  uint64_t v = 0;
  memcpy(&v, payload, sizeof v);
  return v;
}

int send_msg(int sock, uint32_t request, uint32_t flags, const void* payload, uint32_t size, const int* fds, int nfds) {
  Header h{request, flags, size};
  iovec iov[2] = {{&h, sizeof h}, {const_cast<void*>(payload), size}};
  msghdr mh{};
  mh.msg_iov = iov;
  mh.msg_iovlen = size ? 2 : 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * MAX_REGIONS)];
  if (nfds > 0) {
    mh.msg_control = ctl;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do n = sendmsg(sock, &mh, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  return size_t(n) == sizeof h + size ? 0 : -EIO;
}

static int read_full(int sock, void* buf, size_t len) {
  auto* p = static_cast<uint8_t*>(buf);
  while (len > 0) {
    ssize_t n = read(sock, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) return -EPIPE;
    p += n;
    len -= size_t(n);
  }
  return 0;
}

int recv_msg(int sock, Msg& m) {
  m.fds.clear();
  iovec iov{&m.h, sizeof m.h};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * MAX_REGIONS)];
  mh.msg_control = ctl;
  mh.msg_controllen = sizeof ctl;
  ssize_t n;
  do n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  if (n == 0) return 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      m.fds.push_back(fd);
    }
  }
  // A stream socket may split the header (never seen, but cheap to allow).
  if (size_t(n) < sizeof m.h) {
    int rc = read_full(sock, reinterpret_cast<uint8_t*>(&m.h) + n, sizeof m.h - size_t(n));
    if (rc < 0) return rc;
  }
  if (m.h.size > sizeof m.payload) return -EMSGSIZE;
  int rc = read_full(sock, m.payload, m.h.size);
  return rc < 0 ? rc : 1;
}

RingLayout::RingLayout(unsigned num) {
  desc = 0;
  avail = sizeof(vring_desc) * num;
  size_t avail_end = avail + 6 + 2 * num;  // flags, idx, ring[num], used_event
  used = (avail_end + 4095) & ~size_t(4095);
  total = used + 6 + sizeof(vring_used_elem) * num;  // flags, idx, ring[num], avail_event
}

double now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

double self_cpu() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

int eventfd_signal(int fd) {
  uint64_t one = 1;
  return write(fd, &one, sizeof one) == sizeof one ? 0 : -errno;
}

void eventfd_drain(int fd) {
  uint64_t v;
  (void)!read(fd, &v, sizeof v);
}

void die(const std::string& why) {
  fprintf(stderr, "vfsd-bench: %s\n", why.c_str());
  exit(1);
}

}  // namespace vu
