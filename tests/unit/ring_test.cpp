// IndexRing on its own, driven by a minimal record table with the same takeability
// rule the task table uses: a record is takeable at position p iff it is `queued` and
// its `where` is p. Typed over ring sizes 2, 4 and 1024.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "shmsched/ring.hpp"

using shmsched::Claim;
using shmsched::IndexRing;
using shmsched::PushStatus;
using shmsched::RingHeader;

namespace {

enum : std::uint64_t { kIdle = 0, kQueued = 1, kTaken = 2 };

struct Rec {
  std::atomic<std::uint64_t> state{kIdle};
  std::atomic<std::uint64_t> where{~0ull};
};

template <std::uint32_t N>
struct Harness {
  static constexpr std::uint32_t kCap = N;
  RingHeader header;
  std::unique_ptr<std::atomic<std::uint64_t>[]> slots { new std::atomic<std::uint64_t>[ N ]() };
  std::vector<Rec> recs = std::vector<Rec>(4 * N + 8);
  IndexRing<> ring{&header, slots.get(), N};

  PushStatus push(std::uint32_t v, std::atomic<std::uint64_t>* cursor = nullptr) {
    auto prepare = [&](std::uint64_t pos) {
      recs[v].where.store(pos, std::memory_order_relaxed);
      recs[v].state.store(kQueued, std::memory_order_release);
      return true;
    };
    auto stale = [&](std::uint64_t pos, std::uint32_t x) {
      return x >= recs.size() || recs[x].state.load() != kQueued || recs[x].where.load() != pos;
    };
    return ring.try_push(v, prepare, stale, cursor);
  }
  Claim claim(std::uint64_t pos, std::uint32_t v) {
    if (v >= recs.size()) return Claim::stale;
    std::uint64_t s = recs[v].state.load(std::memory_order_acquire);
    if (s != kQueued || recs[v].where.load() != pos) return Claim::stale;
    return recs[v].state.compare_exchange_strong(s, kTaken) ? Claim::taken : Claim::stale;
  }
  bool pop(std::uint32_t& out, std::atomic<std::uint64_t>* cursor = nullptr) {
    return ring.try_pop([&](std::uint64_t pos, std::uint32_t v) { return claim(pos, v); }, out, cursor);
  }
  // As a consumer process takes: the one-load look at its cursor first, then the pop.
  bool look_then_pop(std::uint32_t& out, std::atomic<std::uint64_t>& cursor) {
    if (ring.empty_at(cursor.load())) return false;
    return pop(out, &cursor);
  }
};

template <class T>
struct RingTyped : ::testing::Test {};
using Sizes = ::testing::Types<Harness<2>, Harness<4>, Harness<1024>>;
TYPED_TEST_SUITE(RingTyped, Sizes);

}  // namespace

TYPED_TEST(RingTyped, ZeroedMemoryIsAnEmptyRing) {
  TypeParam h;
  std::uint32_t v;
  EXPECT_FALSE(h.pop(v));
  EXPECT_EQ(h.ring.depth_guess(), 0u);
}

TYPED_TEST(RingTyped, FillsToCapacityRefusesMoreAndDrainsFifo) {
  TypeParam h;
  const auto cap = TypeParam::kCap;
  for (std::uint32_t i = 0; i < cap; ++i) ASSERT_EQ(h.push(i), PushStatus::ok) << i;
  EXPECT_EQ(h.push(cap), PushStatus::full);
  EXPECT_EQ(h.recs[cap].state.load(), kIdle);  // refused: not published
  EXPECT_EQ(h.ring.depth_guess(), cap);
  for (std::uint32_t i = 0; i < cap; ++i) {
    std::uint32_t v = 999999;
    ASSERT_TRUE(h.pop(v));
    EXPECT_EQ(v, i);
  }
  std::uint32_t v;
  EXPECT_FALSE(h.pop(v));
}

TYPED_TEST(RingTyped, WrapsManyLaps) {
  TypeParam h;
  const auto cap = TypeParam::kCap;
  std::uint32_t next_in = 0, next_out = 0;
  for (int lap = 0; lap < 50; ++lap) {
    for (std::uint32_t i = 0; i < cap; ++i) {
      const std::uint32_t v = next_in++ % h.recs.size();
      h.recs[v].state = kIdle;
      ASSERT_EQ(h.push(v), PushStatus::ok);
    }
    for (std::uint32_t i = 0; i < cap; ++i) {
      std::uint32_t v;
      ASSERT_TRUE(h.pop(v));
      EXPECT_EQ(v, next_out++ % h.recs.size());
    }
  }
  EXPECT_EQ(h.header.head.load(), 50ull * cap);
  EXPECT_EQ(h.header.tail.load(), 50ull * cap);
}

TYPED_TEST(RingTyped, LeftoverOfADeadConsumerIsSkippedByPop) {
  TypeParam h;
  if (TypeParam::kCap < 2) GTEST_FAIL();
  ASSERT_EQ(h.push(0), PushStatus::ok);
  ASSERT_EQ(h.push(1), PushStatus::ok);
  // A consumer claims record 0 (its CAS) and dies before clearing the slot.
  std::uint64_t s = kQueued;
  ASSERT_TRUE(h.recs[0].state.compare_exchange_strong(s, kTaken));
  std::uint32_t v = 77;
  ASSERT_TRUE(h.pop(v));
  EXPECT_EQ(v, 1u);  // the leftover was cleared on the way, not delivered again
  EXPECT_FALSE(h.pop(v));
}

TYPED_TEST(RingTyped, LeftoverAtTheTailIsClearedByPushNotCountedAsFull) {
  TypeParam h;
  const auto cap = TypeParam::kCap;
  for (std::uint32_t i = 0; i < cap; ++i) ASSERT_EQ(h.push(i), PushStatus::ok);
  // Every entry is claimed by consumers that die before clearing: the ring looks full
  // but holds only leftovers, so a producer must get through.
  for (std::uint32_t i = 0; i < cap; ++i) h.recs[i].state = kTaken;
  ASSERT_EQ(h.push(cap), PushStatus::ok);
  std::uint32_t v;
  ASSERT_TRUE(h.pop(v));
  EXPECT_EQ(v, cap);
}

TYPED_TEST(RingTyped, StaleHeadHintIsCaughtUp) {
  TypeParam h;
  ASSERT_EQ(h.push(0), PushStatus::ok);
  std::uint32_t v;
  ASSERT_TRUE(h.pop(v));
  h.header.head.store(0);  // a consumer died before advancing the hint
  ASSERT_EQ(h.push(1), PushStatus::ok);
  ASSERT_TRUE(h.pop(v));
  EXPECT_EQ(v, 1u);
}

TYPED_TEST(RingTyped, StaleTailHintIsCaughtUp) {
  TypeParam h;
  ASSERT_EQ(h.push(0), PushStatus::ok);
  h.header.tail.store(0);  // a producer died after publishing, before the hint
  ASSERT_EQ(h.push(1), PushStatus::ok);
  std::uint32_t v;
  ASSERT_TRUE(h.pop(v));
  EXPECT_EQ(v, 0u);
  ASSERT_TRUE(h.pop(v));
  EXPECT_EQ(v, 1u);
}

TYPED_TEST(RingTyped, AbortedPrepareLeavesRingUnchanged) {
  TypeParam h;
  auto stale = [](std::uint64_t, std::uint32_t) { return false; };
  EXPECT_EQ(h.ring.try_push(
                3, [](std::uint64_t) { return false; }, stale),
            PushStatus::aborted);
  std::uint32_t v;
  EXPECT_FALSE(h.pop(v));
  EXPECT_EQ(h.slots[0].load(), 0u);
}

TYPED_TEST(RingTyped, CorruptSlotValueIsClearedNotFollowed) {
  TypeParam h;
  // A FULL word naming a record beyond the table (corrupt segment).
  h.slots[0].store(IndexRing<>::full_word(0, (1u << 20) - 1));
  h.header.tail.store(1);
  ASSERT_EQ(h.push(5), PushStatus::ok);
  std::uint32_t v;
  ASSERT_TRUE(h.pop(v));
  EXPECT_EQ(v, 5u);
}

TYPED_TEST(RingTyped, GarbageLapsNeverOverwriteOrHang) {
  TypeParam h;
  for (std::uint32_t i = 0; i < TypeParam::kCap; ++i) h.slots[i].store(IndexRing<>::full_word(12345 + i, 1));
  std::uint32_t v;
  EXPECT_FALSE(h.pop(v));  // returns, does not loop forever
  const auto before = h.slots[0].load();
  EXPECT_NE(h.push(2), PushStatus::ok);
  EXPECT_EQ(h.slots[0].load(), before);
}

TYPED_TEST(RingTyped, CursorPopsInOrderAndEmptyAtIsExact) {
  TypeParam h;
  std::atomic<std::uint64_t> cursor{0};
  std::uint32_t v = 0;
  for (int lap = 0; lap < 5; ++lap) {
    EXPECT_TRUE(h.ring.empty_at(cursor.load()));
    EXPECT_FALSE(h.look_then_pop(v, cursor));
    for (std::uint32_t i = 0; i < TypeParam::kCap; ++i) ASSERT_EQ(h.push(i), PushStatus::ok);
    EXPECT_FALSE(h.ring.empty_at(cursor.load())) << "a filled ring must not look empty";
    for (std::uint32_t i = 0; i < TypeParam::kCap; ++i) {
      ASSERT_TRUE(h.look_then_pop(v, cursor));
      EXPECT_EQ(v, i);
      h.recs[v].state.store(kIdle);
    }
    EXPECT_EQ(cursor.load(), std::uint64_t{TypeParam::kCap} * (lap + 1));
  }
}

TYPED_TEST(RingTyped, PushCursorsOfTwoProducersKeepFifoAndNeverOverwrite) {
  TypeParam h;
  std::atomic<std::uint64_t> a{0}, b{0};
  std::uint32_t v = 0;
  for (int lap = 0; lap < 4; ++lap) {
    // Two producers alternate, each with its own cursor that lags behind the other's pushes.
    for (std::uint32_t i = 0; i < TypeParam::kCap; ++i) ASSERT_EQ(h.push(i, i % 2 == 0 ? &a : &b), PushStatus::ok);
    EXPECT_EQ(h.push(TypeParam::kCap, &a), PushStatus::full) << "a full ring must refuse, whatever the cursor";
    EXPECT_EQ(h.push(TypeParam::kCap + 1, &b), PushStatus::full);
    for (std::uint32_t i = 0; i < TypeParam::kCap; ++i) {
      ASSERT_TRUE(h.pop(v));
      EXPECT_EQ(v, i);
      h.recs[v].state.store(kIdle);
    }
  }
}

TYPED_TEST(RingTyped, LaggingCursorStillFindsTheOldestEntry) {
  TypeParam h;
  std::atomic<std::uint64_t> mine{0}, other{0};
  std::uint32_t v = 0;
  // Another consumer takes three laps' worth while ours looks away; our cursor is then
  // far behind and its slot holds entries of later laps.
  for (std::uint32_t k = 0; k < 3 * TypeParam::kCap + 1; ++k) {
    const std::uint32_t x = k % TypeParam::kCap;
    ASSERT_EQ(h.push(x), PushStatus::ok);
    ASSERT_TRUE(h.pop(v, &other));
    ASSERT_EQ(v, x);
    h.recs[v].state.store(kIdle);
  }
  ASSERT_EQ(h.push(7 % TypeParam::kCap), PushStatus::ok);
  EXPECT_FALSE(h.ring.empty_at(mine.load())) << "a stale cursor must not make the ring look empty";
  ASSERT_TRUE(h.look_then_pop(v, mine));
  EXPECT_EQ(v, 7 % TypeParam::kCap);
  EXPECT_GT(mine.load(), 3u * TypeParam::kCap);
  EXPECT_TRUE(h.ring.empty_at(mine.load()));
  EXPECT_FALSE(h.pop(v, &other));
}

template <class H>
void run_mpmc(H& h, bool cursors) {
  constexpr int kThreads = 2;
  const std::uint32_t n = static_cast<std::uint32_t>(h.recs.size());
  std::vector<std::atomic<int>> got(n);
  // Each value cycles: producer pushes it, a consumer takes it and marks it idle again,
  // then it may be pushed again. Values are partitioned between producers.
  std::atomic<int> producers_done{0};
  std::atomic<std::uint64_t> delivered{0};
  constexpr int kRounds = 2000;
  std::vector<std::thread> ts;
  for (int p = 0; p < kThreads; ++p)
    ts.emplace_back([&, p] {
      std::atomic<std::uint64_t> cursor{0};
      for (int r = 0; r < kRounds; ++r)
        for (std::uint32_t v = static_cast<std::uint32_t>(p); v < n; v += kThreads) {
          while (h.recs[v].state.load(std::memory_order_acquire) != kIdle) std::this_thread::yield();
          while (h.push(v, cursors ? &cursor : nullptr) != PushStatus::ok) std::this_thread::yield();
        }
      producers_done.fetch_add(1);
    });
  for (int c = 0; c < kThreads; ++c)
    ts.emplace_back([&] {
      std::uint32_t v;
      std::atomic<std::uint64_t> cursor{0};
      for (;;) {
        const bool finished = producers_done.load() == kThreads;  // read before the pop
        if (cursors ? h.look_then_pop(v, cursor) : h.pop(v)) {
          got[v].fetch_add(1);
          delivered.fetch_add(1);
          h.recs[v].state.store(kIdle, std::memory_order_release);
        } else if (finished) {
          break;
        } else {
          std::this_thread::yield();
        }
      }
    });
  for (auto& t : ts) t.join();
  std::uint32_t v;
  while (h.pop(v)) {
    got[v].fetch_add(1);
    delivered.fetch_add(1);
  }
  EXPECT_EQ(delivered.load(), static_cast<std::uint64_t>(kRounds) * n);
  for (std::uint32_t i = 0; i < n; ++i) EXPECT_EQ(got[i].load(), kRounds) << "value " << i;
}

TYPED_TEST(RingTyped, MpmcThreadsDeliverEveryValueOnce) {
  TypeParam h;
  run_mpmc(h, false);
}

TYPED_TEST(RingTyped, MpmcThreadsWithOwnCursorsDeliverEveryValueOnce) {
  TypeParam h;
  run_mpmc(h, true);
}
