// IndexRing on its own, driven by a minimal record table with the same takeability
// rule the task table uses: a record is takeable at position p iff it is `queued` and
// its `where` is p. Typed over ring sizes 2, 4 and 1024.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
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

// A record's state word is built as the task table's is: the kind in the low two bits
// and a version above them that every change moves on. Without the version a claim that
// read "queued at p" could still succeed after the record was taken, made idle and
// queued again elsewhere (ABA), and deliver one push twice; the task table's
// generation rules that out, and so does this.
constexpr std::uint64_t kind(std::uint64_t s) {
  return s & 3;
}
constexpr std::uint64_t moved_to(std::uint64_t s, std::uint64_t k) {
  return (((s >> 2) + 1) << 2) | k;
}

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
      recs[v].state.store(moved_to(recs[v].state.load(std::memory_order_relaxed), kQueued), std::memory_order_release);
      return true;
    };
    auto stale = [&](std::uint64_t pos, std::uint32_t x) {
      return x >= recs.size() || kind(recs[x].state.load()) != kQueued || recs[x].where.load() != pos;
    };
    return ring.try_push(v, prepare, stale, cursor);
  }
  // The run v .. v + n - 1 as one entry.
  PushStatus push_run(std::uint32_t v, std::uint32_t n) {
    auto prepare = [&](std::uint64_t pos) {
      for (std::uint32_t k = 0; k < n; ++k) {
        recs[v + k].where.store(pos, std::memory_order_relaxed);
        recs[v + k].state.store(moved_to(recs[v + k].state.load(std::memory_order_relaxed), kQueued),
                                std::memory_order_release);
      }
      return true;
    };
    auto stale = [&](std::uint64_t pos, std::uint32_t x) {
      return x >= recs.size() || kind(recs[x].state.load()) != kQueued || recs[x].where.load() != pos;
    };
    return ring.try_push(v, prepare, stale, nullptr, n);
  }
  std::vector<std::uint32_t> pop_many(std::size_t max) {
    std::vector<std::uint32_t> got;
    const std::size_t n = ring.try_pop_many([&](std::uint64_t pos, std::uint32_t v) { return claim(pos, v); }, max,
                                            [&](std::uint32_t v) { got.push_back(v); });
    EXPECT_EQ(n, got.size());
    return got;
  }
  Claim claim(std::uint64_t pos, std::uint32_t v) {
    if (v >= recs.size()) return Claim::stale;
    std::uint64_t s = recs[v].state.load(std::memory_order_acquire);
    if (kind(s) != kQueued || recs[v].where.load() != pos) return Claim::stale;
    return recs[v].state.compare_exchange_strong(s, moved_to(s, kTaken)) ? Claim::taken : Claim::stale;
  }
  // A consumer done with record v: idle again, for its producer to push anew.
  void release(std::uint32_t v) {
    recs[v].state.store(moved_to(recs[v].state.load(std::memory_order_relaxed), kIdle), std::memory_order_release);
  }
  // Record x queued, claimed by a popper that then dies (its CAS, nothing after).
  bool claim_and_die(std::uint32_t x) {
    std::uint64_t s = recs[x].state.load();
    return kind(s) == kQueued && recs[x].state.compare_exchange_strong(s, moved_to(s, kTaken));
  }
  bool pop(std::uint32_t& out, std::atomic<std::uint64_t>* cursor = nullptr) {
    return ring.try_pop([&](std::uint64_t pos, std::uint32_t v) { return claim(pos, v); }, out, cursor);
  }
  // As a consumer process takes: one look at its cursor, the front pop when the head
  // holds a single value, else the full pop.
  bool look_then_pop(std::uint32_t& out, std::atomic<std::uint64_t>& cursor) {
    const std::uint64_t pos = cursor.load();
    const std::uint64_t w = ring.look(pos);
    if (ring.empty_in(pos, w)) return false;
    if (pop_front(pos, w, out, cursor)) return true;
    return pop(out, &cursor);
  }
  bool pop_front(std::uint64_t pos, std::uint64_t w, std::uint32_t& out, std::atomic<std::uint64_t>& cursor) {
    return ring.pop_front(
        pos, w, [&](std::uint64_t p, std::uint32_t v) { return claim(p, v); }, [&](std::uint32_t v) { out = v; },
        cursor, [](std::uint64_t, std::uint32_t, std::uint32_t) {});
  }
  // pop_front at the cursor as it is now.
  bool pop_front(std::uint32_t& out, std::atomic<std::uint64_t>& cursor) {
    const std::uint64_t pos = cursor.load();
    return pop_front(pos, ring.look(pos), out, cursor);
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
  EXPECT_EQ(kind(h.recs[cap].state.load()), kIdle);  // refused: not published
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
  ASSERT_TRUE(h.claim_and_die(0));
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

// Cursors: none (every pop walks from the shared hints), one per thread, or one per
// side shared by its threads (as a Client shared by a process's threads keeps them:
// plain stores, any value ever stored valid).
enum class Cursors { none, own, shared };

template <class H>
void run_mpmc(H& h, Cursors mode) {
  const bool cursors = mode != Cursors::none;
  std::atomic<std::uint64_t> shared_push{0}, shared_pop{0};
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
      std::atomic<std::uint64_t> own{0};
      std::atomic<std::uint64_t>& cursor = mode == Cursors::shared ? shared_push : own;
      for (int r = 0; r < kRounds; ++r)
        for (std::uint32_t v = static_cast<std::uint32_t>(p); v < n; v += kThreads) {
          while (kind(h.recs[v].state.load(std::memory_order_acquire)) != kIdle) std::this_thread::yield();
          while (h.push(v, cursors ? &cursor : nullptr) != PushStatus::ok) std::this_thread::yield();
        }
      producers_done.fetch_add(1);
    });
  for (int c = 0; c < kThreads; ++c)
    ts.emplace_back([&] {
      std::uint32_t v;
      std::atomic<std::uint64_t> own{0};
      std::atomic<std::uint64_t>& cursor = mode == Cursors::shared ? shared_pop : own;
      for (;;) {
        const bool finished = producers_done.load() == kThreads;  // read before the pop
        if (cursors ? h.look_then_pop(v, cursor) : h.pop(v)) {
          got[v].fetch_add(1);
          delivered.fetch_add(1);
          h.release(v);
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
  run_mpmc(h, Cursors::none);
}

TYPED_TEST(RingTyped, MpmcThreadsWithOwnCursorsDeliverEveryValueOnce) {
  TypeParam h;
  run_mpmc(h, Cursors::own);
}

// Through the front pop and the walk alike, with the cursor races a shared Client has.
TYPED_TEST(RingTyped, MpmcThreadsSharingCursorsDeliverEveryValueOnce) {
  TypeParam h;
  run_mpmc(h, Cursors::shared);
}

// ---- the front pop: a single value at the caller's cursor -------------------------

TYPED_TEST(RingTyped, PopFrontTakesTheSingleValueAtTheCursorAndHandsTheSlotOn) {
  TypeParam h;
  std::atomic<std::uint64_t> cursor{0};
  for (std::uint32_t i = 0; i < 3 * TypeParam::kCap; ++i) {  // laps over every slot
    const std::uint32_t v = 5 + i % 7;
    ASSERT_EQ(h.push(v), PushStatus::ok) << i;
    std::uint32_t out = 999;
    ASSERT_TRUE(h.pop_front(out, cursor)) << i;
    EXPECT_EQ(out, v);
    EXPECT_EQ(kind(h.recs[v].state.load()), kTaken);
    EXPECT_EQ(cursor.load(), i + 1u) << "the cursor moves past the position taken";
    EXPECT_TRUE(h.ring.empty_at(i + 1)) << "nothing after it";
    EXPECT_EQ(h.ring.depth_guess(), 0u) << "the slot was cleared for the next lap";
    // The shared head hint moves on every fourth position, as try_pop_many's does.
    EXPECT_EQ(h.header.head.load(), (i + 1u) / 4 * 4) << i;
    h.recs[v].state.store(kIdle);
  }
  std::uint32_t out;
  EXPECT_FALSE(h.pop(out));
}

// The word the caller looked at decides, not the record alone: a record takeable at the
// cursor's position is not taken while the slot is still empty (its producer between
// queuing it and publishing it), nor through an entry of another lap.
TYPED_TEST(RingTyped, PopFrontTakesOnlyAnEntryOfTheCursorsLap) {
  TypeParam h;
  std::atomic<std::uint64_t> cursor{0};
  std::uint32_t out = 999;
  // Record 0 queued at position 0 (S1 done), the slot still EMPTY of lap 0 (R3 not yet):
  // that word decodes as value 0, run 1.
  h.recs[0].where.store(0);
  h.recs[0].state.store(kQueued);
  EXPECT_FALSE(h.pop_front(0, h.ring.look(0), out, cursor));
  EXPECT_EQ(kind(h.recs[0].state.load()), kQueued) << "not claimed";
  EXPECT_TRUE(h.ring.empty_at(0)) << "the slot is unchanged";
  EXPECT_EQ(cursor.load(), 0u);
  h.recs[0].state.store(kIdle);

  // An entry of lap 1 in the slot of position 0, its record (wrongly) naming position 0:
  // a cursor still at 0 must not take it.
  const std::uint64_t cap = TypeParam::kCap;
  std::atomic<std::uint64_t> ahead_cursor{0};
  for (std::uint64_t p = 0; p < cap; ++p) {  // fill and drain lap 0
    ASSERT_EQ(h.push(1), PushStatus::ok);
    ASSERT_TRUE(h.pop(out, &ahead_cursor));
    h.recs[1].state.store(kIdle);
  }
  ASSERT_EQ(h.push(2), PushStatus::ok);  // position cap: lap 1, the slot of position 0
  ASSERT_EQ(h.recs[2].where.load(), cap);
  h.recs[2].where.store(0);
  EXPECT_FALSE(h.pop_front(0, h.ring.look(0), out, cursor));
  EXPECT_EQ(kind(h.recs[2].state.load()), kQueued) << "not claimed";
  EXPECT_TRUE(h.ring.holds(cap, 2)) << "the entry is still there";
}

TYPED_TEST(RingTyped, PopFrontLeavesEveryOtherCaseUnchangedForTryPop) {
  TypeParam h;
  std::atomic<std::uint64_t> cursor{0};
  std::uint32_t out = 999;
  EXPECT_FALSE(h.pop_front(out, cursor)) << "empty";
  EXPECT_EQ(cursor.load(), 0u);

  // A run of three: the front pop takes single values only.
  ASSERT_EQ(h.push_run(10, 3), PushStatus::ok);
  EXPECT_FALSE(h.pop_front(out, cursor));
  EXPECT_EQ(kind(h.recs[10].state.load()), kQueued) << "not claimed";
  EXPECT_TRUE(h.ring.holds(0, 10));
  EXPECT_EQ(h.pop_many(3), (std::vector<std::uint32_t>{10, 11, 12}));

  // A leftover (its record no longer queued there): refused and left in place; the
  // full pop clears it.
  ASSERT_EQ(h.push(13), PushStatus::ok);  // at position 1, after the run
  const std::uint64_t at = 1;
  cursor.store(at);
  h.recs[13].state.store(kIdle);
  EXPECT_FALSE(h.pop_front(out, cursor));
  EXPECT_TRUE(h.ring.holds(at, 13)) << "the entry is still there";
  EXPECT_EQ(cursor.load(), at);
  EXPECT_FALSE(h.pop(out, &cursor)) << "the full pop clears the leftover and finds the ring empty";
  EXPECT_EQ(h.ring.depth_guess(), 0u);

  // A cursor behind, at a position consumed already: refused.
  std::atomic<std::uint64_t> behind{0};
  ASSERT_EQ(h.push(14), PushStatus::ok);
  EXPECT_FALSE(h.pop_front(out, behind));
  EXPECT_EQ(kind(h.recs[14].state.load()), kQueued);
  ASSERT_TRUE(h.pop(out, &behind));
  EXPECT_EQ(out, 14u);
}

// The front pop and the walk are one pop: on the same histories (pushes of values and
// runs, leftovers, takes of one or several), a ring taken from as the engine takes
// (one look at the cursor; for a single take the front pop from that look, else the
// walk) and a ring taken from by the walk alone give the same values in the same order
// and end in the same state.
TYPED_TEST(RingTyped, FrontPopThenWalkAndTheWalkAloneGiveTheSameOnTheSameHistories) {
  for (std::uint32_t seed = 1; seed <= 50; ++seed) {
    TypeParam a, b;
    std::atomic<std::uint64_t> ca{0}, cb{0};
    std::uint64_t rng = seed * 0x9E3779B97F4A7C15ULL;
    auto next = [&](std::uint32_t n) {
      rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
      return static_cast<std::uint32_t>(rng % n);
    };
    std::vector<std::uint32_t> idle;
    for (std::uint32_t v = 0; v < 4 * TypeParam::kCap; ++v) idle.push_back(v);
    auto pops = [](auto& h, std::size_t max, std::atomic<std::uint64_t>& cursor, std::vector<std::uint32_t>& got) {
      h.ring.try_pop_many([&](std::uint64_t p, std::uint32_t v) { return h.claim(p, v); }, max,
                          [&](std::uint32_t v) { got.push_back(v); }, &cursor,
                          [](std::uint64_t, std::uint32_t, std::uint32_t) {});
    };
    for (int step = 0; step < 400; ++step) {
      const std::uint32_t op = next(10);
      if (op < 4 && !idle.empty()) {  // push one value, or a run of consecutive idle ones
        const std::uint32_t v = idle[next(static_cast<std::uint32_t>(idle.size()))];
        std::uint32_t n = 1;
        while (op == 3 && n < 3 && std::find(idle.begin(), idle.end(), v + n) != idle.end()) ++n;
        const PushStatus sa = n == 1 ? a.push(v) : a.push_run(v, n);
        const PushStatus sb = n == 1 ? b.push(v) : b.push_run(v, n);
        ASSERT_EQ(sa, sb) << seed << " " << step;
        if (sa == PushStatus::ok)
          for (std::uint32_t k = 0; k < n; ++k) idle.erase(std::find(idle.begin(), idle.end(), v + k));
      } else if (op == 4) {  // a queued record goes idle behind the ring's back: a leftover
        for (std::uint32_t v = 0; v < a.recs.size(); ++v)
          if (kind(a.recs[v].state.load()) == kQueued && next(4) == 0) {
            a.release(v);
            b.release(v);
            idle.push_back(v);
            break;
          }
      } else {  // a take of one, or of up to three
        const std::size_t max = op < 8 ? 1 : 1 + next(3);
        std::vector<std::uint32_t> ga, gb;
        const std::uint64_t pos = ca.load();
        const std::uint64_t w = a.ring.look(pos);
        std::uint32_t v = 0;
        if (!a.ring.empty_in(pos, w)) {
          if (max == 1 && a.pop_front(pos, w, v, ca))
            ga.push_back(v);
          else
            pops(a, max, ca, ga);
        }
        pops(b, max, cb, gb);
        ASSERT_EQ(ga, gb) << seed << " " << step;
        for (std::uint32_t x : ga) {
          a.release(x);
          b.release(x);
          idle.push_back(x);
        }
      }
      ASSERT_EQ(a.ring.depth_guess(), b.ring.depth_guess()) << seed << " " << step;
    }
    for (std::uint32_t v = 0; v < a.recs.size(); ++v) ASSERT_EQ(a.recs[v].state.load(), b.recs[v].state.load());
  }
}

// A pusher whose prepare is slow (as a batch's run is) keeps losing the tail to a fast
// pusher-and-popper. The ring never holds more than two entries, so its push must end
// in ok, never in `full`, however many slots it walks past meanwhile.
TYPED_TEST(RingTyped, APusherThatKeepsLosingTheTailIsNotToldTheRingIsFull) {
  TypeParam h;
  std::atomic<bool> slow_done{false};
  std::atomic<bool> fast_stop{false};
  std::thread fast([&] {
    const std::uint32_t v = 1;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(5);
    std::uint32_t out = 0;
    while (!slow_done.load() && std::chrono::steady_clock::now() < until) {
      h.recs[v].state.store(kIdle);
      if (h.push(v) == PushStatus::ok) {
        while (!h.pop(out)) {
        }
      }
    }
    fast_stop.store(true);
  });
  const std::uint32_t v = 0;
  auto prepare = [&](std::uint64_t pos) {
    std::this_thread::sleep_for(std::chrono::microseconds(20));  // slow, as a long run is
    h.recs[v].where.store(pos, std::memory_order_relaxed);
    h.recs[v].state.store(moved_to(h.recs[v].state.load(std::memory_order_relaxed), kQueued),
                          std::memory_order_release);
    return true;
  };
  auto stale = [&](std::uint64_t pos, std::uint32_t x) {
    return x >= h.recs.size() || kind(h.recs[x].state.load()) != kQueued || h.recs[x].where.load() != pos;
  };
  const PushStatus st = h.ring.try_push(v, prepare, stale);
  slow_done.store(true);
  fast.join();
  EXPECT_EQ(st, PushStatus::ok) << "a sound ring of two entries at most reported full";
  EXPECT_TRUE(fast_stop.load());
}

// ---- runs: several consecutive values in one entry ---------------------------------

TYPED_TEST(RingTyped, ARunIsOneEntryTakenFromItsFront) {
  TypeParam h;
  ASSERT_EQ(h.push_run(10, 5), PushStatus::ok);  // 10..14 in one slot
  ASSERT_EQ(h.push(3), PushStatus::ok);          // after it, if the ring has room
  EXPECT_EQ(h.ring.values_guess(), 6u);
  EXPECT_EQ(h.ring.depth_guess(), 2u) << "two entries";
  EXPECT_TRUE(h.ring.holds(0, 12));
  EXPECT_FALSE(h.ring.holds(0, 15));
  std::uint32_t v = 0;
  ASSERT_TRUE(h.pop(v));
  EXPECT_EQ(v, 10u);
  EXPECT_FALSE(h.ring.holds(0, 10)) << "the entry moved on past the value taken";
  EXPECT_TRUE(h.ring.holds(0, 11));
  EXPECT_EQ(h.pop_many(3), (std::vector<std::uint32_t>{11, 12, 13}));
  // The last value of the run, then the next entry, in one call.
  EXPECT_EQ(h.pop_many(10), (std::vector<std::uint32_t>{14, 3}));
  EXPECT_TRUE(h.pop_many(10).empty());
  EXPECT_EQ(h.ring.depth_guess(), 0u);
}

TYPED_TEST(RingTyped, RunsKeepFifoOverManyLaps) {
  TypeParam h;
  const auto cap = TypeParam::kCap;
  std::uint32_t next_out = 0;
  for (int lap = 0; lap < 20; ++lap) {
    // Fill every slot with a run of 3, then drain with takes of 2: runs split across calls.
    for (std::uint32_t i = 0; i < cap; ++i) {
      for (std::uint32_t k = 0; k < 3; ++k) h.recs[3 * i + k].state = kIdle;
      ASSERT_EQ(h.push_run(3 * i, 3), PushStatus::ok) << i;
    }
    EXPECT_EQ(h.push_run(3 * cap, 3), PushStatus::full);
    for (std::uint32_t taken = 0; taken < 3 * cap;) {
      const auto got = h.pop_many(2);
      ASSERT_FALSE(got.empty());
      for (std::uint32_t v : got) EXPECT_EQ(v, next_out++ % (3 * cap));
      taken += static_cast<std::uint32_t>(got.size());
    }
    EXPECT_TRUE(h.pop_many(1).empty());
  }
}

TYPED_TEST(RingTyped, MembersClaimedByADeadPopperAreSkipped) {
  TypeParam h;
  ASSERT_EQ(h.push_run(0, 4), PushStatus::ok);
  // A popper claims values 0 and 1 (their CASes) and dies before moving the entry on.
  for (std::uint32_t x : {0u, 1u}) ASSERT_TRUE(h.claim_and_die(x));
  EXPECT_EQ(h.pop_many(1), (std::vector<std::uint32_t>{2}));
  EXPECT_EQ(h.pop_many(5), (std::vector<std::uint32_t>{3}));
  EXPECT_TRUE(h.pop_many(5).empty());
}

TYPED_TEST(RingTyped, ARunOfLeftoversIsClearedByPushAndNotDelivered) {
  TypeParam h;
  const auto cap = TypeParam::kCap;
  for (std::uint32_t i = 0; i < cap; ++i) ASSERT_EQ(h.push_run(2 * i, 2), PushStatus::ok);
  // Slot 0's run: one value still takeable, so the ring is really full there.
  h.recs[0].state = kTaken;
  EXPECT_EQ(h.push(4 * cap), PushStatus::full);
  // Both values claimed by poppers that died: the entry is a leftover and gives way.
  h.recs[1].state = kTaken;
  ASSERT_EQ(h.push(4 * cap), PushStatus::ok);
  std::vector<std::uint32_t> all;
  for (auto got = h.pop_many(3); !got.empty(); got = h.pop_many(3)) all.insert(all.end(), got.begin(), got.end());
  std::vector<std::uint32_t> want;
  for (std::uint32_t i = 1; i < cap; ++i) {
    want.push_back(2 * i);
    want.push_back(2 * i + 1);
  }
  want.push_back(4 * cap);
  EXPECT_EQ(all, want);
}

TEST(RingRuns, ConcurrentPoppersShareARunAndTakeEachValueOnce) {
  // Two threads pop single values and stretches from runs of 64 while a third pushes
  // them: every value is taken exactly once, and each popper sees its values in order.
  Harness<64> h;
  constexpr std::uint32_t kRuns = 2000, kRun = 64;
  h.recs = std::vector<Rec>(kRun * kRuns);  // run r holds values 64 r .. 64 r + 63
  std::vector<std::atomic<std::uint32_t>> seen(kRun * kRuns);
  std::atomic<std::uint32_t> done{0};
  std::thread producer([&] {
    for (std::uint32_t r = 0; r < kRuns; ++r)
      while (h.push_run(r * kRun, kRun) != PushStatus::ok) std::this_thread::yield();
  });
  auto popper = [&](std::size_t max) {
    std::uint32_t last = 0;
    bool any = false;
    while (done.load() < kRun * kRuns) {
      std::vector<std::uint32_t> got;
      h.ring.try_pop_many([&](std::uint64_t pos, std::uint32_t v) { return h.claim(pos, v); }, max,
                          [&](std::uint32_t v) { got.push_back(v); });
      for (std::uint32_t v : got) {
        if (any) EXPECT_GT(v, last) << "a popper saw values out of ring order";
        last = v;
        any = true;
        seen[v].fetch_add(1);
        done.fetch_add(1);
      }
    }
  };
  std::thread a(popper, 1), b(popper, 7);
  producer.join();
  a.join();
  b.join();
  std::uint32_t wrong = 0;
  for (std::uint32_t v = 0; v < kRun * kRuns; ++v) wrong += seen[v].load() != 1;
  EXPECT_EQ(wrong, 0u) << "values taken other than exactly once";
}
