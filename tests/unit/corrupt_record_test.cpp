// A damaged task record or ring slot never takes down the process that reads it: every
// byte of a record (control words, hot line, payload, cold lines) and of its ring slot
// is flipped, one at a time, in a record that is queued, parked or dead-lettered, and
// then the image is taken from, unparked, reaped, inspected, listed and requeued. A
// record whose damage shows is quarantined (dead-lettered with a reason), never run
// with out-of-range fields; afterwards a fresh task still goes through.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;

namespace {

Layout corrupt_layout() {
  Layout l;
  l.task_capacity = 64;
  l.levels = 4;
  l.payload_bytes = 48;
  l.max_queues = 2;
  l.max_participants = 8;
  l.max_semaphores = 2;
  return l;
}

enum class Start { queued, parked, dead };

struct Image {
  Segment seg = Segment::create_private(corrupt_layout(), CreateOptions{0600, {"general"}}).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  QueueId q = seg.find_queue("general").value();
  SemId sem = seg.create_semaphore("s", 2).value();
  std::uint32_t index = 0;
  std::uint16_t rid = 0;  // the ring the record's entry is in

  explicit Image(Start start) {
    TaskOptions o;
    o.queue = q;
    o.priority = 2;
    o.needs[0] = Need{sem, 1};
    TaskId id = kNoTask;
    EXPECT_EQ(cli.enqueue_text("job", "payload bytes", o, &id), Errc::ok);
    index = detail::core_of(seg).id_index(id);
    rid = detail::core_of(seg).ring_id(q, 2);
    if (start == Start::queued) return;
    Taken t;
    EXPECT_TRUE(cli.try_take(q, t));
    if (start == Start::dead) {
      EXPECT_EQ(cli.dead_letter(t, "on purpose"), Errc::ok);
      return;
    }
    EXPECT_EQ(cli.set_capacity(sem, 0), Errc::ok);
    EXPECT_EQ(cli.acquire_for(t, t.needs), Client::Grant::parked);
    rid = detail::core_of(seg).park_ring_id(sem, 2);
  }

  // The bytes a test may damage: the record's control words, its body (hot line,
  // payload, cold lines), and the first slot of its ring.
  std::vector<std::pair<std::byte*, std::size_t>> regions() {
    auto& core = detail::core_of(seg);
    return {{reinterpret_cast<std::byte*>(&core.ctrl[index]), sizeof(detail::TaskCtrl)},
            {reinterpret_cast<std::byte*>(core.hot(index)), static_cast<std::size_t>(core.stride)},
            {reinterpret_cast<std::byte*>(rid < core.ring_count()
                                              ? core.ring_slots + std::uint64_t{rid} * core.ring_capacity
                                              : core.park_slots +
                                                    std::uint64_t{rid - core.ring_count()} * core.map.park_capacity),
             sizeof(std::uint64_t)}};
  }

  // Everything a consumer, the janitor and an operator do to a segment.
  void exercise() {
    const auto& l = corrupt_layout();
    auto take_all = [&] {
      Taken t;
      for (int i = 0; i < 8 && cli.try_take(q, t); ++i) {
        ASSERT_LT(t.queue, l.max_queues);
        ASSERT_LT(t.level, l.levels);
        ASSERT_LE(t.payload.size(), l.payload_bytes);
        if (cli.acquire_for(t, t.needs) == Client::Grant::granted) {
          cli.release_for(t, t.needs);
          (void)cli.complete(t);
        }
      }
    };
    (void)inspect(seg);
    (void)cli.dead_letters();
    take_all();
    (void)cli.set_capacity(sem, 2);  // unparks what waits for it
    take_all();
    (void)cli.reap_dead();
    (void)cli.janitor_tick(monotonic_ns());
    (void)cli.promote_due(monotonic_ns() + 3'600'000'000'000);
    (void)inspect(seg);
    for (const auto& d : cli.dead_letters()) (void)cli.requeue_dead(d.id);
    (void)cli.requeue_all_dead();
    take_all();
    (void)cli.verify_permits();
    (void)cli.dead_letters();
    (void)inspect(seg);
  }

  // A fresh task still goes all the way through.
  bool still_works() {
    TaskOptions o;
    o.queue = q;
    if (cli.enqueue_text("fresh", "x", o) != Errc::ok) return false;
    Taken t;
    for (int i = 0; i < 8; ++i) {
      if (!cli.try_take(q, t)) return false;
      if (t.type_name == "fresh") return cli.complete(t) == Errc::ok;
      (void)cli.complete(t);
    }
    return false;
  }
};

void flip_every_byte(Start start) {
  const std::size_t regions = Image(start).regions().size();
  for (std::size_t r = 0; r < regions; ++r) {
    const std::size_t size = Image(start).regions()[r].second;
    for (std::size_t off = 0; off < size; ++off) {
      for (const unsigned char mask : {0xFFu, 0x80u}) {
        Image img(start);
        std::byte* p = img.regions()[r].first + off;
        *p ^= static_cast<std::byte>(mask);
        img.exercise();
        ASSERT_FALSE(::testing::Test::HasFatalFailure()) << "region " << r << " byte " << off;
        EXPECT_TRUE(img.still_works()) << "region " << r << " byte " << off << " mask " << mask
                                       << ": a fresh task did not go through";
      }
    }
  }
}

}  // namespace

TEST(CorruptRecord, EveryByteOfAQueuedRecordAndItsSlot) {
  flip_every_byte(Start::queued);
}
TEST(CorruptRecord, EveryByteOfAParkedRecordAndItsSlot) {
  flip_every_byte(Start::parked);
}
TEST(CorruptRecord, EveryByteOfADeadLetterAndItsSlot) {
  flip_every_byte(Start::dead);
}

// The queue field's high byte (the case that crashed a worker and `dlq requeue`): the
// record is quarantined with a reason on take, and refused, unchanged, on requeue.
TEST(CorruptRecord, DamagedQueueIsQuarantinedOnTakeAndRefusedOnRequeue) {
  Image img(Start::queued);
  detail::core_of(img.seg).hot(img.index)->queue ^= 0xFF00;
  Taken t;
  EXPECT_FALSE(img.cli.try_take(img.q, t)) << "a damaged record was handed out";
  const auto dl = img.cli.dead_letters();
  ASSERT_EQ(dl.size(), 1u);
  EXPECT_NE(dl[0].reason.find("corrupt record"), std::string::npos) << dl[0].reason;
  EXPECT_EQ(img.cli.requeue_dead(dl[0].id), Errc::corrupt);
  EXPECT_EQ(img.cli.dead_letters().size(), 1u);
  EXPECT_TRUE(img.still_works());
}
