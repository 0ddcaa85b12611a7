// Segment: one named POSIX shared-memory object (/dev/shm/shmsched.<name>) holding the
// whole scheduler, or a private anonymous mapping running the same engine in-process.
//
// Contract:
//  * create() is race-safe: the object is created with O_EXCL, so exactly one process
//    initialises it, writing its (pid, start time) first and the ready state last.
//    Openers poll the header (1 ms steps) up to OpenOptions::timeout; when the recorded
//    creator is dead and the segment is not ready they report creator_died at once --
//    never loop.
//  * open() checks magic, ABI version, init state, layout sanity and size before it
//    trusts anything; a foreign, truncated, half-initialised or mismatched object is an
//    error that names the problem and changes nothing.
//  * Mode 0600 by default (CreateOptions::mode opts in to group access).
//  * Names: 1..kMaxNameLength of [A-Za-z0-9_.-], not starting with '.', so no '/' and
//    no '..' can reach the file system.
//  * A private segment (create_private) is anonymous shared memory: the same engine in
//    one process, also shared with children forked after it was made.
// A Segment is move-only; any thread may use it. Destroying the handle unmaps; the
// object stays until destroy(name).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shmsched/error.hpp"
#include "shmsched/layout.hpp"
#include "shmsched/process.hpp"
#include "shmsched/queue.hpp"
#include "shmsched/semaphore.hpp"

namespace shmsched {

namespace detail {
struct Core;
struct CoreAccess;
}  // namespace detail

struct CreateOptions {
  /// Permission bits of the object; 0600 unless a group mode is asked for.
  unsigned mode = 0600;
  /// Queues to create together with the segment.
  std::vector<std::string> queues;
};

struct OpenOptions {
  /// When set, a segment built from another layout is a layout_mismatch error.
  std::optional<Layout> expect;
  /// How long to wait for a creator that is still initialising.
  std::chrono::milliseconds timeout{2000};
  /// An object that is still empty, or sized with no header, this long after it was
  /// made (its change time) was left by a creator that died before it could say who it
  /// was: reported as creator_died at once instead of waiting out `timeout`. A creator
  /// sizes and stamps the object within microseconds of making it.
  std::chrono::milliseconds abandoned_after{1000};
  /// Maps the segment read-only, which needs only read permission on the object: for
  /// tools that look (inspect, dead_letters). What would write is refused with
  /// Errc::permission_denied: Client::attach, set_paused, and create_queue and
  /// create_semaphore of a name that does not exist yet (an existing one is returned).
  bool read_only = false;
};

class Segment {
 public:
  static constexpr std::size_t kMaxNameLength = 64;

  static Result<Segment> create(std::string_view name, const Layout& layout = {}, const CreateOptions& options = {});
  static Result<Segment> open(std::string_view name, const OpenOptions& options = {});
  /// Opens the segment if it exists, else creates it (either way race-safe).
  static Result<Segment> create_or_open(std::string_view name, const Layout& layout = {},
                                        const CreateOptions& options = {});
  static Result<Segment> create_private(const Layout& layout = {}, const CreateOptions& options = {});
  /// Removes the named object. Mapped handles stay valid until they are dropped.
  static Result<void> destroy(std::string_view name);

  static Result<void> validate_name(std::string_view name);
  /// "shmsched.<name>": the POSIX shm object name (without the leading '/').
  static std::string object_name(std::string_view name);
  /// Checks a byte image of a segment (as open() does) without trusting any of it.
  /// Returns its layout when the image is a complete, ready segment.
  static Result<Layout> check_image(const void* data, std::size_t size) noexcept;
  /// A handle on a segment image already in memory (a copy, a core file, a fuzz input):
  /// checked as open() checks a segment, then used in place, never owned or unmapped.
  /// `mem` must stay valid and at least `size` bytes. For inspection: do not attach
  /// clients to an image other processes do not share.
  static Result<Segment> from_image(void* mem, std::size_t size);

  Segment(Segment&&) noexcept;
  Segment& operator=(Segment&&) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();

  const Layout& layout() const noexcept;
  const std::string& name() const noexcept;
  bool is_private() const noexcept;
  /// Opened with OpenOptions::read_only.
  bool is_read_only() const noexcept;
  std::size_t size_bytes() const noexcept;
  ProcessIdentity creator() const noexcept;

  /// Creates the queue or returns the existing one of that name (race-safe).
  Result<QueueId> create_queue(std::string_view name) noexcept;
  Result<QueueId> find_queue(std::string_view name) const noexcept;
  /// The ready queues, in id order.
  std::vector<QueueInfo> queues() const;
  /// A paused queue is not taken from; enqueue still works.
  Result<void> set_paused(QueueId queue, bool paused) noexcept;

  /// Creates the semaphore with `capacity` permits, or returns the existing one of that
  /// name unchanged (race-safe). Capacity 0..56.
  Result<SemId> create_semaphore(std::string_view name, std::uint32_t capacity) noexcept;
  Result<SemId> find_semaphore(std::string_view name) const noexcept;
  /// The ready semaphores, in id order.
  std::vector<SemaphoreInfo> semaphores() const;

 private:
  friend struct detail::CoreAccess;  // the engine, inspector, tests: detail/core_access.hpp
  detail::Core& core() noexcept;
  const detail::Core& core() const noexcept;
  struct Impl;
  explicit Segment(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shmsched
