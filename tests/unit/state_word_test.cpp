// The transition table of task records (detail/state_word.hpp): what it allows, and
// that a move it does not allow stops the process in the tests' build instead of
// corrupting a record silently. Every other test runs with the same check, so any
// transition the engine makes that the table lacks fails the suite.
#include <gtest/gtest.h>

#include <set>
#include <string_view>
#include <utility>

#include "shmsched/detail/state_word.hpp"

using namespace shmsched;
using detail::next_word;

namespace {

constexpr TaskState kAll[] = {TaskState::virgin,  TaskState::free,      TaskState::reserved, TaskState::queued,
                              TaskState::running, TaskState::delayed,   TaskState::parked,   TaskState::dead,
                              TaskState::done,    TaskState::cancelled, TaskState::waiting};

std::uint64_t word_in(TaskState s) {
  return (next_word(0, TaskState::reserved, 1) & ~detail::kStateMask) | static_cast<std::uint64_t>(s);
}

}  // namespace

static_assert(std::size(kAll) == kTaskStates);

// The life of a record as docs/ring-protocol.md draws it, and nothing else: a new move
// must be added to the table and to this list together.
TEST(StateWord, TheTableAllowsExactlyTheMovesOfARecordsLife) {
  using S = TaskState;
  const std::set<std::pair<S, S>> allowed = {
      {S::virgin, S::reserved},                                                          // reserve
      {S::free, S::reserved},       {S::free, S::free},                                  // reserve; drop a dead name
      {S::reserved, S::queued},     {S::reserved, S::delayed},  {S::reserved, S::free},  // accept; give back
      {S::reserved, S::waiting},                                                         // accept waiting for a group
      {S::waiting, S::running},  // released, cancelled or moved (claimed)
      {S::running, S::waiting},  // released too early, or moved: waits on
      {S::queued, S::running},      {S::queued, S::queued},     {S::queued, S::free},  // take; drop a name; give back
      {S::running, S::free},        {S::running, S::queued},    {S::running, S::parked},
      {S::running, S::delayed},     {S::running, S::dead},      {S::running, S::running},  // finish, requeue, park, ...
      {S::running, S::done},        {S::running, S::cancelled},  // finish keeping the result; the cancellation
      {S::delayed, S::running},                                  // promote
      {S::parked, S::running},      {S::parked, S::parked},      // unpark; drop a name
      {S::dead, S::running},        {S::dead, S::free},          // requeue; purge
      {S::done, S::done},           {S::done, S::free},  // a reader claims (or its dead name dropped); taken, expired
      {S::cancelled, S::cancelled}, {S::cancelled, S::free},  // the same for a kept cancellation
  };
  for (S from : kAll)
    for (S to : kAll)
      EXPECT_EQ(detail::transition_allowed(from, to), allowed.count({from, to}) == 1)
          << to_string(from) << " -> " << to_string(to);
  EXPECT_FALSE(detail::transition_allowed(static_cast<S>(kTaskStates), S::running)) << "a damaged state goes nowhere";
}

// What inspection and shmctl count as outstanding (a task that will still run) and as
// belonging to a queue: each state is classified, and has a name of its own.
TEST(StateWord, EveryStateHasANameAndAClass) {
  const std::set<TaskState> outstanding = {TaskState::queued, TaskState::running, TaskState::delayed, TaskState::parked,
                                           TaskState::waiting};
  std::set<std::string_view> names;
  for (TaskState s : kAll) {
    EXPECT_NE(to_string(s), "?");
    names.insert(to_string(s));
    EXPECT_EQ(is_outstanding(s), outstanding.count(s) == 1) << to_string(s);
    EXPECT_EQ(names_queue(s),
              outstanding.count(s) == 1 || s == TaskState::dead || s == TaskState::done || s == TaskState::cancelled)
        << to_string(s);
  }
  EXPECT_EQ(names.size(), kTaskStates);
  EXPECT_EQ(to_string(static_cast<TaskState>(kTaskStates)), "?");
}

TEST(StateWord, AnAllowedMoveBumpsTheVersionAndSetsStateAndOwner) {
  const std::uint64_t w = word_in(TaskState::queued);
  const std::uint64_t n = next_word(w, TaskState::running, 7);
  EXPECT_EQ(detail::state_of(n), TaskState::running);
  EXPECT_EQ(detail::owner_of(n), 7);
  EXPECT_EQ(detail::version_of(n), detail::version_of(w) + 1);
}

TEST(StateWordDeathTest, AMoveTheTableDoesNotAllowAbortsNamingIt) {
  EXPECT_DEATH((void)next_word(word_in(TaskState::dead), TaskState::queued, 1),
               "illegal task state transition dead -> queued");
  EXPECT_DEATH((void)next_word(word_in(TaskState::delayed), TaskState::free, 1),
               "illegal task state transition delayed -> free");
}
