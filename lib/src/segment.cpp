#include "shmsched/segment.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdio>

#include <atomic>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <cstring>
#include <thread>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/detail/fault.hpp"
#include "shmsched/detail/name_table.hpp"

namespace bip = boost::interprocess;

namespace shmsched {

// ---------------------------------------------------------------------------------
// Core

void detail::Core::bind(std::byte* b, const Layout& l) noexcept {
  base = b;
  layout = l;
  layout.ring_capacity = l.effective_ring_capacity();  // a handle shows the resolved value
  map = SegmentMap::compute(l);
  header = reinterpret_cast<SegmentHeader*>(b + map.header);
  ctrl = reinterpret_cast<TaskCtrl*>(b + map.task_ctrl);
  bodies = b + map.task_body;
  stride = map.body_stride;
  types = reinterpret_cast<TypeEntry*>(b + map.types);
  queues = reinterpret_cast<QueueEntry*>(b + map.queues);
  ring_hdrs = reinterpret_cast<RingHeader*>(b + map.ring_hdrs);
  ring_slots = reinterpret_cast<AtomicU64*>(b + map.rings);
  participants = reinterpret_cast<ParticipantEntry*>(b + map.participants);
  semaphores = reinterpret_cast<SemaphoreEntry*>(b + map.semaphores);
  park_hdrs = reinterpret_cast<RingHeader*>(b + map.park_hdrs);
  park_slots = reinterpret_cast<AtomicU64*>(b + map.park_rings);
  delayed_bits = reinterpret_cast<AtomicU64*>(b + map.delayed_bits);
  sleepers = reinterpret_cast<SleepMasks*>(b + map.sleepers);
  counters = reinterpret_cast<LevelCounters*>(b + map.counters);
  groups = reinterpret_cast<GroupEntry*>(b + map.groups);
  group_notes = reinterpret_cast<GroupNote*>(b + map.group_notes);
  schedules = reinterpret_cast<ScheduleEntry*>(b + map.schedules);
  group_counters = reinterpret_cast<GroupCounters*>(b + map.group_counters);
  waiting_bits = reinterpret_cast<AtomicU64*>(b + map.waiting_bits);
  capacity = l.task_capacity;
  ring_capacity = l.effective_ring_capacity();
  levels = l.levels;
  index_bits = 0;
  while ((1u << index_bits) < capacity) ++index_bits;
}

// ---------------------------------------------------------------------------------
// Names

Result<void> validate_short_name(std::string_view name, std::size_t max, std::string_view what) {
  if (name.empty() || name.size() > max)
    return Result<void>(Errc::invalid_name, std::string(what) + " name must be 1.." + std::to_string(max) +
                                                " bytes, got " + std::to_string(name.size()));
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || c == '.' || c == ':';
    if (!ok)
      return Result<void>(Errc::invalid_name,
                          std::string(what) + " name '" + std::string(name) + "' may hold only [A-Za-z0-9_.:-]");
  }
  return {};
}

Result<void> Segment::validate_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength)
    return Result<void>(Errc::invalid_name, "segment name must be 1.." + std::to_string(kMaxNameLength) + " bytes");
  if (name.front() == '.')
    return Result<void>(Errc::invalid_name, "segment name '" + std::string(name) + "' must not start with '.'");
  for (char c : name) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    if (!ok)
      return Result<void>(Errc::invalid_name,
                          "segment name '" + std::string(name) + "' may hold only [A-Za-z0-9_.-] (no '/')");
  }
  if (name.find("..") != std::string_view::npos)
    return Result<void>(Errc::invalid_name, "segment name '" + std::string(name) + "' must not contain '..'");
  return {};
}

std::string Segment::object_name(std::string_view name) {
  return "shmsched." + std::string(name);
}

// ---------------------------------------------------------------------------------
// Header checks (shared by open() and check_image(); they trust nothing)

namespace {

Result<Layout> layout_from_header(const detail::SegmentHeader& h, std::uint64_t object_size) {
  if (h.magic != detail::kMagic) return Result<Layout>(Errc::foreign_segment, "bad magic number");
  if (h.abi_version != detail::kAbiVersion)
    return Result<Layout>(Errc::version_mismatch, "segment has ABI version " + std::to_string(h.abi_version) +
                                                      ", this library speaks " + std::to_string(detail::kAbiVersion));
  Layout l;
  l.levels = h.layout.levels;
  l.task_capacity = h.layout.task_capacity;
  l.payload_bytes = h.layout.payload_bytes;
  l.ring_capacity = h.layout.ring_capacity;
  l.max_queues = h.layout.max_queues;
  l.max_participants = h.layout.max_participants;
  l.max_semaphores = h.layout.max_semaphores;
  l.max_groups = h.layout.max_groups;
  if (auto v = l.validate(); !v) return Result<Layout>(Errc::corrupt, "header layout: " + v.error().detail());
  if (h.layout_hash != l.hash()) return Result<Layout>(Errc::corrupt, "layout hash does not match the layout fields");
  const auto map = detail::SegmentMap::compute(l);
  if (h.total_size != map.total || h.header_size != sizeof(detail::SegmentHeader))
    return Result<Layout>(Errc::corrupt, "header sizes do not match the layout");
  if (object_size < map.total)
    return Result<Layout>(Errc::truncated, "object holds " + std::to_string(object_size) + " bytes, layout needs " +
                                               std::to_string(map.total));
  return l;
}

void init_header(detail::Core& core, std::string_view name) {
  auto* h = core.header;
  const auto self = ProcessIdentity::self();
  // Creator identity first and the magic last: an opener that sees the magic also sees
  // who to blame if the segment never becomes ready (the opener re-reads until ready
  // anyway).
  h->creator_pid = self.pid;
  h->creator_start_time = self.start_time;
  SHMSCHED_FAULT_POINT(segment_init_after_create);
  const Layout& l = core.layout;
  h->abi_version = detail::kAbiVersion;
  h->layout = detail::LayoutPod{l.levels,     l.task_capacity,    l.payload_bytes,  l.effective_ring_capacity(),
                                l.max_queues, l.max_participants, l.max_semaphores, l.max_groups};
  h->layout_hash = l.hash();
  h->total_size = core.map.total;
  h->header_size = sizeof(detail::SegmentHeader);
  h->created_unix_ns = unix_ns();
  std::memset(h->name, 0, sizeof h->name);
  std::memcpy(h->name, name.data(), std::min(name.size(), sizeof h->name - 1));
  // release: the identity and layout fields above are written before the magic, for an
  // opener that finds the magic but not yet the ready state (it reads the header with
  // pread, in address order, and waits for ready -- (H1) -- before it trusts anything).
  std::atomic_ref<std::uint64_t>(h->magic).store(detail::kMagic, std::memory_order_release);
  // Every other region is valid when zero: EMPTY(0) ring slots, free records, free
  // queue/participant/type/semaphore entries. The pages stay untouched until used.
  SHMSCHED_FAULT_POINT(segment_init_before_ready);
}

}  // namespace

Result<Layout> Segment::check_image(const void* data, std::size_t size) noexcept {
  if (data == nullptr || size < sizeof(detail::SegmentHeader)) {
    if (data != nullptr && size >= 8) {
      std::uint64_t magic;
      std::memcpy(&magic, data, 8);
      if (magic == detail::kMagic) return Result<Layout>(Errc::truncated, "smaller than a segment header");
    }
    return Result<Layout>(Errc::foreign_segment, "smaller than a segment header");
  }
  detail::SegmentHeader h;
  std::memcpy(static_cast<void*>(&h), data, sizeof h);
  if (h.magic != detail::kMagic) return Result<Layout>(Errc::foreign_segment, "bad magic number");
  std::uint32_t state;
  std::memcpy(&state, static_cast<const std::byte*>(data) + offsetof(detail::SegmentHeader, init_state), 4);
  if (state != static_cast<std::uint32_t>(detail::InitState::ready))
    return Result<Layout>(Errc::creator_died,
                          "segment was never marked ready (its creator died or is still initialising)");
  try {
    return layout_from_header(h, size);
  } catch (...) {
    return Result<Layout>(Errc::system_error, "out of memory");
  }
}

// ---------------------------------------------------------------------------------
// Segment

struct Segment::Impl {
  std::string name;
  bool priv = false;
  bool read_only = false;
  bip::mapped_region region;
  void* anon = nullptr;
  std::size_t size = 0;
  detail::Core core;

  ~Impl() {
    if (anon != nullptr) ::munmap(anon, size);
  }
};

Segment::Segment(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Segment::Segment(Segment&&) noexcept = default;
Segment& Segment::operator=(Segment&&) noexcept = default;
Segment::~Segment() = default;

const Layout& Segment::layout() const noexcept {
  return impl_->core.layout;
}
const std::string& Segment::name() const noexcept {
  return impl_->name;
}
bool Segment::is_private() const noexcept {
  return impl_->priv;
}
bool Segment::is_read_only() const noexcept {
  return impl_->read_only;
}
std::size_t Segment::size_bytes() const noexcept {
  return impl_->size;
}
detail::Core& Segment::core() noexcept {
  return impl_->core;
}
const detail::Core& Segment::core() const noexcept {
  return impl_->core;
}
ProcessIdentity Segment::creator() const noexcept {
  return ProcessIdentity{impl_->core.header->creator_pid, impl_->core.header->creator_start_time};
}

namespace {
Error from_interprocess(const bip::interprocess_exception& e, const std::string& name) {
  // Boost's error codes are many; three of them mean something to a caller.
  const bip::error_code_t code = e.get_error_code();
  if (code == bip::already_exists_error) return Error(Errc::exists, "'" + name + "'");
  if (code == bip::not_found_error) return Error(Errc::not_found, "'" + name + "'");
  if (code == bip::security_error) return Error(Errc::permission_denied, "segment '" + name + "': " + e.what());
  return Error(Errc::system_error, "segment '" + name + "': " + e.what());
}

// "levels 8 (asked 4), task_capacity ..." for every field in which two layouts differ.
std::string layout_differences(const Layout& have, const Layout& asked) {
  std::string out;
  auto field = [&](const char* name, std::uint32_t a, std::uint32_t b) {
    if (a == b) return;
    if (!out.empty()) out += ", ";
    out += std::string(name) + " " + std::to_string(a) + " (asked " + std::to_string(b) + ")";
  };
  field("levels", have.levels, asked.levels);
  field("task_capacity", have.task_capacity, asked.task_capacity);
  field("payload_bytes", have.payload_bytes, asked.payload_bytes);
  field("ring_capacity", have.effective_ring_capacity(), asked.effective_ring_capacity());
  field("max_queues", have.max_queues, asked.max_queues);
  field("max_participants", have.max_participants, asked.max_participants);
  field("max_semaphores", have.max_semaphores, asked.max_semaphores);
  field("max_groups", have.max_groups, asked.max_groups);
  return out.empty() ? "fields equal, hash differs" : out;
}

// What a file at a segment's path is, when it is not a shared-memory object.
std::string file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

// posix_fallocate's failure on the segment's object, said in the operator's terms.
Error no_space_error(int rc, std::uint64_t need) {
  if (rc != ENOSPC)
    return Error(Errc::system_error, std::string("reserving the segment's pages: ") + std::strerror(rc));
  struct statvfs fs {};
  std::string free_part;
  if (::statvfs("/dev/shm", &fs) == 0)
    free_part = ", free " + std::to_string(std::uint64_t{fs.f_bavail} * fs.f_frsize) + " bytes";
  return Error(Errc::no_space,
               "not enough space in /dev/shm (need " + std::to_string(need) + " bytes" + free_part +
                   "): free some, enlarge /dev/shm (mount -o remount,size=...), or choose a smaller layout");
}

Result<void> create_queues(Segment& s, const CreateOptions& options) {
  for (const auto& q : options.queues) {
    auto r = s.create_queue(q);
    if (!r) return Result<void>(r.error());
  }
  return {};
}
}  // namespace

Result<Segment> Segment::create(std::string_view name, const Layout& layout, const CreateOptions& options) {
  if (auto v = validate_name(name); !v) return v.error();
  if (auto v = layout.validate(); !v) return v.error();
  if ((options.mode & ~0777u) != 0) return Error(Errc::invalid_argument, "mode must be within 0777");
  const std::string oname = object_name(name);
  const auto map = detail::SegmentMap::compute(layout);
  auto impl = std::make_unique<Impl>();
  impl->name = std::string(name);
  try {
    bip::permissions perm(static_cast<int>(options.mode));  // within 0777: checked above
    bip::shared_memory_object shm(bip::create_only, oname.c_str(), bip::read_write, perm);
    const int fd = shm.get_mapping_handle().handle;
    // umask may have narrowed the mode; set exactly what was asked.
    ::fchmod(fd, options.mode);
    // Every page is reserved now (tmpfs allocates them and sets the size, or fails and
    // keeps none), so a created segment can never SIGBUS a process that touches it
    // when /dev/shm runs out of space. ftruncate alone would leave the pages to be
    // allocated on first touch.
    if (const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(map.total)); rc != 0) {
      bip::shared_memory_object::remove(oname.c_str());
      return no_space_error(rc, map.total);
    }
    impl->region = bip::mapped_region(shm, bip::read_write);
  } catch (const bip::interprocess_exception& e) {
    return from_interprocess(e, impl->name);
  }
  impl->size = map.total;
  impl->core.bind(static_cast<std::byte*>(impl->region.get_address()), layout);
  init_header(impl->core, name);
  Segment seg(std::move(impl));
  if (auto q = create_queues(seg, options); !q) {
    // The segment is ours and nobody may use it before ready: take it away again.
    bip::shared_memory_object::remove(oname.c_str());
    return q.error();
  }
  // (H1) release: everything written above is visible to an opener that acquires
  // `ready`; pairs with (H2) in open().
  detail::core_of(seg).header->init_state.store(static_cast<std::uint32_t>(detail::InitState::ready),
                                                std::memory_order_release);
  return seg;
}

Result<Segment> Segment::create_private(const Layout& layout, const CreateOptions& options) {
  if (auto v = layout.validate(); !v) return v.error();
  const auto map = detail::SegmentMap::compute(layout);
  void* p = ::mmap(nullptr, map.total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return Error(Errc::system_error, std::string("mmap: ") + std::strerror(errno));
  auto impl = std::make_unique<Impl>();
  impl->name = "(private)";
  impl->priv = true;
  impl->anon = p;
  impl->size = map.total;
  impl->core.bind(static_cast<std::byte*>(p), layout);
  init_header(impl->core, "(private)");
  Segment seg(std::move(impl));
  if (auto q = create_queues(seg, options); !q) return q.error();
  detail::core_of(seg).header->init_state.store(static_cast<std::uint32_t>(detail::InitState::ready),
                                                std::memory_order_release);
  return seg;
}

namespace {

// What one look at an opened object found: a ready segment's layout, or that its
// creator is still at work (`why`, said if the wait times out).
struct Probe {
  bool waiting = false;
  std::string why;
  Layout layout;
};

// The look at a header read whole (`size` bytes in the object, sized `age_ns` ago).
Result<Probe> probe_header(const detail::SegmentHeader& h, std::uint64_t size, std::int64_t age_ns, bool abandoned,
                           const std::string& name, const std::string& oname) {
  std::uint32_t state;
  std::memcpy(&state, reinterpret_cast<const std::byte*>(&h) + offsetof(detail::SegmentHeader, init_state), 4);
  const ProcessIdentity creator{h.creator_pid, h.creator_start_time};
  if (h.magic == 0 && state == 0) {
    if (creator.pid != 0 && creator.start_time != 0 && !creator.alive())
      return Error(Errc::creator_died, "creator pid " + std::to_string(h.creator_pid) + " of segment '" + name +
                                           "' died during initialisation; destroy it and create again");
    if (creator.pid == 0 && abandoned)
      return Error(Errc::creator_died, "segment '" + name + "' was sized " + std::to_string(age_ns / 1'000'000) +
                                           " ms ago and no creator ever stamped it: its creator died; destroy "
                                           "it and create again");
    return Probe{true, "segment '" + name + "' was sized but its header never written", {}};
  }
  if (h.magic != detail::kMagic)
    return Error(Errc::foreign_segment, "'" + oname + "' is not a shmsched segment (bad magic)");
  if (state != static_cast<std::uint32_t>(detail::InitState::ready)) {
    if (!creator.alive())
      return Error(Errc::creator_died, "creator pid " + std::to_string(h.creator_pid) + " of segment '" + name +
                                           "' died during initialisation; destroy it and create again");
    return Probe{
        true, "creator pid " + std::to_string(h.creator_pid) + " is still initialising segment '" + name + "'", {}};
  }
  auto l = layout_from_header(h, size);
  if (!l) return Error(l.error().code(), "segment '" + name + "': " + l.error().detail());
  return Probe{false, {}, l.value()};
}

// One look at the object open as `fd`: its kind, size and header.
Result<Probe> probe_segment(int fd, const std::string& name, const std::string& oname, const OpenOptions& options) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Error(Errc::system_error, std::string("fstat: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return Error(Errc::foreign_segment,
                 "'/dev/shm/" + oname + "' is " + file_kind(st.st_mode) + ", not a shared-memory segment");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  // How long ago the object was made or sized (ctime: creation and ftruncate set it).
  const std::int64_t age_ns = unix_ns() - (std::int64_t{st.st_ctim.tv_sec} * 1'000'000'000 + st.st_ctim.tv_nsec);
  const bool abandoned = age_ns > std::chrono::nanoseconds(options.abandoned_after).count();
  detail::SegmentHeader h;
  std::memset(static_cast<void*>(&h), 0, sizeof h);
  if (size == 0) {
    if (abandoned)
      return Error(Errc::creator_died, "segment '" + name + "' has been empty for " +
                                           std::to_string(age_ns / 1'000'000) +
                                           " ms: its creator died before sizing it; destroy it and create again");
    // the creator has not sized it yet
    return Probe{true, "segment '" + name + "' is empty: its creator died before initialising it, or is slow", {}};
  }
  if (size < sizeof h) {
    std::uint64_t magic = 0;
    if (::pread(fd, &magic, sizeof magic, 0) == 8 && magic == detail::kMagic)
      return Error(Errc::truncated, "segment '" + name + "' is smaller than its header");
    return Error(Errc::foreign_segment, "'" + oname + "' is not a shmsched segment (too small)");
  }
  if (::pread(fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h))
    return Error(Errc::system_error, std::string("pread: ") + std::strerror(errno));
  return probe_header(h, size, age_ns, abandoned, name, oname);
}

}  // namespace

Result<Segment> Segment::open(std::string_view name, const OpenOptions& options) {
  if (auto v = validate_name(name); !v) return v.error();
  const std::string oname = object_name(name);
  auto impl = std::make_unique<Impl>();
  impl->name = std::string(name);
  try {
    // Something else at the path (a directory, a FIFO) is said as what it is.
    if (struct stat pre{}; ::lstat(("/dev/shm/" + oname).c_str(), &pre) == 0 && !S_ISREG(pre.st_mode))
      return Error(Errc::foreign_segment,
                   "'/dev/shm/" + oname + "' is " + file_kind(pre.st_mode) + ", not a shared-memory segment");
    const bip::mode_t mode = options.read_only ? bip::read_only : bip::read_write;
    impl->read_only = options.read_only;
    bip::shared_memory_object shm(bip::open_only, oname.c_str(), mode);
    const int fd = shm.get_mapping_handle().handle;
    const auto deadline = std::chrono::steady_clock::now() + options.timeout;
    Layout layout;
    for (;;) {
      auto probe = probe_segment(fd, impl->name, oname, options);
      if (!probe) return probe.error();
      if (!probe.value().waiting) {
        layout = probe.value().layout;
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) return Error(Errc::init_timeout, probe.value().why);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (options.expect && !(options.expect->effective_ring_capacity() == layout.effective_ring_capacity() &&
                            options.expect->hash() == layout.hash()))
      return Error(Errc::layout_mismatch, "segment '" + impl->name + "' was created with another layout: " +
                                              layout_differences(layout, *options.expect));
    impl->region = bip::mapped_region(shm, mode, 0, detail::SegmentMap::compute(layout).total);
    impl->size = impl->region.get_size();
    impl->core.bind(static_cast<std::byte*>(impl->region.get_address()), layout);
  } catch (const bip::interprocess_exception& e) {
    if (struct stat st{};
        e.get_error_code() == bip::security_error && ::stat(("/dev/shm/" + oname).c_str(), &st) == 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return Error(Errc::permission_denied, "segment '" + impl->name + "' (mode " + mode + ", owner uid " +
                                                std::to_string(st.st_uid) + ") may not be " +
                                                (options.read_only ? "read" : "read and written") +
                                                " by this process (uid " + std::to_string(::geteuid()) + ")");
    }
    return from_interprocess(e, impl->name);
  }
  // (H2) acquire: pairs with (H1); the header and initial queues are visible.
  if (impl->core.header->init_state.load(std::memory_order_acquire) !=
      static_cast<std::uint32_t>(detail::InitState::ready))
    return Error(Errc::corrupt, "segment '" + impl->name + "' changed state while being opened");
  return Segment(std::move(impl));
}

Result<Segment> Segment::from_image(void* mem, std::size_t size) {
  auto layout = check_image(mem, size);
  if (!layout) return layout.error();
  auto impl = std::make_unique<Impl>();
  impl->name = "(image)";
  impl->priv = true;
  impl->size = size;
  impl->core.bind(static_cast<std::byte*>(mem), *layout);
  return Segment(std::move(impl));
}

Result<Segment> Segment::create_or_open(std::string_view name, const Layout& layout, const CreateOptions& options) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto c = create(name, layout, options);
    if (c.ok() || c.code() != Errc::exists) return c;
    OpenOptions oo;
    oo.expect = layout;
    auto o = open(name, oo);
    if (o.ok()) {
      for (const auto& q : options.queues)
        if (auto r = o->create_queue(q); !r) return r.error();
      return o;
    }
    if (o.code() != Errc::not_found) return o;
    // Destroyed between our create and open: try again.
  }
  return Error(Errc::system_error, "segment '" + std::string(name) + "' keeps appearing and disappearing");
}

Result<void> Segment::destroy(std::string_view name) {
  if (auto v = validate_name(name); !v) return v;
  const std::string oname = object_name(name);
  if (::shm_unlink(oname.c_str()) != 0) {
    const int err = errno;
    if (err == ENOENT) return Result<void>(Errc::not_found, "'" + std::string(name) + "'");
    if (err == EACCES || err == EPERM)
      return Result<void>(Errc::permission_denied,
                          "cannot remove segment '" + std::string(name) + "': " + std::strerror(err));
    return Result<void>(Errc::system_error, "cannot remove segment '" + std::string(name) + "': " + std::strerror(err));
  }
  return {};
}

// ---------------------------------------------------------------------------------
// Queue table

Result<QueueId> Segment::create_queue(std::string_view name) noexcept {
  try {
    if (auto v = validate_short_name(name, kMaxQueueName, "queue"); !v) return v.error();
    if (impl_->read_only) {
      if (auto q = find_queue(name); q || q.code() != Errc::unknown_queue) return q;
      return Error(Errc::permission_denied,
                   "segment '" + impl_->name + "' is open read-only: cannot create queue '" + std::string(name) + "'");
    }
    auto& core = impl_->core;
    const std::int64_t i = detail::claim_named(core.queues, core.layout.max_queues, name, [](detail::QueueEntry&) {});
    if (i < 0)
      return Error(Errc::queue_table_full, "no room for queue '" + std::string(name) + "' (max_queues " +
                                               std::to_string(core.layout.max_queues) + ")");
    return static_cast<QueueId>(i);
  } catch (...) {
    return Error(Errc::system_error, "out of memory");
  }
}

Result<QueueId> Segment::find_queue(std::string_view name) const noexcept {
  try {
    if (auto v = validate_short_name(name, kMaxQueueName, "queue"); !v) return v.error();
    const auto& core = impl_->core;
    const std::int64_t i = detail::find_named(core.queues, core.layout.max_queues, name);
    if (i < 0) return Error(Errc::unknown_queue, "no queue named '" + std::string(name) + "'");
    return static_cast<QueueId>(i);
  } catch (...) {
    return Error(Errc::system_error, "out of memory");
  }
}

Result<void> Segment::set_paused(QueueId queue, bool paused) noexcept {
  if (is_read_only()) return Result<void>(Errc::permission_denied, "segment '" + name() + "' is open read-only");
  auto& core = this->core();
  if (queue >= core.layout.max_queues ||
      detail::named_state(core.queues[queue].word.load(std::memory_order_acquire)) != detail::QueueEntry::kReady)
    return Result<void>(Errc::unknown_queue, "no queue with id " + std::to_string(queue));
  // relaxed: a taker that misses the flag for a moment takes one more task; pausing
  // promises "no new takes from now on", not a fence with takes in flight.
  if (paused) {
    core.queues[queue].flags.fetch_or(detail::QueueEntry::kPaused, std::memory_order_relaxed);
  } else {
    core.queues[queue].flags.fetch_and(~detail::QueueEntry::kPaused, std::memory_order_relaxed);
  }
  return {};
}

std::vector<QueueInfo> Segment::queues() const {
  std::vector<QueueInfo> out;
  const auto& core = impl_->core;
  for (std::uint32_t i = 0; i < core.layout.max_queues; ++i) {
    const auto& e = core.queues[i];
    const std::uint64_t w = e.word.load(std::memory_order_acquire);  // (N1) in name_table.hpp
    if (detail::named_state(w) != detail::QueueEntry::kReady) continue;
    out.push_back(QueueInfo{static_cast<QueueId>(i), detail::read_name(e.name),
                            (e.flags.load(std::memory_order_relaxed) & detail::QueueEntry::kPaused) != 0});
  }
  return out;
}

}  // namespace shmsched
