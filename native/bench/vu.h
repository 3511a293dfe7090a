// Shared by both ends of vfsd-bench: the vhost-user wire format and the split-ring helpers.
//
// vhost-user: QEMU docs/interop/vhost-user.rst ("Message Specification", "Front-end message
// types", "Protocol features"). Split virtqueues: virtio 1.2, section 2.7 "Split Virtqueues"
// (written out here: the kernel's <linux/virtio_ring.h> does not compile as C++).
// FUSE wire structs: the kernel UAPI <linux/fuse.h>.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace vu {

// Split ring structures, virtio 1.2 2.7.5 (descriptor table), 2.7.6 (available ring), 2.7.8
// (used ring); little-endian, as VIRTIO_F_VERSION_1 requires and x86 is.
struct vring_desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct vring_avail { uint16_t flags, idx, ring[]; };
struct vring_used_elem { uint32_t id, len; };
struct vring_used { uint16_t flags, idx; vring_used_elem ring[]; };
constexpr uint16_t VRING_DESC_F_NEXT = 1, VRING_DESC_F_WRITE = 2, VRING_DESC_F_INDIRECT = 4;
constexpr uint16_t VRING_USED_F_NO_NOTIFY = 1, VRING_AVAIL_F_NO_INTERRUPT = 1;

// virtio 1.2 2.7.10: notify when new_idx has passed event_idx since old.
inline bool vring_need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old) {
  return uint16_t(new_idx - event_idx - 1) < uint16_t(new_idx - old);
}

// Request codes (vhost-user.rst "Front-end message types").
enum : uint32_t {
  GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, SET_MEM_TABLE = 5,
  SET_VRING_NUM = 8, SET_VRING_ADDR = 9, SET_VRING_BASE = 10, GET_VRING_BASE = 11,
  SET_VRING_KICK = 12, SET_VRING_CALL = 13, SET_VRING_ERR = 14,
  GET_PROTOCOL_FEATURES = 15, SET_PROTOCOL_FEATURES = 16, GET_QUEUE_NUM = 17,
  SET_VRING_ENABLE = 18,
};

// Header flags: version 1 in bits 0-1, bit 2 reply, bit 3 need-reply.
constexpr uint32_t VERSION = 1, FLAG_REPLY = 1u << 2, FLAG_NEED_REPLY = 1u << 3;

// Feature bits (virtio 1.2 section 6; vhost-user.rst for bit 30).
constexpr int F_INDIRECT_DESC = 28, F_EVENT_IDX = 29, F_PROTOCOL_FEATURES = 30, F_VERSION_1 = 32;
constexpr int PF_MQ = 0, PF_REPLY_ACK = 3;
constexpr uint64_t bit(int n) { return uint64_t(1) << n; }

// u64 payload of SET_VRING_KICK/CALL/ERR: ring index in bits 0-7, bit 8 = no fd.
constexpr uint64_t VRING_INDEX_MASK = 0xff, VRING_NOFD = 1u << 8;

struct Header { uint32_t request, flags, size; };
struct VringState { uint32_t index, num; };
struct VringAddr { uint32_t index, flags; uint64_t desc, used, avail, log; };
struct MemRegion { uint64_t gpa, size, uaddr, mmap_offset; };
constexpr int MAX_REGIONS = 8;
struct MemTable { uint32_t nregions, padding; MemRegion regions[MAX_REGIONS]; };

struct Msg {
  Header h{};
  uint8_t payload[sizeof(MemTable)]{};  // the largest payload either end uses
  std::vector<int> fds;
  uint64_t u64() const;
};

// Send one message with optional fds (SCM_RIGHTS). Returns 0 or -errno.
int send_msg(int sock, uint32_t request, uint32_t flags, const void* payload, uint32_t size, const int* fds = nullptr, int nfds = 0);
// Read one message (header, payload, fds). Returns 1, 0 at end of file, or -errno.
int recv_msg(int sock, Msg& m);

// Byte offsets of the three parts of a split ring laid out in one area (virtio 1.2 2.7: the
// descriptor table 16-aligned, the available ring 2-aligned, the used ring 4-aligned; we
// page-align the used ring as legacy layouts do, which costs nothing here).
struct RingLayout {
  size_t desc, avail, used, total;
  explicit RingLayout(unsigned num);
};

// The used_event / avail_event words live right after the avail / used rings (virtio 1.2 2.7.10).
inline uint16_t* used_event(vring_avail* a, unsigned num) { return reinterpret_cast<uint16_t*>(&a->ring[num]); }
inline uint16_t* avail_event(vring_used* u, unsigned num) { return reinterpret_cast<uint16_t*>(&u->ring[num]); }

inline uint16_t load_acquire(const uint16_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline void store_release(uint16_t* p, uint16_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
inline void full_fence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// Monotonic seconds.
double now();
// CPU seconds of this process.
double self_cpu();

int eventfd_signal(int fd);
void eventfd_drain(int fd);

[[noreturn]] void die(const std::string& why);

}  // namespace vu
