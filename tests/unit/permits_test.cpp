// The semaphore layer alone (lib/src/permits.hpp): grants, releases, the holder ledger,
// the sweep and the audit, on entries in process memory, with holders as plain words
// and liveness as a predicate -- no segment, no engine.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <set>

#include "permits.hpp"

namespace shmsched::detail {
namespace {

constexpr std::uint64_t kA = 0xA1, kB = 0xB2, kC = 0xC3;

std::unique_ptr<SemaphoreEntry> entry_of(std::uint32_t capacity) {
  auto e = std::make_unique<SemaphoreEntry>();
  e->word.store(SemaphoreEntry::kReady);
  e->permits.store(std::uint64_t{capacity} << Permits::kSlots);
  return e;
}

std::uint32_t ledger_count(const SemaphoreEntry& e, std::uint64_t holder) {
  std::uint32_t n = 0;
  for (const auto& h : e.holders) n += h.load() == holder;
  return n;
}

std::uint32_t in_use(const SemaphoreEntry& e) {
  return Permits::in_use_of(e.permits.load());
}

TEST(Permits, GrantsUpToTheCapacityAndNamesEachHolderInTheLedger) {
  auto e = entry_of(3);
  EXPECT_TRUE(Permits::try_acquire(*e, 2, kA));
  EXPECT_FALSE(Permits::try_acquire(*e, 2, kB)) << "2 + 2 permits of a capacity of 3";
  EXPECT_EQ(ledger_count(*e, kB), 0u) << "a refused grant leaves no ledger slot claimed";
  EXPECT_TRUE(Permits::try_acquire(*e, 1, kB));
  EXPECT_FALSE(Permits::try_acquire(*e, 1, kC));
  EXPECT_EQ(in_use(*e), 3u);
  EXPECT_EQ(ledger_count(*e, kA), 2u);
  EXPECT_EQ(ledger_count(*e, kB), 1u);
  EXPECT_EQ(Permits::free_of(e->permits.load()), 0u);
  EXPECT_TRUE(Permits::try_acquire(*e, 0, kC)) << "nothing is always free";
  EXPECT_FALSE(Permits::try_acquire(*e, Permits::kSlots + 1, kC)) << "more than the ledger has";
}

TEST(Permits, ReleaseReturnsOnlyTheCallersPermitsAndAllOrNothing) {
  auto e = entry_of(4);
  ASSERT_TRUE(Permits::try_acquire(*e, 2, kA));
  ASSERT_TRUE(Permits::try_acquire(*e, 1, kB));
  EXPECT_EQ(Permits::release(*e, 1, kC), 0u) << "kC holds nothing";
  EXPECT_EQ(Permits::release(*e, 3, kA), 0u) << "kA holds 2, not 3: nothing changes";
  EXPECT_EQ(in_use(*e), 3u);
  EXPECT_EQ(Permits::release(*e, 1, kA), 1u);
  EXPECT_EQ(ledger_count(*e, kA), 1u);
  EXPECT_EQ(Permits::release(*e, UINT32_MAX, kA), 1u) << "all it holds";
  EXPECT_EQ(ledger_count(*e, kA), 0u);
  EXPECT_EQ(in_use(*e), 1u);
  EXPECT_EQ(Permits::release(*e, UINT32_MAX, kB), 1u);
  EXPECT_EQ(in_use(*e), 0u);
  EXPECT_EQ(Permits::free_of(e->permits.load()), 4u);
}

TEST(Permits, ShrinkingKeepsGrantsAndStopsNewOnesUntilBelow) {
  auto e = entry_of(3);
  ASSERT_TRUE(Permits::try_acquire(*e, 3, kA));
  Permits::set_capacity(*e, 1);
  EXPECT_EQ(Permits::capacity(*e), 1u);
  EXPECT_EQ(in_use(*e), 3u) << "a shrink takes no permit back";
  EXPECT_EQ(Permits::free_of(e->permits.load()), 0u);
  ASSERT_EQ(Permits::release(*e, 2, kA), 2u);
  EXPECT_FALSE(Permits::try_acquire(*e, 1, kB)) << "one in use of a capacity of 1";
  ASSERT_EQ(Permits::release(*e, 1, kA), 1u);
  EXPECT_TRUE(Permits::try_acquire(*e, 1, kB));
}

TEST(Permits, SweepReturnsExactlyThePermitsOfHoldersThatAreGoneAndIsIdempotent) {
  auto e = entry_of(5);
  ASSERT_TRUE(Permits::try_acquire(*e, 2, kA));
  ASSERT_TRUE(Permits::try_acquire(*e, 2, kB));
  const std::set<std::uint64_t> alive{kB};
  auto holds = [&](std::uint64_t h) { return alive.count(h) != 0; };
  EXPECT_EQ(Permits::sweep(*e, holds), 2u);
  EXPECT_EQ(Permits::sweep(*e, holds), 0u) << "a second sweep finds nothing more";
  EXPECT_EQ(ledger_count(*e, kA), 0u);
  EXPECT_EQ(ledger_count(*e, kB), 2u);
  EXPECT_EQ(in_use(*e), 2u);
  EXPECT_EQ(Permits::audit(*e, holds), "");
}

TEST(Permits, AuditNamesAGrantWithoutAHolderAndAHolderThatIsGone) {
  auto e = entry_of(4);
  ASSERT_TRUE(Permits::try_acquire(*e, 1, kA));
  auto all = [](std::uint64_t) { return true; };
  EXPECT_EQ(Permits::audit(*e, all), "");
  e->permits.fetch_or(std::uint64_t{1} << 7);  // a bit set with no ledger slot behind it
  const std::string nobody = Permits::audit(*e, all);
  EXPECT_NE(nobody.find("slot 7 is granted to nobody"), std::string::npos) << nobody;
  EXPECT_NE(nobody.find("in use 2, live holders 1"), std::string::npos) << nobody;
  e->permits.fetch_and(~(std::uint64_t{1} << 7));
  const std::string gone = Permits::audit(*e, [](std::uint64_t h) { return h != kA; });
  EXPECT_NE(gone.find("a holder that is gone"), std::string::npos) << gone;
}

TEST(Permits, AcquireWaitsForItsTimeoutWhenNothingIsReleased) {
  auto e = entry_of(1);
  ASSERT_TRUE(Permits::try_acquire(*e, 1, kA));
  EXPECT_FALSE(Permits::acquire(*e, 1, kB, std::chrono::nanoseconds(std::chrono::milliseconds(5)).count()));
  EXPECT_EQ(e->waiters.load(), 0u) << "a sleeper that gave up no longer counts itself";
  ASSERT_EQ(Permits::release(*e, 1, kA), 1u);
  EXPECT_TRUE(Permits::acquire(*e, 1, kB, 0));
  EXPECT_EQ(ledger_count(*e, kB), 1u);
}

TEST(Permits, TheTableViewSeesReadyEntriesOnly) {
  std::unique_ptr<SemaphoreEntry[]> table(new SemaphoreEntry[3]);
  table[1].word.store(SemaphoreEntry::kReady);
  table[2].word.store(SemaphoreEntry::kCreating);
  const Permits permits(table.get(), 3);
  EXPECT_EQ(permits.size(), 3u);
  EXPECT_EQ(permits.entry(0), nullptr) << "free";
  EXPECT_EQ(permits.entry(1), &table[1]);
  EXPECT_EQ(permits.entry(2), nullptr) << "still being created";
  EXPECT_EQ(permits.entry(3), nullptr) << "past the table";
}

TEST(Permits, TheParkedCountIsRaisedByARecountOnlyWhenUnchangedSinceItWasRead) {
  auto e = entry_of(1);
  EXPECT_FALSE(Permits::maybe_parked(*e));
  const std::uint32_t seen = Permits::parked_count(*e);
  Permits::count_parked(*e);  // a parker between the read and the recount
  Permits::recount_parked(*e, seen, 3);
  EXPECT_EQ(Permits::parked_count(*e), 1u) << "a stale recount overwrote a parker's count";
  Permits::recount_parked(*e, 1, 2);  // a parker died between its park and its count
  EXPECT_EQ(Permits::parked_count(*e), 2u);
  Permits::count_unparked(*e);
  Permits::count_unparked(*e);
  EXPECT_FALSE(Permits::maybe_parked(*e));
}

// A task popped from its park ring is counted out after the pop: a recount that saw the
// ring without it must not take its decrement too, or the task parked again would leave
// the count at 0 with a task parked.
TEST(Permits, ARecountNeverLowersTheParkedCount) {
  auto e = entry_of(1);
  Permits::count_parked(*e);                             // one task parked
  const std::uint32_t seen = Permits::parked_count(*e);  // the janitor reads 1
  // The task is popped (its ring now empty); the janitor counts the rings: 0.
  Permits::recount_parked(*e, seen, 0);
  Permits::count_unparked(*e);  // the popper's decrement
  Permits::count_parked(*e);    // parked again: needs more than is free
  EXPECT_TRUE(Permits::maybe_parked(*e)) << "a task is parked: releases must look";
}

}  // namespace
}  // namespace shmsched::detail
