// Client::Impl: the engine's process-local state, and the list of its operations by
// concept. Each concept's definitions are in the header of that name beside this one;
// all are inline and included by engine.hpp, so that the hot paths inline into
// client.cpp's entry points. docs/ring-protocol.md walks through the protocols; the
// labels (S1), (T1), ... name its steps. docs/architecture.md maps the files.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>

#include "../permits.hpp"
#include "shmsched/client.hpp"
#include "shmsched/detail/core_access.hpp"
#include "shmsched/detail/fault.hpp"
#include "shmsched/detail/futex.hpp"
#include "shmsched/detail/name_table.hpp"
#include "shmsched/detail/prefetch.hpp"
#include "shmsched/detail/saturate.hpp"
#include "support.hpp"

namespace shmsched {

using detail::next_word;
using detail::owner_of;
using detail::state_of;

struct Client::Impl {
  Segment* seg = nullptr;
  detail::Core* core = nullptr;
  detail::ParticipantEntry* me = nullptr;
  std::uint32_t slot = 0;  // 0-based
  std::uint32_t epoch = 0;
  std::uint16_t token = 0;
  bool attached = false;
  // Where this process's allocation sweep goes on from (process-local).
  std::atomic<std::uint32_t> cursor{0};
  // The record this process freed last: reserving it again reuses lines still in this
  // core's cache (a hint; the record's CAS decides).
  static constexpr std::uint32_t kNone = UINT32_MAX;
  std::atomic<std::uint32_t> recent{kNone};
  // When this process last swept the whole table and found it full (0 = not lately).
  std::atomic<std::int64_t> last_full_ns{0};
  // The last type this process registered, to skip the registry on repeats.
  std::atomic<std::uint64_t> last_type{0};
  // When this process last looked at lower levels for aged tasks (coarse ns).
  std::atomic<std::int64_t> last_aging_check{0};
  std::atomic<std::int64_t> last_reap{0};
  std::atomic<std::uint64_t> random{0x9E3779B97F4A7C15ULL};
  // Per queue ring, this process's own head cursor (IndexRing::try_pop): a level that
  // was empty when this process last looked costs one load to look at again. Shared by
  // the process's threads; any value ever stored is valid.
  std::unique_ptr<detail::AtomicU64[]> pop_cursor;
  // And its tail cursor per queue ring, for pushes (the same idea for producers).
  std::unique_ptr<detail::AtomicU64[]> push_cursor;
  // The queue rings' views, made once (Core::ring computes them on every call).
  std::unique_ptr<IndexRing<>[]> queue_rings;
  // The segment's semaphore table, as the semaphore layer's type.
  detail::Permits permits;

  // Per queue, the records this process claimed ahead of its single takes
  // (Client::set_take_ahead): running, owned by us, their attempt not yet counted,
  // handed out in the order they were claimed. One thread uses a buffer at a time:
  // `busy` is taken with an exchange, and a take that finds it taken takes as if
  // take-ahead were off, so no take waits for another thread (set_take_ahead and
  // detach do wait, yielding, for a take to finish with it).
  struct alignas(detail::kCacheLine) Ahead {
    std::atomic<std::uint32_t> limit{1};  // how many a take may claim; 1 = off
    std::atomic<bool> busy{false};
    // How many records are held: changed under `busy` only, read without it as a hint
    // (relaxed: under `busy` the flag's acquire and release order it).
    std::atomic<std::uint32_t> count{0};
    std::uint32_t held() const noexcept { return count.load(std::memory_order_relaxed); }
    void set_held(std::uint32_t n) noexcept { count.store(n, std::memory_order_relaxed); }
    // The rest only under `busy`.
    std::uint32_t level = 0;  // the level of the records held
    std::uint32_t next = 0;   // index of the next to hand out
    // Fills and hand-outs so far (written under `busy`): a janitor tick that finds it
    // unchanged since the last tick while records are held gives them back.
    std::atomic<std::uint32_t> moves{0};
    std::uint32_t seen_moves = 0;  // the value the last tick saw (under `busy`)
    std::uint32_t index[kMaxTakeAhead];
    std::uint64_t word[kMaxTakeAhead];
  };
  std::unique_ptr<Ahead[]> ahead;  // one per queue

  // This participant's counters, (queue, level) at queue * levels + level.
  detail::LevelCounters* my_counters = nullptr;
  detail::LevelCounters& counters(std::uint32_t q, std::uint32_t level) const noexcept {
    return my_counters[q * core->levels + level];
  }
  static void bump(detail::AtomicU64& c, std::uint64_t n = 1) noexcept {
    // relaxed RMW on a line only this process writes: exact, never shared on a hot path.
    c.fetch_add(n, std::memory_order_relaxed);
  }
  std::uint64_t client_id = 0;  // process-unique, never reused; set at attach

  // Whose records and permits a recovery takes back: every token of participant slot
  // `index` (1-based, as in tokens) except `keep` (0: none). Older epochs of a slot are
  // dead by construction (the epoch moves on only at reaping, deregistering or takeover),
  // so this also finishes a recovery whose reaper died part-way.
  struct DeadOwner {
    std::uint32_t index = 0;
    std::uint16_t keep = 0;
    bool matches(std::uint16_t tok) const noexcept {
      return tok != 0 && detail::token_index(tok) == index && tok != keep;
    }
  };

  // ---- waking (waking.hpp) -----------------------------------------------------------
  void notify(QueueId q) noexcept;
  static std::uint32_t pick(const detail::AtomicU64* mask, std::uint32_t words, std::uint32_t start) noexcept;
  void clear_sleep_bits(std::uint32_t p) noexcept;
  void ring_doorbell(std::uint32_t participant, int n) noexcept;

  // ---- records (records.hpp) ---------------------------------------------------------
  // Starts fetching the lines of record idx that its next owner writes first (its hot
  // line and the start of its payload), for writing: issued before the CAS that takes
  // the record, the fetches overlap that CAS's own miss instead of following it (a
  // locked instruction waits for every earlier load and store, so a miss after one CAS
  // stalls the next). A hint: no effect on what is read or written.
  //
  // Across processes each side mostly works on lines the other side wrote long before
  // (the queue between them is deep), so both also fetch kPrefetchDistance records ahead: the
  // producer along its allocation sweep, the consumer along the ring it pops.
  static constexpr std::uint32_t kPrefetchDistance = 8;
  // How many records ahead a batch's fill fetches the lines it writes next: fetching all
  // of a batch's records as it reserves them asks for more lines at once than a core
  // keeps in flight.
  static constexpr std::uint32_t kFillPrefetch = 8;
  // How many members of a run a batch take fetches at once, and control words per line.
  static constexpr std::uint32_t kMaxRunFetch = 16;
  static constexpr std::uint32_t kCtrlPerLine = detail::kCacheLine / sizeof(detail::TaskCtrl);
  void prefetch_body(std::uint32_t idx) const noexcept;
  TaskState takeable(std::uint16_t rid) const noexcept;
  bool is_stale(std::uint16_t rid, std::uint64_t pos, std::uint32_t v) const noexcept;
  Claim claim(std::uint16_t rid, std::uint64_t pos, std::uint32_t v, TaskState to, std::uint64_t& out,
              bool fetch = true) noexcept;
  static bool set_where(detail::TaskCtrl& c, std::uint64_t word, std::uint64_t wh) noexcept;
  std::uint32_t move_run(std::uint32_t first, std::uint32_t n, std::uint64_t* words, TaskState target,
                         std::uint64_t wh) noexcept;
  PushStatus push_run(std::uint32_t first, std::uint32_t n, std::uint64_t* words, std::uint16_t rid, TaskState target,
                      bool moved = false) noexcept;
  PushStatus push_record(std::uint32_t idx, std::uint64_t& word, std::uint16_t rid, TaskState target) noexcept;
  Errc free_record(std::uint32_t idx, std::uint64_t word) noexcept;
  void note_used(std::uint32_t idx) noexcept;
  [[gnu::noinline, gnu::cold]] void raise_mark(std::uint32_t idx) noexcept;
  [[gnu::always_inline]] Errc alloc(std::uint32_t& idx, std::uint64_t& word) noexcept;
  bool alloc_at(std::uint32_t idx, std::uint64_t& word) noexcept;
  bool reserve_at(std::uint32_t idx, std::uint64_t& word) noexcept;
  Errc requeue_record(std::uint32_t idx, std::uint64_t word) noexcept;
  const char* record_defect(std::uint32_t idx) const noexcept;
  Errc dead_letter_record(std::uint32_t idx, std::uint64_t word, std::string_view reason) noexcept;

  // ---- type registry (types.hpp) -----------------------------------------------------
  void register_type(std::uint64_t h, std::string_view name) noexcept;
  std::string_view type_name_cached(std::uint64_t h) const noexcept;
  std::string_view type_name(std::uint64_t h) const noexcept;

  // ---- delayed tasks (delayed.hpp) ---------------------------------------------------
  void mark_delayed(std::uint32_t idx, std::int64_t not_before) noexcept;
  void notify_due(std::uint32_t idx, std::int64_t not_before) noexcept;
  void wake_housekeepers() noexcept;
  Errc delay_record(std::uint32_t idx, std::uint64_t& word, std::int64_t not_before) noexcept;
  std::size_t promote_due(std::int64_t now) noexcept;

  // ---- participants (participants.hpp) -----------------------------------------------
  void bind(Segment& segment);
  bool register_participant(Role role) noexcept;
  bool claim_slot(std::uint32_t i, std::uint64_t w, std::uint32_t new_epoch, Role role,
                  const ProcessIdentity& self) noexcept;
  void activate(const ProcessIdentity& self) noexcept;
  bool participant_alive(const detail::ParticipantEntry& p, std::uint64_t w) const noexcept;
  bool token_alive(std::uint16_t tok) const noexcept;
  ReapReport reap_dead() noexcept;
  void deregister() noexcept;

  // ---- recovery (recovery.hpp) -------------------------------------------------------
  void recover_records(DeadOwner dead, ReapReport& rep) noexcept;

  // ---- permit holders (holders.hpp) -------------------------------------------------
  // The run version bits a task holder keeps (the rest of the word: kind and index).
  static constexpr std::uint64_t kRunVersionMask = (std::uint64_t{1} << 42) - 1;
  static std::uint64_t task_holder(const Taken& t) noexcept;
  std::uint64_t direct_holder() const noexcept;
  /// Whether a ledger holder still holds: judged by liveness, or with `dead` given, by
  /// not being one of its tokens.
  bool holder_valid(std::uint64_t holder, const DeadOwner* dead) const noexcept;
  std::uint32_t sweep_ledgers(DeadOwner dead) noexcept;

  // ---- parking (parking.hpp) ---------------------------------------------------------
  void permits_freed(detail::SemaphoreEntry& e, std::uint32_t sem) noexcept;
  Grant park(const Taken& task, detail::SemaphoreEntry& e, std::uint32_t sem) noexcept;
  bool rate_gate(const Taken& task, std::span<const Need> needs, Grant& g, bool& limited) noexcept;
  bool pop_parked(detail::SemaphoreEntry& e, std::uint32_t sem, std::uint32_t& v, std::uint64_t& w) noexcept;
  std::uint32_t parked_need(std::uint32_t v, std::uint32_t sem) const noexcept;
  std::size_t unpark_to_queues(std::uint32_t sem, std::size_t reserved = 0, bool after_park = false) noexcept;
  bool repark(std::uint32_t v, std::uint64_t w, detail::SemaphoreEntry& e, std::uint32_t sem) noexcept;
  bool hand_over(std::span<const std::uint32_t> sems, Taken* next) noexcept;
  void tend_parked(std::uint32_t sem) noexcept;

  // ---- kept results (results.hpp) ----------------------------------------------------
  Errc keep_result(const Taken& t, std::span<const std::byte> value) noexcept;
  // Cold: out of line, so that the dead-letter path it sits on stays small where it inlines.
  [[gnu::cold]] void publish_outcome(std::uint32_t idx) noexcept;
  void release_dependents() noexcept;
  Errc take_result(TaskId id, TaskResult& out);
  static bool is_kept(std::uint64_t s) noexcept;
  bool drop_result(std::uint32_t idx, std::uint64_t s) noexcept;
  std::size_t expire_results(std::int64_t now) noexcept;
  [[gnu::cold]] bool evict_result() noexcept;

  // ---- cancel (cancel.hpp) -----------------------------------------------------------
  static constexpr std::uint32_t kAnyQueue = UINT32_MAX;
  // What claim_waiting found: the task claimed (it waited), running, finished, or unknown.
  enum class Waiting : std::uint8_t { claimed, running, finished, unknown };
  Waiting claim_waiting(TaskId id, std::uint32_t& idx, std::uint64_t& was, std::uint64_t& mine) noexcept;
  Errc cancel(TaskId id, CancelOutcome& out) noexcept;
  Errc finish_cancelled(std::uint32_t idx, std::uint64_t word, std::string_view why = "cancelled") noexcept;
  bool cancel_requested(const Taken& t) const noexcept;
  template <class Fn>
  void for_each_matching(std::uint32_t queue, std::uint64_t type, std::uint64_t group, Fn&& fn);
  CancelCounts cancel_matching(std::uint32_t queue, std::uint64_t type, std::uint64_t group) noexcept;

  // ---- schedules (schedules.hpp) -----------------------------------------------------
  std::atomic<bool> firing{false};  // a firing pass of this participant is under way
  std::size_t fire_schedules(std::int64_t now_ms) noexcept;
  bool fire_one(std::uint32_t e, std::int64_t now_ms) noexcept;
  bool fill_occurrence(const detail::ScheduleTemplate& t, std::uint32_t& idx, std::uint64_t& word,
                       TaskId& tid) noexcept;
  void count_fired(detail::ScheduleEntry& en, TaskId tid, std::int64_t due, std::uint64_t folded,
                   std::int64_t late_us) noexcept;
  void finish_firing(std::uint32_t p) noexcept;
  void lower_schedule_due(std::int64_t due_ms) noexcept;

  // ---- groups and gates (groups.hpp) ------------------------------------------------
  // What a waiting task's gate says: still pending, finished well, or finished with
  // failed or cancelled members (or deleted).
  struct GateOutcome {
    enum Kind : std::uint8_t { pending, ok, failed_members };
    Kind outcome = pending;
    std::uint64_t failed = 0, cancelled = 0;
    bool deleted = false;
  };
  detail::GroupEntry* group_entry(GroupId id, std::uint64_t* word = nullptr) const noexcept;
  std::array<std::uint64_t, 4> group_sums(std::uint32_t gi) const noexcept;
  // Lanes of this participant taken by this process's threads (bit per lane).
  std::atomic<std::uint32_t> lanes_busy{0};
  class Lane {
   public:
    explicit Lane(Impl& im) noexcept;
    ~Lane();
    Lane(const Lane&) = delete;
    Lane& operator=(const Lane&) = delete;
    std::uint32_t index() const noexcept { return index_; }
    detail::GroupNote& note() const noexcept;

   private:
    // The lane this thread holds for a client, if any: a step nested in another (an
    // adder whose waiting task is cancelled at once by its gate) borrows it.
    struct Held {
      const Impl* im = nullptr;
      std::uint32_t index = 0;
    };
    static thread_local Held held_;
    Impl& im_;
    std::uint32_t index_ = 0;
    bool borrowed_ = false;
  };
  template <class Move>
  Errc counted_move(std::uint32_t idx, std::uint64_t from, std::uint64_t to, unsigned field, std::uint64_t delta,
                    Move&& move, const Lane* held = nullptr) noexcept;
  void finish_step(std::uint32_t p) noexcept;
  void member_finished(std::uint32_t gi, GroupId g) noexcept;
  bool try_finish_group(GroupId g) noexcept;
  void tend_groups(std::int64_t now) noexcept;
  GateOutcome gate_of(std::uint32_t idx) const noexcept;
  GateOutcome parent_outcome(TaskId p) const noexcept;
  Errc check_parent(TaskId p) const noexcept;
  bool pipe_result(std::uint32_t idx, TaskId p) noexcept;
  void gate_reason(std::uint32_t idx, const GateOutcome& out, std::span<char> why) const noexcept;
  Errc settle_gated(std::uint32_t idx, std::uint64_t mine) noexcept;
  void mark_waiting(std::uint32_t idx) noexcept;
  void drop_gate(std::uint32_t idx) noexcept;
  bool try_release(std::uint32_t idx) noexcept;
  std::size_t release_waiting() noexcept;
  std::size_t release_pass() noexcept;
  static bool goes_alone(const TaskOptions& o) noexcept;
  Errc enqueue_member(std::string_view type, std::uint64_t th, std::span<const std::byte> payload, const TaskOptions& o,
                      TaskId* id, std::int64_t now) noexcept;
  Errc announce(const Lane& lane, detail::GroupEntry* ge, GroupId g, bool sealed_ok) noexcept;
  void unannounce(const Lane& lane, detail::GroupEntry* ge, GroupId g, bool undo) noexcept;
  Errc accept_member(std::string_view type, std::uint64_t th, std::span<const std::byte> payload, const TaskOptions& o,
                     QueueId q, TaskId* id, std::int64_t now, const Lane* lane) noexcept;
  Errc finish_member(const Taken& t) noexcept;

  // ---- re-prioritise (priority.hpp) --------------------------------------------------
  Errc set_priority(TaskId id, std::uint8_t level) noexcept;
  std::size_t set_group_priority(std::uint64_t group, std::uint8_t level) noexcept;
  Errc put_at_level(std::uint32_t idx, std::uint64_t was, std::uint64_t mine, std::uint8_t level) noexcept;
  bool shift_one(TaskId id, std::uint8_t from, std::uint8_t to, bool restart, std::int64_t now) noexcept;
  std::size_t shift_level(QueueId q, std::uint8_t from, std::uint8_t to) noexcept;
  void promote_aged() noexcept;

  // ---- enqueue (enqueue.hpp) ---------------------------------------------------------
  // What a batch owes once it is published: counter bumps per (queue, level) and a
  // look at each queue's sleepers. A look after the last publication covers every
  // earlier one (each publishing CAS is seq_cst and precedes it), so a batch wakes as
  // surely as single calls do, with one look per queue instead of one per task.
  struct BatchDebts {
    static constexpr std::size_t kMax = 16;  // more distinct pairs settle early, still exactly
    struct Debt {
      QueueId queue;
      std::uint8_t level;
      std::uint32_t count;
    };
    Debt debts[kMax];
    std::size_t n = 0;
  };
  Errc resolve_queue(const QueueRef& ref, QueueId& q) const noexcept;
  Errc check_spec(std::string_view type, std::span<const std::byte> payload, const TaskOptions& o, QueueId& q,
                  const QueueId* known = nullptr) const noexcept;
  Errc check_next(const TaskSpec& t, const TaskSpec& prev, QueueId prev_q, QueueId& q) const noexcept;
  Errc enqueue(std::string_view type, std::uint64_t th, std::span<const std::byte> payload, const TaskOptions& o,
               TaskId* id) noexcept;
  [[gnu::always_inline]] Errc enqueue_one(std::string_view type, std::uint64_t th, std::span<const std::byte> payload,
                                          const TaskOptions& o, TaskId* id, std::int64_t now,
                                          BatchDebts* batch) noexcept;
  [[gnu::always_inline]] TaskId fill_record(std::uint32_t idx, std::uint64_t word, std::uint64_t th,
                                            std::span<const std::byte> payload, const TaskOptions& o, QueueId q,
                                            std::int64_t now) noexcept;
  void owe(BatchDebts& b, QueueId q, std::uint8_t level, std::uint32_t count = 1) noexcept;
  void settle(BatchDebts& b) noexcept;

  // ---- batch enqueue (enqueue_batch.hpp) ---------------------------------------------
  static constexpr std::size_t kStretch = 256;
  static constexpr std::size_t kGroups = 16;
  // One stretch of a batch on its way through the phases (arrays left uninitialised:
  // each phase writes what the next reads).
  struct Stretch {
    struct Group {
      std::uint16_t rid, count, start;  // count and start: its tasks are order[start, start + count)
      QueueId queue;
    };
    struct Run {
      std::uint32_t first;  // first record
      std::uint16_t at, n;  // its tasks: order[at .. at + n)
    };
    Group groups[kGroups];
    std::uint8_t group_of[kStretch];  // each task's group
    std::uint16_t order[kStretch];    // the tasks, group by group, in task order within a group
    Run runs[kStretch];
    std::uint64_t word_at[kStretch];  // the state word of order[j]'s record
    std::uint32_t spare[kStretch];    // records given back by trim, for the tasks past the cut
    std::size_t len = 0, ngroups = 0, nruns = 0, nspare = 0;
    std::size_t cut = 0;  // tasks from here on have no record
    bool grouped = false;
    Errc error = Errc::ok;
  };
  std::size_t enqueue_runs(std::span<const TaskSpec> tasks, std::span<TaskId> ids, QueueId q0, std::int64_t now,
                           BatchDebts& debts, Errc& error) noexcept;
  void form_stretch(Stretch& s, std::span<const TaskSpec> tasks, QueueId q0) noexcept;
  void reserve_runs(Stretch& s) noexcept;
  void trim_to_cut(Stretch& s) noexcept;
  void reserve_past_cut(Stretch& s) noexcept;
  void fill_runs(Stretch& s, std::span<const TaskSpec> tasks, std::span<TaskId> ids, std::int64_t now) noexcept;
  std::size_t publish_runs(Stretch& s, std::span<const TaskSpec> tasks, BatchDebts& debts) noexcept;
  std::size_t give_back_runs(Stretch& s, std::size_t from) noexcept;

  // ---- take (take.hpp) ---------------------------------------------------------------
  // The last type name a take looked up, for the tasks after it (a batch's are
  // usually of one type).
  struct TypeNames {
    std::uint64_t hash = 0;
    std::string_view name;
  };
  bool takeable_queue(QueueId q) const noexcept;
  bool take(QueueId q, Taken& out, bool as_helper) noexcept;
  std::size_t take_batch(QueueId q, std::span<Taken> out) noexcept;
  bool took(Taken& out, bool as_helper) noexcept;
  std::uint32_t aged_level(QueueId q, std::int64_t bound_ns) noexcept;
  // What a pop hands its records to (pop_level).
  enum class Pop : std::uint8_t { single, batch, ahead };
  template <Pop kPop>
  [[gnu::always_inline]] std::size_t pop_level(QueueId q, std::uint32_t level, std::size_t max, Taken* out,
                                               Ahead* held) noexcept;
  bool take_front(QueueId q, std::uint32_t level, std::uint16_t rid, std::uint64_t pos, std::uint64_t w,
                  Taken& out) noexcept;
  bool expired_on_take(QueueId q, std::uint32_t level, std::uint32_t v, std::uint64_t w) noexcept;
  [[gnu::always_inline]] void prefetch_next_takes(std::uint16_t rid, std::uint64_t pos) const noexcept;
  [[gnu::always_inline]] std::uint32_t prefetch_run(std::uint32_t front, std::uint32_t end) const noexcept;
  [[gnu::always_inline]] void fill_taken(std::uint32_t v, std::uint64_t w, Taken& out) noexcept;
  [[gnu::always_inline]] void fill_taken(std::uint32_t v, std::uint64_t w, Taken& out, TypeNames& names) noexcept;
  bool names_record(const Taken& t) const noexcept;
  bool owns(const Taken& t) const noexcept;

  // ---- take-ahead (take_ahead.hpp) ---------------------------------------------------
  // A thread's use of one queue's take-ahead buffer for one take: get() is null when
  // take-ahead is off for the queue or another thread is using the buffer.
  class AheadUse {
   public:
    explicit AheadUse(Ahead* a) noexcept : a_(a) {}
    ~AheadUse() {
      // release: what we changed in the buffer is seen by the next thread to take it.
      if (a_ != nullptr) a_->busy.store(false, std::memory_order_release);
    }
    AheadUse(const AheadUse&) = delete;
    AheadUse& operator=(const AheadUse&) = delete;
    Ahead* get() const noexcept { return a_; }

   private:
    Ahead* a_;
  };
  Ahead* ahead_of(QueueId q) noexcept;
  Ahead* take_buffer(QueueId q, bool wait) noexcept;
  std::uint32_t fill_ahead(Ahead& a, QueueId q, std::uint32_t level) noexcept;
  static void moved(Ahead& a) noexcept;
  void age_ahead() noexcept;
  bool hand_out(Ahead& a, QueueId q, Taken& out) noexcept;
  void give_back_ahead(QueueId q, bool wait) noexcept;
  void give_back_held(Ahead& a) noexcept;
};

}  // namespace shmsched
