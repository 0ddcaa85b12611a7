// The structs that live in the segment, and where each one is.
//
// Nothing here holds a pointer: every reference is an index or an offset from the
// segment base, so the segment may be mapped at any address in every process.
// Every field another process may read while its owner writes it is an atomic; plain
// fields are written only by the owner of the record (per its state word) or before
// the segment is marked ready.
#pragma once

#include <cstddef>
#include <cstdint>

#include "shmsched/cron.hpp"
#include "shmsched/detail/atomic.hpp"
#include "shmsched/layout.hpp"
#include "shmsched/ring.hpp"

namespace shmsched::detail {

inline constexpr std::uint64_t kMagic = 0x3144484353'4d4853ULL;  // "SHMSCHD1" little-endian
inline constexpr std::uint32_t kAbiVersion = 8;

enum class InitState : std::uint32_t { initializing = 0x494E4954u /* "INIT" */, ready = 0x52454459u /* "REDY" */ };

/// Offsets (from the segment base) and sizes of every region, computed from a Layout.
struct SegmentMap {
  std::uint64_t header = 0;
  std::uint64_t task_ctrl = 0;       // TaskCtrl[task_capacity]
  std::uint64_t task_body = 0;       // task_capacity records of body_stride bytes
  std::uint64_t body_stride = 0;     // TaskHot + payload + TaskCold, in whole lines
  std::uint64_t cold_offset = 0;     // of TaskCold within a record
  std::uint64_t types = 0;           // TypeEntry[kMaxTypes]
  std::uint64_t queues = 0;          // QueueEntry[max_queues]
  std::uint64_t ring_hdrs = 0;       // RingHeader[max_queues * levels]
  std::uint64_t rings = 0;           // AtomicU64[max_queues * levels * ring_capacity]
  std::uint64_t participants = 0;    // ParticipantEntry[max_participants]
  std::uint64_t semaphores = 0;      // SemaphoreEntry[max_semaphores]
  std::uint64_t park_hdrs = 0;       // RingHeader[max_semaphores * levels]
  std::uint64_t park_rings = 0;      // AtomicU64[max_semaphores * levels * park_capacity]
  std::uint32_t park_capacity = 0;   // slots per park ring
  std::uint64_t delayed_bits = 0;    // AtomicU64[task_capacity / 64]
  std::uint64_t sleepers = 0;        // SleepMasks[max_queues]
  std::uint64_t counters = 0;        // LevelCounters[max_participants][max_queues][levels]
  std::uint64_t groups = 0;          // GroupEntry[max_groups]
  std::uint64_t group_notes = 0;     // GroupNote[max_participants][kGroupLanes]
  std::uint64_t group_counters = 0;  // GroupCounters[max_participants][kGroupLanes][max_groups]
  std::uint64_t waiting_bits = 0;    // AtomicU64[task_capacity / 64]
  std::uint64_t schedules = 0;       // ScheduleEntry[kMaxSchedules]
  std::uint64_t total = 0;

  static SegmentMap compute(const Layout& layout) noexcept;
};

/// Layout fields as stored in the header (fixed width, no padding surprises).
struct LayoutPod {
  std::uint32_t levels, task_capacity, payload_bytes, ring_capacity, max_queues, max_participants, max_semaphores,
      max_groups;
};
static_assert(sizeof(LayoutPod) == 32);

// Padded on purpose: each group of hot words on its own cache line (the analyzer would
// pack them together).
struct alignas(kCacheLine) SegmentHeader {  // NOLINT(clang-analyzer-optin.performance.Padding)
  std::uint64_t magic;
  std::uint32_t abi_version;
  AtomicU32 init_state;  // InitState; (H1) release-stored last by the creator
  std::uint64_t layout_hash;
  std::uint64_t total_size;
  LayoutPod layout;
  std::int32_t creator_pid;
  std::uint32_t header_size;
  std::uint64_t creator_start_time;  // /proc/<pid>/stat starttime of the creator
  std::int64_t created_unix_ns;
  char name[64];
  // Leases and hints, each on its own line.
  alignas(kCacheLine) AtomicU64 janitor_lease{0};
  AtomicI64 janitor_renewed_ns{0};
  alignas(kCacheLine) AtomicU64 delayed_next_due_ns{0};
  // Housekeepers (one thread per consumer process) asleep until the next due time, and
  // the futex word they sleep on: bumped when a new earliest due time is set while
  // one sleeps (Client::wait_for_due).
  AtomicU32 due_seq{0};
  AtomicU32 due_waiters{0};
  // At least one past the highest task record ever reserved (a batch raises it past the
  // last record a run could take, which may be up to 63 beyond the run's end): records
  // from here on are virgin, so whole-table scans (recovery, inspection, dead letters)
  // stop here. Raised (a locked RMW) before the reserve CAS of a record at or above it,
  // so whoever finds a reserver dead finds the mark raised; only ever grows. Read on
  // every reservation, written only while the first pass over the table is under way:
  // its own line.
  alignas(kCacheLine) AtomicU32 records_used{0};
  // Kept results (keep_result): waiters asleep on a record's state word (Client::wait;
  // a finisher looks here before it wakes), records in state done now, and how many
  // results were dropped unread because their time ran out or the table needed them.
  alignas(kCacheLine) AtomicU32 result_waiters{0};
  AtomicI64 results_kept{0};
  AtomicU64 results_expired{0};
  AtomicU64 results_evicted{0};
  // Tasks accepted as waiting and not yet released (a hint: the janitor looks for
  // waiting tasks to settle only while it is not 0).
  alignas(kCacheLine) AtomicU64 waiting_tasks{0};
  // The earliest due time (Unix ms) of a schedule not being fired, or earlier (a hint:
  // the janitor's housekeeper sleeps until then; 0 = no schedule). Lowered by whoever
  // adds or resumes a schedule or gives a due time back; set by the firing pass.
  alignas(kCacheLine) AtomicI64 schedule_due_ms{0};
};
static_assert(sizeof(SegmentHeader) <= 4096);

/// Per-record control words, dense so that scans (reaper, stats) read few lines.
struct TaskCtrl {
  AtomicU64 state;  // see state_word.hpp
  AtomicU64 where;  // make_where(ring, pos): where the record was last put
};
static_assert(sizeof(TaskCtrl) == 16);

/// The first line of a record: everything a producer writes on every enqueue and a
/// consumer reads on every take. Written by the record's owner only (the process its
/// state word names); read by the next owner after the CAS that hands it over
/// (acq_rel), so plain fields suffice -- except not_before_ns, which promoters read
/// without owning the record, and queue, which inspect() reads (std::atomic_ref).
struct alignas(kCacheLine) TaskHot {
  std::uint64_t id;
  std::uint64_t type_hash;
  std::int64_t enqueued_ns;    // CLOCK_MONOTONIC_COARSE
  std::int64_t not_before_ns;  // CLOCK_MONOTONIC; 0 = now
  std::int64_t expires_ns;     // CLOCK_MONOTONIC; 0 = never
  std::uint32_t payload_len;
  std::uint16_t queue;
  std::uint8_t level;
  std::uint8_t flags;  // TaskFlags: which TaskCold fields are meaningful
  std::uint16_t attempts;
  std::uint16_t max_attempts;
  std::uint32_t retry_delay_ms;
  std::uint16_t need_sem[2];
  std::uint16_t need_count[2];
};
static_assert(sizeof(TaskHot) == kCacheLine);

/// The rest of a record, after the payload; written only when a flag says the field
/// is set, so the common enqueue touches two lines (hot + a small payload).
struct alignas(kCacheLine) TaskCold {
  std::uint64_t group_id;
  std::int64_t finished_ns;  // done: CLOCK_MONOTONIC_COARSE when it finished
  // The id of the task whose handler Client::cancel asked to stop. Written by the
  // canceller, not the owner: an id, so that a request that lands after the record went
  // to another task asks nothing of that task (its id differs).
  std::uint64_t cancel_id;
  std::uint32_t retry_max_delay_ms;
  std::uint32_t result_ttl_s;        // keep_result: how long a result is kept
  std::uint16_t retry_backoff_x100;  // multiplier per attempt, x100 (200 = doubling)
  std::uint16_t retry_jitter_pct;
  // kHasGate: the id of the group it waits for (kGateGroup).
  // Written by the owner before the record is accepted as waiting.
  std::uint64_t gate;
  // The id of this task while it holds a rate token it waited for (delayed until the
  // token was due): its next acquire takes no other. An id, so a value left by the
  // record's earlier task holds nothing for this one.
  std::uint64_t rate_token;
  char last_error[72];
};
static_assert(sizeof(TaskCold) == 2 * kCacheLine);

/// kKeepResult: enqueued with keep_result (the cold line has its result_ttl_s).
/// kHasGate: it waits for `gate` (a task, or a group with kGateGroup) before it runs;
/// kRunAnyway: it runs when its gate finished with failures too (else it is cancelled);
/// kPipe: it receives its parent task's result as its payload.
enum TaskFlags : std::uint8_t {
  kHasRetryPolicy = 1,
  kHasGroup = 2,
  kHasError = 4,
  kKeepResult = 8,
  kHasGate = 16,
  kGateGroup = 32,
  kRunAnyway = 64,
  kPipe = 128,
};

/// A rate limit (GCRA): `tat` is the theoretical arrival time of the next token
/// (CLOCK_MONOTONIC ns), advanced by one CAS per token; a token taken at `now` is due at
/// max(tat, now) - tolerance. interval_ns = 0: no limit. The counters are informational.
struct RateLimit {
  AtomicI64 tat;
  AtomicI64 interval_ns;   // 1 s / rate
  AtomicI64 tolerance_ns;  // (burst - 1) * interval
  AtomicU64 granted;       // tokens taken
  AtomicU64 delayed;       // tasks that waited for their token
};

/// The state of a named entry (type, queue, semaphore): the low two bits of its word,
/// above them the name's hash.
inline constexpr std::uint64_t kNamedStateBits = 2;
constexpr std::uint64_t named_state(std::uint64_t word) noexcept {
  return word & ((std::uint64_t{1} << kNamedStateBits) - 1);
}

/// A registered task-type name, so records carry only the 64-bit hash. The word packs
/// [hash >> 2 : 62][state : 2]; only the process that claimed the entry writes the
/// name, before the release store of kReady.
struct alignas(kCacheLine) TypeEntry {
  static constexpr std::uint64_t kFree = 0, kClaimed = 1, kReady = 2;
  AtomicU64 word;
  char name[48];
};
static_assert(sizeof(TypeEntry) == kCacheLine);
inline constexpr std::uint32_t kMaxTypes = 256;
inline constexpr std::size_t kMaxTypeName = 47;

/// A named queue. The word packs [name hash : 62][state : 2]; the name and settings are
/// atomics so that racing creators of the same name write identical values race-free.
struct alignas(kCacheLine) QueueEntry {
  static constexpr std::uint64_t kFree = 0, kCreating = 1, kReady = 2;
  static constexpr std::uint32_t kPaused = 1;         // in `flags`
  static constexpr std::uint32_t kAgingPromotes = 2;  // aging moves aged tasks up a level (AgingMode::promote)
  AtomicU64 word;
  AtomicU64 name[4];  // up to 31 bytes, zero padded
  AtomicU32 flags;    // kPaused
  AtomicU32 aging_ms;
  AtomicU32 limit_sem;                 // semaphore id + 1 bounding the queue's running tasks; 0 = none
  alignas(kCacheLine) RateLimit rate;  // every task of the queue takes a token
};
static_assert(sizeof(QueueEntry) == 2 * kCacheLine);

/// A participant (attached process). The word packs [aux : 32][epoch : 6][state : 4].
struct alignas(kCacheLine) ParticipantEntry {
  static constexpr std::uint64_t kFree = 0, kRegistering = 1, kActive = 2, kReaping = 3;
  AtomicU64 word;
  AtomicU64 start_time;  // process start time, clock ticks since boot
  AtomicU32 pid;
  AtomicU32 role;                           // Role bits
  AtomicI64 heartbeat_ns;                   // CLOCK_MONOTONIC of the last beat (informational)
  AtomicU32 doorbell;                       // futex word: bumped to wake this participant's sleepers
  AtomicU32 activity;                       // Activity
  AtomicU64 current_task;                   // id of the task a worker runs (0 = none); informational
  AtomicU32 sleepers;                       // workers of this process asleep on the doorbell
  AtomicU32 workers;                        // worker threads (consumers)
  AtomicU32 help_sleepers;                  // of those, the ones that may help (not reserved)
  alignas(kCacheLine) AtomicU64 reaped{0};  // participants this one reaped
  AtomicU64 processed{0};                   // handlers finished (any outcome)
  // The firing note (engine/schedules.hpp, F1..F4): the schedule entry + 1 (0 = none)
  // with its generation above bit 16, the claim word this participant CASes into the
  // entry's `next`, the word it advances to, and the record and task id of the
  // occurrence. Written by the participant only; read by whoever recovers it.
  AtomicU64 fire_entry{0};
  AtomicU64 fire_claim{0};
  AtomicU64 fire_next{0};
  AtomicU64 fire_task{0};
  AtomicU32 fire_record{0};
};
static_assert(sizeof(ParticipantEntry) == 2 * kCacheLine);

/// Which participants sleep waiting for a queue: bit i = participant index i + 1.
/// Home sleepers are woken first; helpers only when no home sleeper is left.
inline constexpr std::uint32_t kMaskWords = (Layout::kMaxParticipants + 1 + 63) / 64;
struct alignas(kCacheLine) SleepMasks {
  AtomicU64 home[kMaskWords];
  AtomicU64 help[kMaskWords];
};

/// Counters of one participant for one (queue, level); written by that participant
/// only, summed over participants on read, so no counter is shared on a hot path.
struct alignas(kCacheLine) LevelCounters {
  AtomicU64 enqueued, started, done, retried, failed, dead, helped, reserved;
};
static_assert(sizeof(LevelCounters) == kCacheLine);

/// A task group. The word packs [generation : 48][state : 4]: a GroupId is
/// (generation << 16 | entry index), so an id of a deleted group never names its
/// entry's next group. `name` and the base counts are written by the creator before the
/// release store that opens it. The counts a group reports are the sums over
/// participants of GroupCounters less the base the creator read (counters of an entry's
/// earlier groups are never reset: each participant alone writes its own).
struct alignas(kCacheLine) GroupEntry {
  static constexpr std::uint64_t kFree = 0, kCreating = 1, kOpen = 2, kSealed = 3, kFinishing = 4, kFinished = 5;
  AtomicU64 word;
  AtomicU64 name[4];  // up to 31 bytes, zero padded
  // Members accepted less members finished, over every participant: a hint that tells
  // the finisher of a sealed group's last member to check the exact counts. A crash can
  // leave it off; the janitor checks sealed groups by the exact counts (tend_groups).
  AtomicI64 outstanding;
  AtomicU32 waiters;                      // wait_group sleepers (futex on the word's low half)
  AtomicU32 dependents;                   // tasks accepted as waiting for this group (a hint for the release)
  AtomicI64 finished_ns;                  // coarse; 0 while not finished
  alignas(kCacheLine) AtomicU64 base[4];  // the counters' sums when it was created
  AtomicI64 created_ns;
  AtomicU32 ttl_s;  // a finished group is deleted this long after it finished (0 = kept)
};
static_assert(sizeof(GroupEntry) == 2 * kCacheLine);
/// A participant's lanes for group count steps: one thread of the participant at a time
/// uses a lane (its note and its counters), so every counter has a single writer and
/// its note tells exactly what it did (engine/groups.hpp, G1..G4).
inline constexpr std::uint32_t kGroupLanes = 8;
/// The note of one lane: the count step under way -- the record's word before its move
/// (0 = none) and the word the move writes, the record, the counter (group entry * 4 +
/// field) and its value before and after -- and the GroupId + 1 of a group the lane's
/// thread is adding a member to (0 = none): a sealed group does not finish while an
/// adder that saw it open is in flight. Read by whoever recovers the participant.
struct alignas(kCacheLine) GroupNote {
  AtomicU64 from;
  AtomicU64 to;
  AtomicU64 before;
  AtomicU64 after;
  AtomicU32 record;
  AtomicU32 counter;
  AtomicU64 adding;
};
static_assert(sizeof(GroupNote) == kCacheLine);
/// One lane's counts for one group entry (added = members accepted). Only the lane's
/// thread writes them, or whoever recovers the participant while it is dead.
struct GroupCounters {
  static constexpr unsigned kAdded = 0, kDone = 1, kFailed = 2, kCancelled = 3;
  AtomicU64 n[4];
};
static_assert(sizeof(GroupCounters) == 32);

/// A named counting semaphore (resource-aware dispatch builds on it).
///
/// `permits` packs [capacity : 8][grant bitmap : 56]: bit i set means permit slot i is
/// granted. A grant is one CAS on that word, so the count check against the capacity
/// and the grant are atomic, and a resize is one CAS too. `holders[i]` is the ledger:
/// who holds (or is claiming) slot i. A holder claims its ledger slot (CAS 0 -> holder)
/// before the grant sets the bit, and a release clears the bit before the ledger slot,
/// so "bit set" implies "holder known": the reaper returns exactly what the dead held.
struct alignas(kCacheLine) SemaphoreEntry {
  static constexpr std::uint64_t kFree = 0, kCreating = 1, kReady = 2;
  static constexpr unsigned kSlots = 56;
  static constexpr std::uint64_t kBitmapMask = (std::uint64_t{1} << kSlots) - 1;
  AtomicU64 word;  // [name hash : 62][state : 2], as for queues
  AtomicU64 name[4];
  AtomicU64 permits;      // [capacity : 8][bitmap : 56]
  AtomicU32 waiters;      // direct acquirers asleep on wake_seq
  AtomicU32 wake_seq;     // futex word for direct acquirers
  AtomicU32 parked_hint;  // tasks parked on it (approximate; lets a release skip the park rings)
  // First line: everything a release looks at. Then the ledger, seven lines.
  AtomicU64 holders[kSlots];
  alignas(kCacheLine) RateLimit rate;  // a task that needs the semaphore takes a token
};
static_assert(offsetof(SemaphoreEntry, holders) == kCacheLine);
static_assert(sizeof(SemaphoreEntry) == 9 * kCacheLine);

/// What a schedule enqueues and when: written by the schedule's creator into its entry
/// as words (ScheduleEntry::tmpl) and read back as a whole by a seqlock.
inline constexpr std::uint32_t kMaxSchedules = 64;
inline constexpr std::uint32_t kMaxSchedulePayload = 512;
struct ScheduleTemplate {
  char expression[96];
  char type[48];
  CronFields cron;
  std::int64_t every_ms;
  std::int64_t anchor_ms;  // Unix ms: an interval's due times are anchor + k * every
  std::uint16_t queue;
  std::uint8_t level;
  std::uint8_t zone;    // TimeZone
  std::uint8_t missed;  // MissedRuns
  std::uint8_t pad0;
  std::uint16_t max_attempts;
  std::uint16_t need_sem[2];
  std::uint16_t need_count[2];
  std::uint32_t payload_len;
  std::uint32_t pad1;
  char payload[kMaxSchedulePayload];
};
static_assert(sizeof(ScheduleTemplate) % 8 == 0);

/// A periodic schedule. `word` packs [generation : 48][state : 4] (as GroupEntry's), so
/// a firer that read one schedule never acts on the entry's next one. `next` packs
/// [due time, Unix ms since kScheduleEpochMs : 48][claimer token : 16]: a due time is
/// claimed by one CAS that names the claimer, and advanced by one more
/// (engine/schedules.hpp).
// Padded on purpose: the firers' counters on a line of their own, the template after.
struct alignas(kCacheLine) ScheduleEntry {  // NOLINT(clang-analyzer-optin.performance.Padding)
  static constexpr std::uint64_t kFree = 0, kCreating = 1, kActive = 2, kPaused = 3;
  AtomicU64 word;
  AtomicU64 next;
  AtomicU64 name[4];                    // the schedule's id, up to 31 bytes
  alignas(kCacheLine) AtomicU64 fired;  // occurrences enqueued
  AtomicU64 missed;                     // due times dropped (MissedRuns::skip) or folded into one run
  AtomicU64 last_task;                  // the last occurrence's task id
  AtomicI64 last_due_ms;                // its due time (Unix ms)
  AtomicI64 last_late_us;               // how long after its due time it was enqueued
  AtomicU64 stalls;                     // firings put off because the queue's ring or the table was full
  alignas(kCacheLine) AtomicU64 tmpl[sizeof(ScheduleTemplate) / 8];
};

/// Ledger holder encodings.
inline constexpr std::uint64_t kHolderTask = std::uint64_t{1} << 62;         // | run version << 20 | index
inline constexpr std::uint64_t kHolderParticipant = std::uint64_t{2} << 62;  // | thread << 16 | token
inline constexpr std::uint64_t kHolderKindMask = std::uint64_t{3} << 62;

}  // namespace shmsched::detail
