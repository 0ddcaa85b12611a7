// Segment: create, open and destroy; every way an object can be wrong; racing
// creators; a creator killed mid-initialisation; the queue table and the participant
// table. Every refused call must name its problem with its own Errc and leave the
// object exactly as it was (the tests compare the file byte for byte).
#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/detail/fault.hpp"
#include "shmsched/detail/shm_structs.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using namespace shmsched::test;
using namespace std::chrono_literals;
using detail::SegmentHeader;

namespace {

Layout small_layout() {
  Layout l;
  l.levels = 4;
  l.task_capacity = 64;
  l.payload_bytes = 64;
  l.max_queues = 4;
  l.max_participants = 8;
  l.max_semaphores = 4;
  return l;
}

Layout other_layout() {
  Layout l = small_layout();
  l.task_capacity = 128;
  return l;
}

// Layouts as a segment sees them: ring_capacity 0 means "same as task_capacity", so a
// segment opened from its header reports the resolved value.
::testing::AssertionResult same_layout(const Layout& a, const Layout& b) {
  Layout x = a, y = b;
  x.ring_capacity = x.effective_ring_capacity();
  y.ring_capacity = y.effective_ring_capacity();
  if (x == y) return ::testing::AssertionSuccess();
  auto show = [](const Layout& l) {
    return "{levels " + std::to_string(l.levels) + ", tasks " + std::to_string(l.task_capacity) + ", payload " +
           std::to_string(l.payload_bytes) + ", ring " + std::to_string(l.ring_capacity) + ", queues " +
           std::to_string(l.max_queues) + ", participants " + std::to_string(l.max_participants) + ", semaphores " +
           std::to_string(l.max_semaphores) + "}";
  };
  return ::testing::AssertionFailure() << show(a) << " != " << show(b);
}

CreateOptions with_queues(std::vector<std::string> queues, unsigned mode = 0600) {
  CreateOptions o;
  o.mode = mode;
  o.queues = std::move(queues);
  return o;
}

TaskOptions on(QueueId q, std::uint8_t level = 0) {
  TaskOptions o;
  o.queue = q;
  o.priority = level;
  return o;
}

std::string text_of(const Taken& t) {
  return std::string(reinterpret_cast<const char*>(t.payload.data()), t.payload.size());
}

// Failed, and says why in words.
template <class R>
::testing::AssertionResult has_detail(const R& r) {
  if (r.ok()) return ::testing::AssertionFailure() << "succeeded";
  if (r.error().detail().empty()) return ::testing::AssertionFailure() << to_string(r.code()) << " without a detail";
  return ::testing::AssertionSuccess();
}

std::chrono::milliseconds since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
}

unsigned file_mode(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0u;
}

constexpr std::uint64_t layout_field_offset(std::size_t pod_offset) {
  return offsetof(SegmentHeader, layout) + pod_offset;
}

// Creates a real segment under `g`, unmaps it again, and returns its size: the tests
// then damage the file with ordinary file I/O while no handle maps it.
std::size_t make_real_segment(const NameGuard& g, const Layout& l = small_layout()) {
  auto s = Segment::create(g.name(), l, with_queues({"general"}));
  EXPECT_TRUE(s.ok()) << why(s);
  return s.ok() ? s->size_bytes() : 0;
}

}  // namespace

// ---------------------------------------------------------------------------------
// Create, open, destroy

TEST(SegmentNamed, CreateThenOpenShareOneSegment) {
  NameGuard g;
  auto created = Segment::create(g.name(), small_layout(), with_queues({"general"}));
  ASSERT_TRUE(created.ok()) << why(created);
  EXPECT_TRUE(file_exists(g.path()));
  EXPECT_FALSE(created->is_private());
  EXPECT_EQ(created->name(), g.name());
  EXPECT_EQ(created->creator(), ProcessIdentity::self());
  EXPECT_TRUE(same_layout(created->layout(), small_layout()));

  auto opened = Segment::open(g.name());
  ASSERT_TRUE(opened.ok()) << why(opened);
  EXPECT_TRUE(same_layout(opened->layout(), small_layout()));
  EXPECT_EQ(opened->size_bytes(), created->size_bytes());
  EXPECT_EQ(opened->creator(), created->creator());
  auto q1 = created->find_queue("general");
  auto q2 = opened->find_queue("general");
  ASSERT_TRUE(q1.ok() && q2.ok());
  EXPECT_EQ(*q1, *q2);

  // Written through one mapping, read through the other.
  auto producer = Client::attach(*created);
  auto consumer = Client::attach(*opened, Role::consumer);
  ASSERT_TRUE(producer.ok() && consumer.ok());
  TaskId id = kNoTask;
  ASSERT_EQ(producer->enqueue_text("echo", "across mappings", on(*q1), &id), Errc::ok);
  Taken t;
  ASSERT_TRUE(consumer->try_take(*q2, t));
  EXPECT_EQ(t.id, id);
  EXPECT_EQ(text_of(t), "across mappings");
  EXPECT_EQ(consumer->complete(t), Errc::ok);
}

TEST(SegmentNamed, DefaultModeIsOwnerOnly) {
  NameGuard g;
  auto s = Segment::create(g.name(), small_layout());
  ASSERT_TRUE(s.ok()) << why(s);
  EXPECT_EQ(file_mode(g.path()), 0600u);
}

TEST(SegmentNamed, GroupModeIsOptInAndExactDespiteUmask) {
  for (unsigned mode : {0660u, 0640u}) {
    NameGuard g;
    // A restrictive umask must not narrow a mode the caller asked for explicitly.
    const mode_t old = ::umask(0077);
    auto s = Segment::create(g.name(), small_layout(), with_queues({}, mode));
    ::umask(old);
    ASSERT_TRUE(s.ok()) << why(s);
    EXPECT_EQ(file_mode(g.path()), mode) << std::oct << mode;
    EXPECT_TRUE(Segment::open(g.name()).ok());
  }
}

TEST(SegmentNamed, CreateOnExistingNameFailsAndChangesNothing) {
  NameGuard g;
  auto first = Segment::create(g.name(), small_layout(), with_queues({"general"}));
  ASSERT_TRUE(first.ok()) << why(first);
  const QueueId q = first->find_queue("general").value();
  {
    auto producer = Client::attach(*first);
    ASSERT_TRUE(producer.ok());
    ASSERT_EQ(producer->enqueue_text("keep", "still here", on(q, 2)), Errc::ok);
  }
  const FileSnapshot before = snapshot(g.path());
  ASSERT_TRUE(before.exists);

  auto same = Segment::create(g.name(), small_layout(), with_queues({"general"}));
  EXPECT_EQ(same.code(), Errc::exists);
  EXPECT_TRUE(has_detail(same));
  EXPECT_EQ(Segment::create(g.name(), other_layout(), with_queues({"other"})).code(), Errc::exists);
  EXPECT_EQ(Segment::create(g.name(), small_layout(), with_queues({}, 0660)).code(), Errc::exists);
  EXPECT_TRUE(snapshot(g.path()) == before) << "a refused create changed the object";
  EXPECT_EQ(file_mode(g.path()), 0600u);

  auto opened = Segment::open(g.name());
  ASSERT_TRUE(opened.ok()) << why(opened);
  EXPECT_EQ(opened->find_queue("other").code(), Errc::unknown_queue);
  auto consumer = Client::attach(*opened, Role::consumer);
  ASSERT_TRUE(consumer.ok());
  Taken t;
  ASSERT_TRUE(consumer->try_take(q, t));
  EXPECT_EQ(t.type_name, "keep");
  EXPECT_EQ(text_of(t), "still here");
  EXPECT_EQ(t.level, 2);
  EXPECT_EQ(consumer->complete(t), Errc::ok);
  EXPECT_FALSE(consumer->try_take(q, t));
}

TEST(SegmentNamed, OpenOrDestroyOfMissingNameIsNotFound) {
  NameGuard g;
  auto r = Segment::open(g.name());
  EXPECT_EQ(r.code(), Errc::not_found);
  EXPECT_TRUE(has_detail(r));
  EXPECT_EQ(Segment::destroy(g.name()).code(), Errc::not_found);
  EXPECT_FALSE(file_exists(g.path())) << "open of a missing name created it";
}

TEST(SegmentNamed, CreateOrOpenReturnsTheExistingSegment) {
  NameGuard g;
  auto a = Segment::create_or_open(g.name(), small_layout(), with_queues({"general"}));
  ASSERT_TRUE(a.ok()) << why(a);
  EXPECT_EQ(a->creator(), ProcessIdentity::self());
  auto b = Segment::create_or_open(g.name(), small_layout(), with_queues({"general", "extra"}));
  ASSERT_TRUE(b.ok()) << why(b);
  EXPECT_EQ(b->creator(), a->creator());
  EXPECT_EQ(b->size_bytes(), a->size_bytes());
  const QueueId qa = a->find_queue("general").value();
  EXPECT_EQ(b->find_queue("general").value(), qa);
  // A queue the second caller asked for is created in the one shared table.
  auto extra = a->find_queue("extra");
  ASSERT_TRUE(extra.ok()) << why(extra);
  EXPECT_EQ(*extra, b->find_queue("extra").value());

  auto producer = Client::attach(*a);
  auto consumer = Client::attach(*b, Role::consumer);
  ASSERT_TRUE(producer.ok() && consumer.ok());
  TaskId id = kNoTask;
  ASSERT_EQ(producer->enqueue_text("t", "one segment", on(qa), &id), Errc::ok);
  Taken t;
  ASSERT_TRUE(consumer->try_take(qa, t));
  EXPECT_EQ(t.id, id);
  EXPECT_EQ(text_of(t), "one segment");
  EXPECT_EQ(consumer->complete(t), Errc::ok);
}

TEST(SegmentNamed, DestroyRemovesTheNameButNotLiveMappings) {
  NameGuard g;
  auto s = Segment::create(g.name(), small_layout(), with_queues({"general"}));
  ASSERT_TRUE(s.ok()) << why(s);
  const QueueId q = s->find_queue("general").value();
  auto cli = Client::attach(*s);
  ASSERT_TRUE(cli.ok());
  ASSERT_EQ(cli->enqueue_text("t", "before", on(q)), Errc::ok);

  ASSERT_TRUE(Segment::destroy(g.name()).ok());
  EXPECT_FALSE(file_exists(g.path()));
  EXPECT_EQ(Segment::open(g.name()).code(), Errc::not_found);
  EXPECT_EQ(Segment::destroy(g.name()).code(), Errc::not_found);

  // The mapping outlives the name.
  Taken t;
  ASSERT_TRUE(cli->try_take(q, t));
  EXPECT_EQ(text_of(t), "before");
  EXPECT_EQ(cli->complete(t), Errc::ok);

  // The name is free for a new, empty segment.
  auto again = Segment::create(g.name(), small_layout(), with_queues({"general"}));
  ASSERT_TRUE(again.ok()) << why(again);
  auto cli2 = Client::attach(*again);
  ASSERT_TRUE(cli2.ok());
  EXPECT_FALSE(cli2->try_take(again->find_queue("general").value(), t));
}

TEST(SegmentNamed, BadNamesAreRefusedAndCreateNoFile) {
  const std::vector<std::string> bad = {
      "",
      "a/b",
      "/lead",
      "..",
      "a..b",
      "...",
      ".hidden",
      std::string(Segment::kMaxNameLength + 1, 'n'),
      "sp ace",
      "tab\there",
      std::string("nul\0x", 5),
      "caf\xC3\xA9",
      "semi;colon",
  };
  for (const auto& name : bad) {
    SCOPED_TRACE("name '" + name + "' (" + std::to_string(name.size()) + " bytes)");
    EXPECT_EQ(Segment::validate_name(name).code(), Errc::invalid_name);
    auto c = Segment::create(name, small_layout());
    EXPECT_EQ(c.code(), Errc::invalid_name);
    EXPECT_TRUE(has_detail(c));
    EXPECT_EQ(Segment::create_or_open(name, small_layout()).code(), Errc::invalid_name);
    EXPECT_EQ(Segment::open(name).code(), Errc::invalid_name);
    EXPECT_EQ(Segment::destroy(name).code(), Errc::invalid_name);
    EXPECT_FALSE(file_exists(shm_path(name))) << shm_path(name);
  }
  // What "a/b" or a leading '/' would have reached had they been passed through.
  EXPECT_FALSE(file_exists("/dev/shm/shmsched.a"));
  EXPECT_FALSE(file_exists("/dev/shm/b"));
  EXPECT_FALSE(file_exists("/dev/shm/shmsched."));
}

TEST(SegmentNamed, NamesAtTheLimitsAreAccepted) {
  std::string longest = unique_name("edge") + ".v1_a-b";
  longest.resize(Segment::kMaxNameLength, 'z');
  for (const std::string& name : {longest, unique_name("x") + ".a_b-c", unique_name("Az09")}) {
    SCOPED_TRACE(name);
    NameGuard g(name);
    EXPECT_TRUE(Segment::validate_name(name).ok());
    auto s = Segment::create(name, small_layout());
    ASSERT_TRUE(s.ok()) << why(s);
    EXPECT_TRUE(file_exists(shm_path(name)));
    EXPECT_TRUE(Segment::open(name).ok());
  }
}

TEST(SegmentNamed, BadCreateArgumentsLeaveNoObject) {
  NameGuard g;
  Layout bad_layout = small_layout();
  bad_layout.levels = 0;
  EXPECT_EQ(Segment::create(g.name(), bad_layout).code(), Errc::invalid_layout);
  EXPECT_EQ(Segment::create_or_open(g.name(), bad_layout).code(), Errc::invalid_layout);
  EXPECT_FALSE(file_exists(g.path()));

  EXPECT_EQ(Segment::create(g.name(), small_layout(), with_queues({}, 01777)).code(), Errc::invalid_argument);
  EXPECT_EQ(Segment::create(g.name(), small_layout(), with_queues({}, 04600)).code(), Errc::invalid_argument);
  EXPECT_FALSE(file_exists(g.path()));

  // A bad initial queue is found only after the object exists; it must be gone again.
  EXPECT_EQ(Segment::create(g.name(), small_layout(), with_queues({"general", "bad/queue"})).code(),
            Errc::invalid_name);
  EXPECT_FALSE(file_exists(g.path()));
  EXPECT_EQ(Segment::create_or_open(g.name(), small_layout(), with_queues({"sp ace"})).code(), Errc::invalid_name);
  EXPECT_FALSE(file_exists(g.path()));
  EXPECT_EQ(Segment::open(g.name()).code(), Errc::not_found);

  EXPECT_EQ(Segment::create_private(bad_layout).code(), Errc::invalid_layout);
  EXPECT_EQ(Segment::create_private(small_layout(), with_queues({""})).code(), Errc::invalid_name);

  // And the name still works afterwards.
  EXPECT_TRUE(Segment::create(g.name(), small_layout(), with_queues({"general"})).ok());
}

// ---------------------------------------------------------------------------------
// Opening damaged, foreign and unfinished objects

TEST(SegmentOpen, ForeignFileIsRefusedAndLeftAlone) {
  for (std::size_t size : {std::size_t{8192}, std::size_t{5}}) {
    SCOPED_TRACE(std::to_string(size) + " bytes of 'x'");
    NameGuard g;
    const std::vector<char> junk(size, 'x');
    ASSERT_TRUE(write_new_file(g.path(), junk.data(), junk.size()));
    const FileSnapshot before = snapshot(g.path());

    auto r = Segment::open(g.name());
    EXPECT_EQ(r.code(), Errc::foreign_segment);
    EXPECT_TRUE(has_detail(r));
    EXPECT_EQ(Segment::create_or_open(g.name(), small_layout()).code(), Errc::foreign_segment);
    EXPECT_EQ(Segment::create(g.name(), small_layout()).code(), Errc::exists);
    EXPECT_TRUE(snapshot(g.path()) == before) << "a refused open changed a foreign file";
  }
}

TEST(SegmentOpen, ObjectShorterThanItsHeaderIsTruncated) {
  NameGuard g;
  std::array<std::uint64_t, 2> start = {detail::kMagic, 0};  // our magic, then nothing
  ASSERT_TRUE(write_new_file(g.path(), start.data(), sizeof start));
  const FileSnapshot before = snapshot(g.path());
  EXPECT_EQ(Segment::open(g.name()).code(), Errc::truncated);
  EXPECT_TRUE(snapshot(g.path()) == before);
}

TEST(SegmentOpen, TruncatedSegmentIsRefused) {
  NameGuard g;
  const std::size_t full = make_real_segment(g);
  ASSERT_GT(full, sizeof(SegmentHeader) * 2);
  ASSERT_EQ(::truncate(g.path().c_str(), static_cast<off_t>(full / 2)), 0);
  const FileSnapshot before = snapshot(g.path());
  ASSERT_EQ(before.size, full / 2);

  auto r = Segment::open(g.name());
  EXPECT_EQ(r.code(), Errc::truncated);
  EXPECT_TRUE(has_detail(r));
  EXPECT_EQ(Segment::create_or_open(g.name(), small_layout()).code(), Errc::truncated);
  EXPECT_TRUE(snapshot(g.path()) == before);
}

TEST(SegmentOpen, OtherAbiVersionIsRefused) {
  for (std::uint32_t version : {detail::kAbiVersion + 1, 0u, 0xFFFFFFFFu}) {
    SCOPED_TRACE("abi_version " + std::to_string(version));
    NameGuard g;
    ASSERT_GT(make_real_segment(g), 0u);
    ASSERT_TRUE(patch_value(g.path(), offsetof(SegmentHeader, abi_version), version));
    const FileSnapshot before = snapshot(g.path());
    auto r = Segment::open(g.name());
    EXPECT_EQ(r.code(), Errc::version_mismatch);
    if (!r.ok()) {
      EXPECT_NE(r.error().detail().find(std::to_string(version)), std::string::npos) << why(r);
    }
    EXPECT_TRUE(snapshot(g.path()) == before);
  }
}

TEST(SegmentOpen, InconsistentHeaderIsCorrupt) {
  const std::uint64_t total = detail::SegmentMap::compute(small_layout()).total;
  struct Damage {
    const char* what;
    std::uint64_t offset;
    std::uint64_t value;
    std::size_t bytes;
  };
  const std::vector<Damage> damages = {
      {"levels = 0", layout_field_offset(offsetof(detail::LayoutPod, levels)), 0, 4},
      {"levels = 17", layout_field_offset(offsetof(detail::LayoutPod, levels)), 17, 4},
      {"task_capacity not a power of two", layout_field_offset(offsetof(detail::LayoutPod, task_capacity)), 100, 4},
      {"payload_bytes not a multiple of 8", layout_field_offset(offsetof(detail::LayoutPod, payload_bytes)), 63, 4},
      {"max_queues = 0", layout_field_offset(offsetof(detail::LayoutPod, max_queues)), 0, 4},
      // A valid layout that is not the one the hash and sizes were computed from.
      {"task_capacity doubled", layout_field_offset(offsetof(detail::LayoutPod, task_capacity)), 128, 4},
      {"layout_hash changed", offsetof(SegmentHeader, layout_hash), small_layout().hash() ^ 1, 8},
      {"total_size changed", offsetof(SegmentHeader, total_size), total + 4096, 8},
      {"header_size changed", offsetof(SegmentHeader, header_size), 8, 4},
  };
  for (const auto& d : damages) {
    SCOPED_TRACE(d.what);
    NameGuard g;
    ASSERT_GT(make_real_segment(g), 0u);
    ASSERT_TRUE(patch_file(g.path(), d.offset, &d.value, d.bytes));  // little-endian host
    const FileSnapshot before = snapshot(g.path());
    auto r = Segment::open(g.name());
    EXPECT_EQ(r.code(), Errc::corrupt) << why(r);
    EXPECT_TRUE(has_detail(r));
    EXPECT_TRUE(snapshot(g.path()) == before);
  }
}

TEST(SegmentOpen, DeadCreatorIsReportedQuickly) {
  for (std::uint32_t state : {static_cast<std::uint32_t>(detail::InitState::initializing), 0u}) {
    SCOPED_TRACE("init_state " + std::to_string(state));
    NameGuard g;
    ASSERT_GT(make_real_segment(g), 0u);
    const pid_t gone = dead_pid();
    ASSERT_GT(gone, 0);
    ASSERT_TRUE(patch_value(g.path(), offsetof(SegmentHeader, init_state), state));
    ASSERT_TRUE(patch_value(g.path(), offsetof(SegmentHeader, creator_pid), std::int32_t{gone}));
    const FileSnapshot before = snapshot(g.path());

    OpenOptions oo;
    oo.timeout = 5s;
    const auto t0 = std::chrono::steady_clock::now();
    auto r = Segment::open(g.name(), oo);
    const auto took = since(t0);
    EXPECT_EQ(r.code(), Errc::creator_died) << why(r);
    if (!r.ok()) {
      EXPECT_NE(r.error().detail().find(std::to_string(gone)), std::string::npos) << why(r);
    }
    EXPECT_LT(took, 1000ms) << "a dead creator must be reported, not waited for";
    EXPECT_TRUE(snapshot(g.path()) == before);
  }
}

TEST(SegmentOpen, LiveCreatorThatNeverFinishesTimesOut) {
  // The header as a live but stalled creator leaves it: our own pid, not ready.
  NameGuard g;
  ASSERT_GT(make_real_segment(g), 0u);
  ASSERT_TRUE(patch_value(g.path(), offsetof(SegmentHeader, init_state),
                          static_cast<std::uint32_t>(detail::InitState::initializing)));
  const FileSnapshot before = snapshot(g.path());
  OpenOptions oo;
  oo.timeout = 50ms;
  const auto t0 = std::chrono::steady_clock::now();
  auto r = Segment::open(g.name(), oo);
  const auto took = since(t0);
  EXPECT_EQ(r.code(), Errc::init_timeout) << why(r);
  EXPECT_GE(took, 50ms);
  EXPECT_LT(took, 2000ms);
  EXPECT_TRUE(snapshot(g.path()) == before);
}

TEST(SegmentOpen, EmptyObjectTimesOutAfterTheBound) {
  struct Case {
    const char* what;
    std::size_t size;
  };
  for (const Case c : {Case{"0 bytes", 0}, Case{"8192 zero bytes", 8192}}) {
    SCOPED_TRACE(c.what);
    NameGuard g;
    const std::vector<char> zeros(c.size, 0);
    ASSERT_TRUE(write_new_file(g.path(), zeros.data(), zeros.size()));
    const FileSnapshot before = snapshot(g.path());
    OpenOptions oo;
    oo.timeout = 50ms;
    const auto t0 = std::chrono::steady_clock::now();
    auto r = Segment::open(g.name(), oo);
    const auto took = since(t0);
    EXPECT_EQ(r.code(), Errc::init_timeout) << why(r);
    EXPECT_GE(took, 50ms);
    EXPECT_LT(took, 2000ms);
    EXPECT_TRUE(snapshot(g.path()) == before);
  }
}

TEST(SegmentOpen, LongEmptyObjectIsReportedAbandonedWithoutWaiting) {
  for (const std::size_t size : {std::size_t{0}, std::size_t{8192}}) {
    SCOPED_TRACE(size);
    NameGuard g;
    const std::vector<char> zeros(size, 0);
    ASSERT_TRUE(write_new_file(g.path(), zeros.data(), zeros.size()));
    const FileSnapshot before = snapshot(g.path());
    std::this_thread::sleep_for(60ms);
    OpenOptions oo;
    oo.timeout = 10s;  // not waited for: the object is older than abandoned_after
    oo.abandoned_after = 30ms;
    const auto t0 = std::chrono::steady_clock::now();
    auto r = Segment::open(g.name(), oo);
    EXPECT_EQ(r.code(), Errc::creator_died) << why(r);
    EXPECT_LT(since(t0), 2000ms);
    EXPECT_TRUE(snapshot(g.path()) == before);
  }
}

TEST(SegmentOpen, ExpectedLayoutMustMatch) {
  NameGuard g;
  ASSERT_GT(make_real_segment(g), 0u);
  const FileSnapshot before = snapshot(g.path());

  auto expect = [&](const Layout& l) {
    OpenOptions oo;
    oo.expect = l;
    return Segment::open(g.name(), oo);
  };
  EXPECT_EQ(expect(other_layout()).code(), Errc::layout_mismatch);
  Layout fewer_levels = small_layout();
  fewer_levels.levels = 2;
  EXPECT_EQ(expect(fewer_levels).code(), Errc::layout_mismatch);
  // The message names the field that differs, with both values, and no other field.
  const std::string why_levels = expect(fewer_levels).error().message();
  EXPECT_NE(why_levels.find("levels " + std::to_string(small_layout().levels) + " (asked 2)"), std::string::npos)
      << why_levels;
  EXPECT_EQ(why_levels.find("payload_bytes"), std::string::npos) << why_levels;
  Layout more_payload = small_layout();
  more_payload.payload_bytes = 128;
  EXPECT_EQ(expect(more_payload).code(), Errc::layout_mismatch);
  Layout small_ring = small_layout();
  small_ring.ring_capacity = 16;
  EXPECT_EQ(expect(small_ring).code(), Errc::layout_mismatch);
  EXPECT_EQ(Segment::create_or_open(g.name(), other_layout()).code(), Errc::layout_mismatch);
  EXPECT_TRUE(snapshot(g.path()) == before);

  EXPECT_TRUE(expect(small_layout()).ok());
  Layout explicit_ring = small_layout();  // 0 and task_capacity mean the same ring
  explicit_ring.ring_capacity = explicit_ring.task_capacity;
  auto r = expect(explicit_ring);
  ASSERT_TRUE(r.ok()) << why(r);
  EXPECT_TRUE(same_layout(r->layout(), small_layout()));
}

// ---------------------------------------------------------------------------------
// check_image

TEST(SegmentImage, GarbageIsRefused) {
  const std::uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  EXPECT_EQ(Segment::check_image(nullptr, 0).code(), Errc::foreign_segment);
  EXPECT_EQ(Segment::check_image(nullptr, 4096).code(), Errc::foreign_segment);  // a size without memory
  for (std::size_t size : {1, 5, 63, 4095, 4096, 8192, 65536}) {
    std::vector<std::uint8_t> buf(size);
    for (auto& b : buf) b = static_cast<std::uint8_t>(rng());
    EXPECT_EQ(Segment::check_image(buf.data(), buf.size()).code(), Errc::foreign_segment) << size << " random bytes";
    std::fill(buf.begin(), buf.end(), 'x');
    EXPECT_EQ(Segment::check_image(buf.data(), buf.size()).code(), Errc::foreign_segment) << size << " 'x'";
    std::fill(buf.begin(), buf.end(), 0);
    EXPECT_FALSE(Segment::check_image(buf.data(), buf.size()).ok()) << size << " zero bytes";
  }
  // Noise behind a header that carries the magic, the version and the ready mark: the
  // remaining fields must be checked, not trusted.
  std::vector<std::uint8_t> buf(1 << 16);
  for (int i = 0; i < 2000; ++i) {
    for (std::size_t j = 0; j < sizeof(SegmentHeader); ++j) buf[j] = static_cast<std::uint8_t>(rng());
    const std::uint64_t magic = detail::kMagic;
    const std::uint32_t version = detail::kAbiVersion;
    const auto ready = static_cast<std::uint32_t>(detail::InitState::ready);
    std::memcpy(&buf[offsetof(SegmentHeader, magic)], &magic, sizeof magic);
    std::memcpy(&buf[offsetof(SegmentHeader, abi_version)], &version, sizeof version);
    std::memcpy(&buf[offsetof(SegmentHeader, init_state)], &ready, sizeof ready);
    auto r = Segment::check_image(buf.data(), buf.size());
    ASSERT_FALSE(r.ok()) << "iteration " << i << " accepted a random header";
  }
}

TEST(SegmentImage, CopyOfARealSegmentIsAcceptedAndDamagedCopiesAreNot) {
  const std::uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  auto seg = Segment::create_private(small_layout(), with_queues({"general"}));
  ASSERT_TRUE(seg.ok()) << why(seg);
  {
    auto cli = Client::attach(*seg);
    ASSERT_TRUE(cli.ok());
    ASSERT_EQ(cli->enqueue_text("t", "in the image", on(seg->find_queue("general").value())), Errc::ok);
  }
  const auto* base = detail::core_of(*seg).base;
  const std::vector<std::byte> image(base, base + seg->size_bytes());

  auto r = Segment::check_image(image.data(), image.size());
  ASSERT_TRUE(r.ok()) << why(r);
  EXPECT_TRUE(same_layout(*r, small_layout()));
  // Extra bytes after the segment are harmless.
  std::vector<std::byte> longer = image;
  longer.resize(image.size() + 4096);
  EXPECT_TRUE(Segment::check_image(longer.data(), longer.size()).ok());

  EXPECT_EQ(Segment::check_image(image.data(), image.size() / 2).code(), Errc::truncated);
  EXPECT_EQ(Segment::check_image(image.data(), sizeof(SegmentHeader) - 1).code(), Errc::truncated);

  auto patched = [&](std::size_t offset, auto value) {
    std::vector<std::byte> copy = image;
    std::memcpy(&copy[offset], &value, sizeof value);
    return Segment::check_image(copy.data(), copy.size());
  };
  EXPECT_EQ(patched(offsetof(SegmentHeader, abi_version), detail::kAbiVersion + 1).code(), Errc::version_mismatch);
  EXPECT_EQ(patched(layout_field_offset(offsetof(detail::LayoutPod, levels)), std::uint32_t{0}).code(), Errc::corrupt);
  EXPECT_EQ(patched(offsetof(SegmentHeader, layout_hash), std::uint64_t{42}).code(), Errc::corrupt);
  EXPECT_FALSE(patched(offsetof(SegmentHeader, init_state), std::uint32_t{0}).ok());
  EXPECT_EQ(patched(offsetof(SegmentHeader, magic), std::uint64_t{0}).code(), Errc::foreign_segment);

  // One flipped header byte either changes nothing that is checked or is refused; it
  // never yields some other layout.
  for (int i = 0; i < 500; ++i) {
    std::vector<std::byte> copy = image;
    const std::size_t at = rng() % sizeof(SegmentHeader);
    copy[at] ^= static_cast<std::byte>(1u << (rng() % 8));
    auto f = Segment::check_image(copy.data(), copy.size());
    if (f.ok()) {
      EXPECT_TRUE(same_layout(*f, small_layout())) << "byte " << at;
    }
  }

  // The file of a named segment, copied with ordinary I/O, is a valid image too.
  NameGuard g;
  ASSERT_GT(make_real_segment(g, other_layout()), 0u);
  const FileSnapshot file = snapshot(g.path());
  auto fr = Segment::check_image(file.bytes.data(), file.bytes.size());
  ASSERT_TRUE(fr.ok()) << why(fr);
  EXPECT_TRUE(same_layout(*fr, other_layout()));
}

// ---------------------------------------------------------------------------------
// Racing creators and a creator killed mid-initialisation

namespace {
struct RacerReport {
  std::int32_t pid = 0;
  std::int32_t creator_pid = 0;
  std::int32_t errc = 0;
  char detail[200] = {};
};
}  // namespace

TEST(SegmentRace, RacingCreatorsMakeExactlyOneSegment) {
  constexpr int kChildren = 4;
  constexpr int kRounds = 25;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    NameGuard g;
    SharedArray<RacerReport> report(kChildren);
    StartGate gate;
    ASSERT_TRUE(gate.valid());
    std::vector<pid_t> pids;
    for (int i = 0; i < kChildren; ++i) {
      const pid_t pid = spawn([&, i]() -> int {
        gate.wait();
        auto seg = Segment::create_or_open(g.name(), small_layout(), with_queues({"general"}));
        RacerReport& me = report[static_cast<std::size_t>(i)];
        me.pid = static_cast<std::int32_t>(::getpid());
        if (!seg.ok()) {
          me.errc = static_cast<std::int32_t>(seg.code());
          std::snprintf(me.detail, sizeof me.detail, "%s", seg.error().message().c_str());
          return 2;
        }
        me.creator_pid = seg->creator().pid;
        auto cli = Client::attach(*seg);
        if (!cli.ok()) return 3;
        auto q = seg->find_queue("general");
        if (!q.ok()) return 4;
        return cli->enqueue_value("racer", i, on(*q)) == Errc::ok ? 0 : 5;
      });
      ASSERT_GT(pid, 0);
      pids.push_back(pid);
    }
    gate.open();
    const auto status = wait_children(pids, 30s);
    bool all_ok = true;
    for (int i = 0; i < kChildren; ++i) {
      const auto& rep = report[static_cast<std::size_t>(i)];
      EXPECT_TRUE(status[i].ok()) << "child " << i << " (pid " << pids[i] << "): " << describe(status[i]) << "; "
                                  << (rep.errc ? to_string(static_cast<Errc>(rep.errc)) : "") << " " << rep.detail;
      all_ok = all_ok && status[i].ok();
    }
    ASSERT_TRUE(all_ok);

    // Every child saw the same creator, and it was one of them.
    int creators = 0;
    for (int i = 0; i < kChildren; ++i) {
      EXPECT_EQ(report[static_cast<std::size_t>(i)].creator_pid, report[0].creator_pid);
      creators += report[static_cast<std::size_t>(i)].creator_pid == pids[i];
    }
    EXPECT_EQ(creators, 1);

    OpenOptions oo;
    oo.expect = small_layout();
    auto seg = Segment::open(g.name(), oo);
    ASSERT_TRUE(seg.ok()) << why(seg);
    EXPECT_EQ(seg->creator().pid, report[0].creator_pid);
    EXPECT_EQ(seg->queues().size(), 1u);
    const QueueId q = seg->find_queue("general").value();
    auto cli = Client::attach(*seg, Role::consumer);
    ASSERT_TRUE(cli.ok());
    std::set<int> got;
    Taken t;
    while (cli->try_take(q, t)) {
      int v = -1;
      ASSERT_TRUE(payload_to(t.payload, v));
      EXPECT_TRUE(got.insert(v).second) << "task " << v << " twice";
      ASSERT_EQ(cli->complete(t), Errc::ok);
    }
    EXPECT_EQ(got, (std::set<int>{0, 1, 2, 3}));
  }
}

TEST(SegmentRace, CreatorKilledMidInitIsReportedThenCleanedUp) {
  ASSERT_TRUE(fault::enabled()) << "this test needs a build with SHMSCHED_FAULT_POINTS (on whenever tests are built)";
  for (const auto point : {fault::Point::segment_init_before_ready, fault::Point::segment_init_after_create}) {
    SCOPED_TRACE(std::string(fault::name(point)));
    NameGuard g;
    const pid_t pid = spawn([&]() -> int {
      fault::arm(point, 1, fault::Action::kill);
      auto s = Segment::create(g.name(), small_layout(), with_queues({"general"}));
      return s.ok() ? 3 : 4;  // reaching here means the fault point never fired
    });
    ASSERT_GT(pid, 0);
    const ExitStatus st = wait_child(pid, 30s);
    ASSERT_TRUE(st.signaled && st.signal == SIGKILL) << describe(st);
    ASSERT_TRUE(file_exists(g.path())) << "the killed creator left no object";
    const FileSnapshot before = snapshot(g.path());

    OpenOptions oo;
    oo.timeout = 5s;
    const auto t0 = std::chrono::steady_clock::now();
    auto r = Segment::open(g.name(), oo);
    EXPECT_LT(since(t0), 1000ms);
    ASSERT_EQ(r.code(), Errc::creator_died) << why(r);
    EXPECT_NE(r.error().detail().find(std::to_string(pid)), std::string::npos) << why(r);
    EXPECT_EQ(Segment::create_or_open(g.name(), small_layout()).code(), Errc::creator_died);
    EXPECT_EQ(Segment::create(g.name(), small_layout()).code(), Errc::exists);
    EXPECT_TRUE(snapshot(g.path()) == before);

    ASSERT_TRUE(Segment::destroy(g.name()).ok());
    EXPECT_FALSE(file_exists(g.path()));
    auto again = Segment::create(g.name(), small_layout(), with_queues({"general"}));
    ASSERT_TRUE(again.ok()) << why(again);
    EXPECT_EQ(again->creator(), ProcessIdentity::self());
    auto opened = Segment::open(g.name());
    ASSERT_TRUE(opened.ok()) << why(opened);
    EXPECT_TRUE(opened->find_queue("general").ok());
  }
}

// ---------------------------------------------------------------------------------
// Queue table

TEST(SegmentQueues, CreateQueueIsIdempotent) {
  auto seg = Segment::create_private(small_layout());
  ASSERT_TRUE(seg.ok()) << why(seg);
  auto a = seg->create_queue("general");
  ASSERT_TRUE(a.ok()) << why(a);
  auto b = seg->create_queue("general");
  ASSERT_TRUE(b.ok()) << why(b);
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(seg->find_queue("general").value(), *a);
  auto c = seg->create_queue("selenium");
  ASSERT_TRUE(c.ok()) << why(c);
  EXPECT_NE(*c, *a);
  const std::string longest(kMaxQueueName, 'q');
  auto d = seg->create_queue(longest);
  ASSERT_TRUE(d.ok()) << why(d);
  EXPECT_EQ(seg->create_queue(longest).value(), *d);

  const auto list = seg->queues();
  ASSERT_EQ(list.size(), 3u);
  std::set<std::string> names;
  for (const auto& q : list) {
    names.insert(q.name);
    EXPECT_EQ(seg->find_queue(q.name).value(), q.id);
    EXPECT_FALSE(q.paused);
  }
  EXPECT_EQ(names, (std::set<std::string>{"general", "selenium", longest}));
}

TEST(SegmentQueues, UnknownAndBadNamesAreRefused) {
  auto seg = Segment::create_private(small_layout(), with_queues({"general"}));
  ASSERT_TRUE(seg.ok()) << why(seg);
  auto r = seg->find_queue("nope");
  EXPECT_EQ(r.code(), Errc::unknown_queue);
  EXPECT_TRUE(has_detail(r));
  EXPECT_EQ(seg->find_queue("General").code(), Errc::unknown_queue);
  for (const std::string& bad : {std::string(), std::string(kMaxQueueName + 1, 'q'), std::string("a b"),
                                 std::string("a/b"), std::string("caf\xC3\xA9"), std::string("nul\0x", 5)}) {
    SCOPED_TRACE("queue name '" + bad + "'");
    EXPECT_EQ(seg->create_queue(bad).code(), Errc::invalid_name);
    EXPECT_EQ(seg->find_queue(bad).code(), Errc::invalid_name);
  }
  ASSERT_EQ(seg->queues().size(), 1u);
  EXPECT_EQ(seg->queues()[0].name, "general");
}

TEST(SegmentQueues, FullTableIsAnErrorAndExistingQueuesStayUsable) {
  const Layout l = small_layout();  // max_queues 4
  auto seg = Segment::create_private(l);
  ASSERT_TRUE(seg.ok()) << why(seg);
  std::set<QueueId> ids;
  for (std::uint32_t i = 0; i < l.max_queues; ++i) {
    auto q = seg->create_queue("q" + std::to_string(i));
    ASSERT_TRUE(q.ok()) << why(q);
    EXPECT_TRUE(ids.insert(*q).second);
  }
  auto full = seg->create_queue("one-too-many");
  EXPECT_EQ(full.code(), Errc::queue_table_full);
  EXPECT_TRUE(has_detail(full));
  EXPECT_EQ(seg->find_queue("one-too-many").code(), Errc::unknown_queue);
  EXPECT_EQ(seg->queues().size(), l.max_queues);
  // An existing name is still found (and "created") when the table is full.
  EXPECT_EQ(seg->create_queue("q2").value(), seg->find_queue("q2").value());

  auto cli = Client::attach(*seg);
  ASSERT_TRUE(cli.ok());
  const QueueId q3 = seg->find_queue("q3").value();
  ASSERT_EQ(cli->enqueue_text("t", "x", on(q3)), Errc::ok);
  Taken t;
  ASSERT_TRUE(cli->try_take(q3, t));
  EXPECT_EQ(cli->complete(t), Errc::ok);
}

TEST(SegmentQueues, RacingCreatorsOfOneNameGetOneId) {
  Layout l;
  l.levels = 1;
  l.task_capacity = 2;
  l.payload_bytes = 0;
  l.max_queues = Layout::kMaxQueues;
  l.max_participants = 1;
  l.max_semaphores = 0;
  constexpr int kRounds = 25;
  constexpr int kSteps = 80;  // 80 shared + 2 x 80 own names = 240 < 256 entries

  for (int round = 0; round < kRounds; ++round) {
    auto seg = Segment::create_private(l);
    ASSERT_TRUE(seg.ok()) << why(seg);
    // shared[t][i]: id thread t got for the name both create; own[t][i]: its own name.
    std::array<std::vector<int>, 2> shared, own;
    std::atomic<int> arrived{0};
    auto worker = [&](int t) {
      shared[t].assign(kSteps, -1);
      own[t].assign(kSteps, -1);
      for (int i = 0; i < kSteps; ++i) {
        // Meet the other thread before each step so that both hit the same entry at
        // the same moment; yield so a descheduled partner gets the core.
        arrived.fetch_add(1, std::memory_order_acq_rel);
        while (arrived.load(std::memory_order_acquire) < 2 * (i + 1)) std::this_thread::yield();
        auto a = seg->create_queue("s" + std::to_string(i));
        auto b = seg->create_queue("t" + std::to_string(t) + "-" + std::to_string(i));
        shared[t][i] = a.ok() ? a.value() : -static_cast<int>(a.code());
        own[t][i] = b.ok() ? b.value() : -static_cast<int>(b.code());
      }
    };
    std::thread t0(worker, 0), t1(worker, 1);
    t0.join();
    t1.join();

    std::set<int> all;
    for (int i = 0; i < kSteps; ++i) {
      ASSERT_GE(shared[0][i], 0) << "round " << round << " step " << i;
      ASSERT_EQ(shared[0][i], shared[1][i]) << "round " << round << " step " << i;
      ASSERT_GE(own[0][i], 0);
      ASSERT_GE(own[1][i], 0);
      EXPECT_EQ(seg->find_queue("s" + std::to_string(i)).value(), shared[0][i]);
      all.insert(shared[0][i]);
      all.insert(own[0][i]);
      all.insert(own[1][i]);
    }
    EXPECT_EQ(all.size(), 3u * kSteps) << "two names share a queue (round " << round << ")";
    EXPECT_EQ(seg->queues().size(), 3u * kSteps);
  }
}

// ---------------------------------------------------------------------------------
// Participant table

TEST(SegmentParticipants, FullTableThenSlotFreedByDetach) {
  Layout l = small_layout();
  l.max_participants = 3;
  auto seg = Segment::create_private(l, with_queues({"general"}));
  ASSERT_TRUE(seg.ok()) << why(seg);
  std::vector<Client> clients;
  std::set<std::uint16_t> tokens;
  for (std::uint32_t i = 0; i < l.max_participants; ++i) {
    auto c = Client::attach(*seg);
    ASSERT_TRUE(c.ok()) << why(c);
    EXPECT_TRUE(tokens.insert(c->token()).second);
    clients.push_back(std::move(c.value()));
  }
  auto extra = Client::attach(*seg);
  EXPECT_EQ(extra.code(), Errc::participant_table_full);
  EXPECT_TRUE(has_detail(extra));

  const std::uint16_t old_token = clients[1].token();
  clients[1].detach();
  auto again = Client::attach(*seg);
  ASSERT_TRUE(again.ok()) << why(again);
  // The slot comes back with a new epoch, so the old token stays fenced.
  EXPECT_NE(again->token(), old_token);
  EXPECT_EQ(detail::token_index(again->token()), detail::token_index(old_token));
  EXPECT_EQ(Client::attach(*seg).code(), Errc::participant_table_full);

  // The new participant works.
  const QueueId q = seg->find_queue("general").value();
  ASSERT_EQ(again->enqueue_text("t", "x", on(q)), Errc::ok);
  Taken t;
  ASSERT_TRUE(clients[0].try_take(q, t));
  EXPECT_EQ(clients[0].complete(t), Errc::ok);

  // Dropping every handle frees every slot.
  clients.clear();
  again->detach();
  for (std::uint32_t i = 0; i < l.max_participants; ++i) {
    auto c = Client::attach(*seg);
    ASSERT_TRUE(c.ok()) << "attach " << i << ": " << why(c);
    clients.push_back(std::move(c.value()));
  }
}

// Inspecting a fresh default segment (what `shmctl stat` does) reads only the records
// ever used: tmpfs allocates a page for every page read, and the control words of 65,536
// records alone are 1 MiB. Allocated blocks before and after must stay close.
TEST(SegmentNamed, InspectingAFreshSegmentDoesNotAllocateItsTaskTable) {
  NameGuard g;
  Layout l;  // defaults: 65,536 records
  auto s = Segment::create(g.name(), l, with_queues({"general"}));
  ASSERT_TRUE(s.ok()) << why(s);
  auto blocks = [&] {
    struct stat st {};
    return ::stat(g.path().c_str(), &st) == 0 ? static_cast<std::int64_t>(st.st_blocks) * 512 : -1;
  };
  const std::int64_t before = blocks();
  ASSERT_GE(before, 0);
  const Snapshot snap = inspect(*s);
  EXPECT_EQ(snap.records.reservable(), l.task_capacity);
  const std::int64_t grown = blocks() - before;
  EXPECT_LT(grown, 256 * 1024) << "inspect made tmpfs allocate " << grown << " bytes";
}

// A /dev/shm smaller than the layout: create fails cleanly, naming what it needs, and
// leaves nothing behind; a segment that fits is created with every page reserved, so
// touching all of it cannot SIGBUS. Runs in a child with its own mount namespace and a
// 1 MiB tmpfs on /dev/shm (needs root or CAP_SYS_ADMIN).
TEST(SegmentNamed, CreateOnAFullDevShmFailsCleanlyAndACreatedSegmentNeverSigbuses) {
  enum : int { kOk = 0, kNoNamespace = 10, kWrongError = 11, kLeftBehind = 12, kSmallFailed = 13, kTouchFailed = 14 };
  const pid_t pid = test::spawn([] {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=1m") != 0)
      return int{kNoNamespace};
    Layout big = small_layout();
    big.task_capacity = 65536;  // several MiB of records
    auto r = Segment::create("nospace", big, with_queues({"general"}));
    if (r.ok() || r.code() != Errc::no_space ||
        r.error().message().find("not enough space in /dev/shm") == std::string::npos ||
        r.error().message().find("need ") == std::string::npos)
      return int{kWrongError};
    if (::access("/dev/shm/shmsched.nospace", F_OK) == 0) return int{kLeftBehind};
    auto small = Segment::create("fits", small_layout(), with_queues({"general"}));
    if (!small.ok()) return int{kSmallFailed};
    // Fill the rest of the tmpfs: the segment's pages are already its own.
    const int fd = ::open("/dev/shm/filler", O_CREAT | O_RDWR, 0600);
    std::vector<char> chunk(4096, 'x');
    while (fd >= 0 && ::write(fd, chunk.data(), chunk.size()) > 0) {
    }
    auto* bytes = reinterpret_cast<volatile unsigned char*>(&detail::core_of(*small).header->magic);
    for (std::size_t i = 0; i < small->size_bytes(); i += 4096) bytes[i] = bytes[i];
    auto client = Client::attach(*small);
    if (!client.ok()) return int{kTouchFailed};
    return int{kOk};
  });
  const auto s = test::wait_child(pid, 60s);
  if (s.exited && s.code == kNoNamespace) GTEST_SKIP() << "no private mount namespace here (needs root)";
  EXPECT_TRUE(s.ok()) << test::describe(s) << " (10 no namespace, 11 wrong error, 12 object left behind, "
                      << "13 a fitting segment failed, 14 attach failed)";
}

// Errors say what happened once, and say what is at the path.
TEST(SegmentNamed, ErrorMessagesDoNotRepeatThemselvesAndNameWhatIsThere) {
  NameGuard g;
  ASSERT_TRUE(Segment::create(g.name(), small_layout(), with_queues({"general"})).ok());
  const auto again = Segment::create(g.name(), small_layout(), with_queues({"general"}));
  ASSERT_EQ(again.code(), Errc::exists);
  EXPECT_EQ(again.error().message(), "segment already exists: '" + g.name() + "'");
  ASSERT_TRUE(Segment::destroy(g.name()).ok());
  EXPECT_EQ(Segment::destroy(g.name()).error().message(), "no such segment: '" + g.name() + "'");

  const std::string path = test::shm_path(g.name());
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  auto fifo = Segment::open(g.name());
  EXPECT_EQ(fifo.code(), Errc::foreign_segment);
  EXPECT_NE(fifo.error().message().find("is a FIFO"), std::string::npos) << fifo.error().message();
  ::unlink(path.c_str());
  ASSERT_EQ(::mkdir(path.c_str(), 0700), 0);
  auto dir = Segment::open(g.name());
  EXPECT_EQ(dir.code(), Errc::foreign_segment);
  EXPECT_NE(dir.error().message().find("is a directory"), std::string::npos) << dir.error().message();
  ::rmdir(path.c_str());
}

// value() on an error throws an exception that says what failed.
TEST(SegmentNamed, ValueOfAnErrorThrowsWithTheErrorsMessage) {
  NameGuard g;
  try {
    (void)Segment::open(g.name()).value();
    FAIL() << "value() of an error returned";
  } catch (const BadResultAccess& e) {
    EXPECT_EQ(std::string(e.what()), "no such segment: '" + g.name() + "'");
    EXPECT_EQ(e.error().code(), Errc::not_found);
  }
}

// Opened read-only, a segment is mapped without write permission: looking works
// (inspect, dead letters, finding queues), and every call that would write is refused
// with a message instead of faulting on the mapping.
TEST(SegmentNamed, AReadOnlyOpenLooksAndRefusesEveryWrite) {
  NameGuard g;
  {
    auto s = Segment::create(g.name(), Layout{}, with_queues({"general"}));
    ASSERT_TRUE(s.ok()) << why(s);
    ASSERT_TRUE(s->create_semaphore("gpu", 2).ok());
    Client c = Client::attach(*s, Role::producer | Role::consumer).value();
    ASSERT_EQ(c.enqueue_text("t", "x", TaskOptions{.queue = "general"}), Errc::ok);
    Taken t;
    ASSERT_TRUE(c.try_take(s->find_queue("general").value(), t));
    ASSERT_EQ(c.dead_letter(t, "for the reader"), Errc::ok);
    ASSERT_EQ(c.enqueue_text("t", "y", TaskOptions{.queue = "general"}), Errc::ok);
  }
  OpenOptions oo;
  oo.read_only = true;
  auto r = Segment::open(g.name(), oo);
  ASSERT_TRUE(r.ok()) << why(r);
  EXPECT_TRUE(r->is_read_only());
  // The only mapping of the object in this process is read-only and shared.
  std::ifstream maps("/proc/self/maps");
  int mappings = 0;
  for (std::string line; std::getline(maps, line);)
    if (line.find(g.path()) != std::string::npos) {
      ++mappings;
      EXPECT_EQ(line.substr(line.find(' ') + 1, 4), "r--s") << line;
    }
  EXPECT_EQ(mappings, 1);

  const Snapshot snap = inspect(*r);
  EXPECT_EQ(snap.records[TaskState::dead], 1u);
  EXPECT_EQ(snap.queues.at(0).records[TaskState::queued], 1u);
  const auto dead = dead_letters(*r);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].reason, "for the reader");
  EXPECT_EQ(dead[0].type_name, "t");

  const QueueId general = r->find_queue("general").value();
  EXPECT_EQ(r->create_queue("general").value(), general);  // exists: returned, nothing written
  EXPECT_EQ(r->create_semaphore("gpu", 2).value(), r->find_semaphore("gpu").value());
  const auto refused = [](const Error& e) {
    return e.code() == Errc::permission_denied && e.message().find("read-only") != std::string::npos;
  };
  auto q = r->create_queue("other");
  ASSERT_FALSE(q.ok());
  EXPECT_TRUE(refused(q.error())) << q.error().message();
  auto m = r->create_semaphore("other", 1);
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(refused(m.error())) << m.error().message();
  auto p = r->set_paused(general, true);
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(refused(p.error())) << p.error().message();
  auto c = Client::attach(*r, Role::observer);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(refused(c.error())) << c.error().message();
}

// A segment this process may only read: a read-write open names the mode, the owner
// and this process's user; a read-only open works. In a child that gives up root's
// override of file modes.
TEST(SegmentNamed, ASegmentTheCallerMayOnlyReadOpensReadOnlyAndSaysWhyNotReadWrite) {
  NameGuard g;
  ASSERT_TRUE(Segment::create(g.name(), Layout{}, with_queues({"general"})).ok());
  ASSERT_EQ(::chmod(g.path().c_str(), 0444), 0);
  const pid_t pid = spawn([&] {
    if (::geteuid() == 0) {
      // Capabilities are per thread: this child has one thread.
      __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
      __user_cap_data_struct data[2] = {};
      if (::syscall(SYS_capget, &hdr, data) != 0) return 10;
      for (int cap : {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER})
        data[cap / 32].effective &= ~(1u << (cap % 32));
      if (::syscall(SYS_capset, &hdr, data) != 0) return 11;
    }
    auto rw = Segment::open(g.name());
    if (rw.ok() || rw.code() != Errc::permission_denied) return 12;
    const std::string msg = rw.error().message();
    if (msg.find("mode 0444") == std::string::npos || msg.find("read and written") == std::string::npos) return 13;
    OpenOptions oo;
    oo.read_only = true;
    auto ro = Segment::open(g.name(), oo);
    if (!ro.ok()) return 14;
    return inspect(*ro).queues.size() == 1 ? 0 : 15;
  });
  const ExitStatus st = wait_child(pid, std::chrono::seconds(30));
  EXPECT_TRUE(st.exited && st.code == 0) << describe(st) << " (10-11: capabilities, 12-13: read-write open, 14-15: "
                                         << "read-only open)";
}
