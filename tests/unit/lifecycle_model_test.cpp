// Lifecycle model: a property test of a task's life (docs/lifecycle.md) through one Client.
//
// Seeded random sequences of operations -- enqueue (plain, keep_result, into a group,
// after a parent task, after a group, piped, run_anyway, at any level, and now and then a
// refused combination), try_take, complete with and without a result, dead_letter,
// finish_cancelled, cancel, set_priority, take_result, create_group and seal_group -- run
// on a private segment, and every result is compared with a sequential model of the
// documented behaviour, written below (Model):
//   * each call's Errc, cancel's CancelOutcome and take_result's TaskResult;
//   * which task a take returns: the lowest level first, FIFO within a level. A task that
//     waits for a gate (a parent task or a group) is in no ring; a released or
//     re-prioritised task goes to the back of its level then. Tasks released by one
//     finish go in record-index order: the order of the waiting index a release pass
//     walks (the index is the id's low bits);
//   * a gate: a child is queued once its parent is done, cancelled with the reason when
//     it is dead-lettered or cancelled (a task without keep_result is then freed:
//     unknown), queued anyway with run_anyway; a task after a group likewise once the
//     group is sealed and every member finished; a piped child gets its parent's result;
//   * after every step, Client::status of every task a record still holds (and once more
//     for each that has just gone): TaskStatus, level, keep_result, gate, cancel request,
//     last_error, kept result size; every 16 steps and at the end, group_info of every
//     group;
//   * at the end, with every group sealed and the queue drained (tasks left waiting in a
//     cycle of gates are cancelled), that no record waits or is outstanding, every id
//     answers unknown or its kept outcome, and verify_groups agrees with the table.
// 200 seeds x 300 operations. A failure names the seed (SHMSCHED_TEST_SEED=<seed> runs
// it first) and the last operations before it.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using shmsched::test::small_test_layout;

namespace {

constexpr std::uint32_t kCapacity = 4096;  // never full: a seed enqueues at most kSteps tasks
constexpr std::uint32_t kLevels = 4;
constexpr std::uint32_t kPayload = 16;
constexpr std::uint32_t kMaxGroups = 8;  // small_test_layout's
constexpr int kSeeds = 200;
constexpr int kSteps = 300;

// ---- the model ---------------------------------------------------------------------

enum class Gate : std::uint8_t { none, task, group };

struct MTask {
  TaskId id = kNoTask;
  std::uint32_t index = 0;  // its record: the order a release pass walks
  std::uint8_t level = 0;
  bool keep = false;
  int member_of = -1;  // a group's index in Model::groups, or -1
  Gate gate = Gate::none;
  TaskId parent = kNoTask;  // gate == task
  int gate_group = -1;      // gate == group
  bool pipe = false, run_anyway = false;
  TaskStatus status = TaskStatus::unknown;
  bool cancel_requested = false;
  bool retired = false;  // unknown, and checked so once: an id never names a task again
  std::string payload;   // what a take hands over
  std::string result;    // done: the kept result
  std::string error;     // last_error
};

struct MGroup {
  GroupId id = 0;
  bool sealed = false;
  std::uint64_t total = 0, done = 0, failed = 0, cancelled = 0;
  bool finished() const { return sealed && total == done + failed + cancelled; }
  GroupState state() const {
    return finished() ? GroupState::finished : sealed ? GroupState::sealed : GroupState::open;
  }
};

// What a gate says now: pending, ok, or failed with the reason the task is cancelled.
struct GateView {
  bool pending = false;
  bool ok = false;
  std::string reason;
};

bool outstanding(TaskStatus s) {
  return s == TaskStatus::queued || s == TaskStatus::waiting || s == TaskStatus::running;
}

// A sequential model of docs/lifecycle.md for one queue.
class Model {
 public:
  std::vector<MTask> tasks;  // in enqueue order
  std::vector<MGroup> groups;

  MTask* find(TaskId id) {
    const auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &tasks[it->second];
  }
  int group_index(GroupId id) const {
    for (std::size_t i = 0; i < groups.size(); ++i)
      if (groups[i].id == id) return static_cast<int>(i);
    return -1;
  }

  // What enqueue answers, checked in the library's order (enqueue_member).
  Errc enqueue_errc(const TaskOptions& o) {
    if (o.after_group != 0 && group_index(o.after_group) < 0) return Errc::unknown_group;
    if (o.group_id != 0 && o.group_id == o.after_group) return Errc::invalid_argument;
    if ((o.after_group != 0 && o.after_task != 0) || (o.pipe && o.after_task == 0)) return Errc::invalid_argument;
    if (o.after_task != 0) {
      const MTask* p = find(o.after_task);
      if (p == nullptr || p->status == TaskStatus::unknown) return Errc::unknown_task;  // no record holds it
      if (!p->keep) return Errc::parent_not_kept;
    }
    if (o.group_id != 0) {
      const int g = group_index(o.group_id);
      if (g < 0) return Errc::unknown_group;
      if (groups[static_cast<std::size_t>(g)].sealed) return Errc::group_sealed;
    }
    return Errc::ok;
  }

  // An accepted task: queued, or waiting for its gate (settled at once when the gate has
  // already finished).
  void accept(TaskId id, const TaskOptions& o, std::string payload) {
    MTask t;
    t.id = id;
    t.index = static_cast<std::uint32_t>(id & (kCapacity - 1));
    t.level = o.priority;
    t.keep = o.keep_result;
    t.member_of = o.group_id != 0 ? group_index(o.group_id) : -1;
    t.gate = o.after_task != 0 ? Gate::task : o.after_group != 0 ? Gate::group : Gate::none;
    t.parent = o.after_task;
    t.gate_group = o.after_group != 0 ? group_index(o.after_group) : -1;
    t.pipe = o.pipe;
    t.run_anyway = o.run_anyway;
    t.payload = std::move(payload);
    by_id_[id] = tasks.size();
    tasks.push_back(std::move(t));
    MTask& m = tasks.back();
    if (m.member_of >= 0) ++groups[static_cast<std::size_t>(m.member_of)].total;
    if (m.gate == Gate::none) {
      push(m);
      return;
    }
    m.status = TaskStatus::waiting;
    if (settle(m)) release_all();
  }

  // The task the next take returns: the front of the lowest level that has one.
  std::optional<TaskId> next() const {
    for (const auto& ring : rings_)
      if (!ring.empty()) return ring.front();
    return std::nullopt;
  }
  void take(MTask& t) {
    unring(t);
    t.status = TaskStatus::running;
  }

  // A queued or waiting task moves to `level` (a queued one to the back of that level).
  void move(MTask& t, std::uint8_t level) {
    if (t.status == TaskStatus::queued) unring(t);
    t.level = level;
    if (t.status == TaskStatus::queued) push(t);
  }

  // Cancel of a queued or waiting task.
  void cancel(MTask& t) {
    if (t.status == TaskStatus::queued) unring(t);
    finish(t, TaskStatus::cancelled, "cancelled");
    release_all();
  }

  // A running task finishes: done (with `result`), dead (with `reason`) or cancelled.
  void finish_running(MTask& t, TaskStatus how, std::string text = {}) {
    finish(t, how, std::move(text));
    release_all();
  }

  // take_result of a done or cancelled task frees its record.
  void take_result(MTask& t) { t.status = TaskStatus::unknown; }

  void seal(MGroup& g) {
    g.sealed = true;
    release_all();
  }

  std::uint64_t running_members(int g) const {
    std::uint64_t n = 0;
    for (const auto& t : tasks) n += t.member_of == g && t.status == TaskStatus::running;
    return n;
  }
  std::uint64_t dependents(int g) const {
    std::uint64_t n = 0;
    for (const auto& t : tasks) n += t.gate_group == g && t.status == TaskStatus::waiting;
    return n;
  }

 private:
  std::unordered_map<TaskId, std::size_t> by_id_;
  std::array<std::deque<TaskId>, kLevels> rings_;

  void push(MTask& t) {
    t.status = TaskStatus::queued;
    rings_[t.level].push_back(t.id);
  }
  void unring(const MTask& t) {
    auto& ring = rings_[t.level];
    ring.erase(std::find(ring.begin(), ring.end(), t.id));
  }

  // A task finishes for good: a kept outcome stays (done, cancelled), one that is not
  // kept is freed (unknown); a dead letter stays either way. Its group counts it.
  void finish(MTask& t, TaskStatus how, std::string text = {}) {
    t.cancel_requested = false;
    if (how == TaskStatus::done) {
      t.status = t.keep ? TaskStatus::done : TaskStatus::unknown;
      t.result = text.substr(0, kPayload);  // a result is cut to the payload area
    } else if (how == TaskStatus::dead) {
      t.status = TaskStatus::dead;
      t.error = std::move(text);
    } else {
      t.status = t.keep ? TaskStatus::cancelled : TaskStatus::unknown;
      t.error = std::move(text);
    }
    if (t.member_of < 0) return;
    MGroup& g = groups[static_cast<std::size_t>(t.member_of)];
    ++(how == TaskStatus::done ? g.done : how == TaskStatus::dead ? g.failed : g.cancelled);
  }

  GateView gate_of(const MTask& t) {
    if (t.gate == Gate::group) {
      const MGroup& g = groups[static_cast<std::size_t>(t.gate_group)];
      if (!g.finished()) return {true, false, {}};
      if (g.failed == 0 && g.cancelled == 0) return {false, true, {}};
      return {false, false,
              "its group finished with " + std::to_string(g.failed) + " failed and " + std::to_string(g.cancelled) +
                  " cancelled"};
    }
    const MTask* p = find(t.parent);
    switch (p == nullptr ? TaskStatus::unknown : p->status) {
      case TaskStatus::done:
        return {false, true, {}};
      case TaskStatus::dead:
        return {false, false, "its parent task failed"};
      case TaskStatus::cancelled:
        return {false, false, "its parent task was cancelled"};
      case TaskStatus::unknown:
        return {false, false, "its parent's outcome was taken, expired or evicted before it was read"};
      default:
        return {true, false, {}};
    }
  }

  // (W2) A waiting task whose gate is not pending: queued (a piped child with its
  // parent's result as its payload), or cancelled with the reason unless it runs anyway.
  // False while the gate is pending.
  bool settle(MTask& t) {
    const GateView g = gate_of(t);
    if (g.pending) return false;
    if (g.ok && t.pipe) t.payload = find(t.parent)->result;
    if (!g.ok && !t.run_anyway) {
      finish(t, TaskStatus::cancelled, g.reason);
    } else {
      push(t);
    }
    return true;
  }

  // Release passes, as release_waiting: each walks the waiting tasks in record order and
  // settles every one whose gate is not pending now; a settle that finishes a task (a
  // cancel) may release others, so passes repeat until one settles nothing.
  void release_all() {
    std::vector<std::size_t> waiting;
    for (bool again = true; again;) {
      again = false;
      waiting.clear();
      for (std::size_t i = 0; i < tasks.size(); ++i)
        if (tasks[i].status == TaskStatus::waiting) waiting.push_back(i);
      std::sort(waiting.begin(), waiting.end(),
                [&](std::size_t a, std::size_t b) { return tasks[a].index < tasks[b].index; });
      for (std::size_t i : waiting)
        if (tasks[i].status == TaskStatus::waiting && settle(tasks[i])) again = true;
    }
  }
};

// ---- one seed's run against the library ---------------------------------------------

class Scenario {
 public:
  explicit Scenario(std::uint64_t seed)
      : seed_(seed),
        rng_(make_rng(seed)),
        seg_(Segment::create_private(small_test_layout(kCapacity, kLevels, kPayload), CreateOptions{0600, {"general"}})
                 .value()),
        cli_(Client::attach(seg_, Role::producer | Role::consumer).value()),
        q_(seg_.find_queue("general").value()) {}

  static std::mt19937 make_rng(std::uint64_t seed) {
    std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)};
    return std::mt19937(seq);
  }

  // Runs the seed; false at its first disagreement with the model (already reported).
  bool run() {
    for (step_ = 0; step_ < kSteps && ok_; ++step_) {
      random_op();
      if (ok_) check_tasks();
      if (ok_ && step_ % 16 == 15) check_groups();
    }
    if (ok_) drain();
    return ok_;
  }

 private:
  std::uint64_t seed_;
  std::mt19937 rng_;
  Segment seg_;
  Client cli_;
  QueueId q_;
  Model m_;
  std::vector<Taken> running_;
  std::vector<std::string> log_;
  int step_ = 0;
  int serial_ = 0;
  bool ok_ = true;

  // ---- helpers ----

  std::uint32_t below(std::uint32_t n) { return static_cast<std::uint32_t>(rng_() % n); }
  bool chance(std::uint32_t percent) { return below(100) < percent; }
  std::string random_text(std::uint32_t max_len) {
    std::string s(below(max_len + 1), ' ');
    for (char& c : s) c = static_cast<char>('a' + below(26));
    return s;
  }

  void note(std::string what) { log_.push_back("step " + std::to_string(step_) + ": " + std::move(what)); }

  // Reports a disagreement once, with the seed and the operations that led to it.
  bool expect(bool cond, const std::string& what) {
    if (cond || !ok_) return cond;
    ok_ = false;
    std::ostringstream os;
    os << "seed " << seed_ << " (SHMSCHED_TEST_SEED=" << seed_ << " runs it first), step " << step_ << ": " << what
       << "\nlast operations:\n";
    for (std::size_t i = log_.size() > 40 ? log_.size() - 40 : 0; i < log_.size(); ++i) os << "  " << log_[i] << "\n";
    ADD_FAILURE() << os.str();
    return false;
  }
  static std::string name(TaskStatus s) { return std::string(to_string(s)); }
  static std::string name(Errc e) { return std::string(to_string(e)); }
  static std::string name(CancelOutcome c) {
    return c == CancelOutcome::cancelled ? "cancelled" : c == CancelOutcome::requested ? "requested" : "finished";
  }
  template <class T>
  static std::string show(const T& v) {
    return ::testing::PrintToString(v);
  }
  static std::string show(TaskStatus s) { return name(s); }
  static std::string show(CancelOutcome c) { return name(c); }
  static std::string show(GroupState s) { return std::string(to_string(s)); }

  template <class A, class B>
  bool expect_eq(const A& got, const B& want, const std::string& what) {
    return got == want || expect(false, what + ": got " + show(got) + ", the model says " + show(want));
  }
  // expect_eq for a field of task `id`'s status: the message is built only on a mismatch
  // (this runs for every task after every step).
  template <class A, class B>
  bool field_eq(TaskId id, const A& got, const B& want, const char* field) {
    return got == want || expect_eq(got, want, "status of task " + std::to_string(id) + field);
  }

  std::string task_name(TaskId id) {
    const MTask* t = m_.find(id);
    return "task " + std::to_string(id) + (t != nullptr ? " [" + name(t->status) + "]" : " [never]");
  }

  // A task to act on: mostly one a record still holds, sometimes any (or none).
  MTask* pick_task(bool prefer_kept = false) {
    if (m_.tasks.empty()) return nullptr;
    MTask* t = nullptr;
    for (int tries = 0; tries < 6; ++tries) {
      t = &m_.tasks[below(static_cast<std::uint32_t>(m_.tasks.size()))];
      if ((t->status != TaskStatus::unknown || chance(15)) && (!prefer_kept || t->keep || chance(20))) break;
    }
    return t;
  }
  MGroup* pick_group() {
    return m_.groups.empty() ? nullptr : &m_.groups[below(static_cast<std::uint32_t>(m_.groups.size()))];
  }
  // A running task, taken out of running_ by the caller when it finishes.
  std::size_t pick_running() { return below(static_cast<std::uint32_t>(running_.size())); }

  // ---- the operations ----

  void random_op() {
    const std::uint32_t r = below(100);
    if (r < 34) return enqueue();
    if (r < 58) return take();
    if (!running_.empty() && r < 70) return complete();
    if (!running_.empty() && r < 74) return dead_letter();
    if (!running_.empty() && r < 76) return finish_cancelled();
    if (r < 82) return cancel();
    if (r < 88) return set_priority();
    if (r < 94) return take_result();
    if (r < 97) return seal();
    return create_group();
  }

  void enqueue() {
    TaskOptions o;
    o.queue = q_;
    o.priority = static_cast<std::uint8_t>(below(kLevels));
    o.keep_result = chance(50);
    const std::uint32_t gate = below(100);
    if (gate < 30) {
      if (MTask* p = pick_task(true)) o.after_task = p->id;
      o.pipe = o.after_task != kNoTask && chance(30);
    } else if (gate < 45) {
      if (MGroup* g = pick_group()) o.after_group = g->id;
    }
    o.run_anyway = chance(35);
    if (chance(25))
      if (MGroup* g = pick_group()) o.group_id = g->id;
    if (chance(3)) {  // a combination the library refuses
      if (MGroup* g = pick_group(); g != nullptr && o.after_task != kNoTask) o.after_group = g->id;
      if (o.after_task == kNoTask) o.pipe = true;
    }
    const std::string payload = "p" + std::to_string(serial_++);
    std::ostringstream os;
    os << "enqueue " << payload << " level " << int{o.priority} << (o.keep_result ? " keep" : "")
       << (o.after_task ? " after " + task_name(o.after_task) : "") << (o.pipe ? " pipe" : "")
       << (o.after_group ? " after group " + std::to_string(o.after_group) : "")
       << (o.group_id ? " in group " + std::to_string(o.group_id) : "") << (o.run_anyway ? " run_anyway" : "");
    const Errc want = m_.enqueue_errc(o);
    TaskId id = kNoTask;
    const Errc got = cli_.enqueue_text("job", payload, o, &id);
    os << " -> " << name(got) << (got == Errc::ok ? " " + std::to_string(id) : "");
    note(os.str());
    if (!expect_eq(got, want, "enqueue")) return;
    if (got != Errc::ok) return;
    if (!expect(id != kNoTask && m_.find(id) == nullptr, "enqueue gave a fresh id")) return;
    m_.accept(id, o, payload);
  }

  void take() {
    const std::optional<TaskId> want = m_.next();
    Taken t;
    const bool got = cli_.try_take(q_, t);
    note("take -> " + (got ? std::to_string(t.id) : std::string("nothing")));
    if (!expect_eq(got, want.has_value(), "a take found a task")) return;
    if (!got) return;
    if (!expect_eq(t.id, *want, "the task a take returns")) return;
    MTask& mt = *m_.find(t.id);
    std::string payload(reinterpret_cast<const char*>(t.payload.data()), t.payload.size());
    expect_eq(int{t.level}, int{mt.level}, "the taken task's level");
    expect_eq(payload, mt.payload, "the taken task's payload");
    expect_eq(t.keep_result, mt.keep, "the taken task's keep_result");
    expect_eq(t.in_group, mt.member_of >= 0, "the taken task's in_group");
    expect_eq(int{t.attempt}, 1, "the taken task's attempt (a release is not a run)");
    m_.take(mt);
    running_.push_back(t);
  }

  void complete() {
    const std::size_t k = pick_running();
    const Taken t = running_[k];
    running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(k));
    const bool with_result = chance(60);
    const std::string result = with_result ? random_text(kPayload + 6) : std::string();
    const Errc got = with_result ? cli_.complete(t, as_payload(std::string_view(result))) : cli_.complete(t);
    note("complete " + std::to_string(t.id) + (with_result ? " with '" + result + "'" : "") + " -> " + name(got));
    if (!expect_eq(got, Errc::ok, "complete")) return;
    m_.finish_running(*m_.find(t.id), TaskStatus::done, result);
  }

  void dead_letter() {
    const std::size_t k = pick_running();
    const Taken t = running_[k];
    running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(k));
    const std::string reason = "broken " + std::to_string(t.id);
    const Errc got = cli_.dead_letter(t, reason);
    note("dead_letter " + std::to_string(t.id) + " -> " + name(got));
    if (!expect_eq(got, Errc::ok, "dead_letter")) return;
    m_.finish_running(*m_.find(t.id), TaskStatus::dead, reason);
  }

  void finish_cancelled() {
    const std::size_t k = pick_running();
    const Taken t = running_[k];
    running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(k));
    const Errc got = cli_.finish_cancelled(t);
    note("finish_cancelled " + std::to_string(t.id) + " -> " + name(got));
    if (!expect_eq(got, Errc::ok, "finish_cancelled")) return;
    m_.finish_running(*m_.find(t.id), TaskStatus::cancelled, "cancelled");
  }

  void cancel() {
    MTask* t = chance(3) ? nullptr : pick_task();
    const TaskId id = t != nullptr ? t->id : kNoTask;
    const std::string what = "cancel " + task_name(id);
    const auto got = cli_.cancel(id);
    note(what + " -> " + (got.ok() ? name(got.value()) : name(got.code())));
    const TaskStatus s = t != nullptr ? t->status : TaskStatus::unknown;
    if (s == TaskStatus::unknown) {
      expect_eq(got.ok() ? Errc::ok : got.code(), Errc::unknown_task, what);
      return;
    }
    if (!expect(got.ok(), what + ": " + (got.ok() ? "" : got.error().message()))) return;
    const CancelOutcome want = s == TaskStatus::running ? CancelOutcome::requested
                               : outstanding(s)         ? CancelOutcome::cancelled
                                                        : CancelOutcome::finished;
    if (!expect_eq(got.value(), want, what + ": the outcome")) return;
    if (want == CancelOutcome::requested) t->cancel_requested = true;
    if (want == CancelOutcome::cancelled) m_.cancel(*t);
  }

  void set_priority() {
    MTask* t = pick_task();
    if (t == nullptr) return;
    const auto level = static_cast<std::uint8_t>(below(kLevels + (chance(5) ? 1 : 0)));
    const std::string what = "set_priority " + task_name(t->id) + " to " + std::to_string(level);
    const Errc got = cli_.set_priority(t->id, level);
    note(what + " -> " + name(got));
    const Errc want = level >= kLevels                                                      ? Errc::invalid_argument
                      : t->status == TaskStatus::unknown                                    ? Errc::unknown_task
                      : t->status == TaskStatus::queued || t->status == TaskStatus::waiting ? Errc::ok
                                                                                            : Errc::not_waiting;
    if (!expect_eq(got, want, what)) return;
    if (want == Errc::ok) m_.move(*t, level);
  }

  void take_result() {
    MTask* t = pick_task(true);
    if (t == nullptr) return;
    const std::string what = "take_result " + task_name(t->id);
    const auto got = cli_.take_result(t->id);
    note(what + " -> " + (got.ok() ? name(got.value().status) : name(got.code())));
    const TaskStatus s = t->status;
    if (s == TaskStatus::unknown || outstanding(s)) {
      expect_eq(got.ok() ? Errc::ok : got.code(), s == TaskStatus::unknown ? Errc::unknown_task : Errc::not_finished,
                what);
      return;
    }
    if (!expect(got.ok(), what + ": " + (got.ok() ? "" : got.error().message()))) return;
    const TaskResult& r = got.value();
    expect_eq(r.id, t->id, what + ": id");
    expect_eq(r.status, s, what + ": status");
    expect_eq(r.value, s == TaskStatus::done ? t->result : std::string(), what + ": value");
    expect_eq(r.error,
              s == TaskStatus::dead        ? t->error
              : s == TaskStatus::cancelled ? t->error
                                           : std::string(),
              what + ": error");
    if (s != TaskStatus::dead) m_.take_result(*t);  // a dead letter stays for dlq
  }

  void seal() {
    MGroup* g = pick_group();
    if (g == nullptr) return;
    const Errc got = cli_.seal_group(g->id);
    note("seal_group " + std::to_string(g->id) + " -> " + name(got));
    if (!expect_eq(got, Errc::ok, "seal_group")) return;
    m_.seal(*g);
  }

  void create_group() {
    const std::string gname = "g" + std::to_string(serial_++);
    const auto got = cli_.create_group(gname);
    note("create_group " + gname + " -> " + (got.ok() ? std::to_string(got.value()) : name(got.code())));
    if (m_.groups.size() >= kMaxGroups) {  // nothing deletes groups here: the table fills
      expect_eq(got.ok() ? Errc::ok : got.code(), Errc::group_table_full, "create_group");
      return;
    }
    if (!expect(got.ok(), "create_group: " + (got.ok() ? "" : got.error().message()))) return;
    m_.groups.push_back(MGroup{got.value()});
  }

  // ---- the checks ----

  // Status of every task a record still holds, and of each that has just gone (once).
  void check_tasks(bool all = false) {
    for (MTask& t : m_.tasks) {
      if (t.retired && !all) continue;
      if (!check_task(t)) return;
      if (t.status == TaskStatus::unknown) t.retired = true;
    }
  }

  bool check_task(const MTask& t) {
    const auto r = cli_.status(t.id);
    if (!expect(r.ok(), "status of task " + std::to_string(t.id) + ": " + (r.ok() ? "" : r.error().message())))
      return false;
    const TaskInfo& i = r.value();
    if (!field_eq(t.id, i.status, t.status, "")) return false;
    if (t.status == TaskStatus::unknown) return true;
    bool good = field_eq(t.id, int{i.priority}, int{t.level}, ": level") &&
                field_eq(t.id, i.keep_result, t.keep, ": keep_result") &&
                field_eq(t.id, i.last_error, t.error, ": last_error");
    if (good && t.status == TaskStatus::waiting) {
      const TaskId gate = t.gate == Gate::task ? t.parent : m_.groups[static_cast<std::size_t>(t.gate_group)].id;
      good = field_eq(t.id, i.waits_for, gate, ": waits_for") &&
             field_eq(t.id, i.waits_for_group, t.gate == Gate::group, ": waits_for_group");
    }
    if (good && t.status == TaskStatus::running)
      good = field_eq(t.id, i.cancel_requested, t.cancel_requested, ": cancel_requested");
    if (good && t.status == TaskStatus::done)
      good = field_eq(t.id, i.result_bytes, static_cast<std::uint32_t>(t.result.size()), ": result_bytes");
    if (good && t.status == TaskStatus::cancelled) good = field_eq(t.id, i.result_bytes, 0u, ": result_bytes");
    return good;
  }

  void check_groups() {
    for (std::size_t k = 0; k < m_.groups.size() && ok_; ++k) {
      const MGroup& g = m_.groups[k];
      const auto r = cli_.group_info(g.id);
      const std::string what = "group " + std::to_string(g.id);
      if (!expect(r.ok(), what + ": " + (r.ok() ? "" : r.error().message()))) return;
      const GroupInfo& i = r.value();
      const int gi = static_cast<int>(k);
      (void)(expect_eq(i.state, g.state(), what + ": state") && expect_eq(i.total, g.total, what + ": total") &&
             expect_eq(i.done, g.done, what + ": done") && expect_eq(i.failed, g.failed, what + ": failed") &&
             expect_eq(i.cancelled, g.cancelled, what + ": cancelled") &&
             expect_eq(i.running, m_.running_members(gi), what + ": running") &&
             expect_eq(i.dependents, m_.dependents(gi), what + ": dependents"));
    }
  }

  // Seals every group and runs everything; tasks left waiting then wait in a cycle of
  // gates (a member of a group that waits, through its gate, for that group): the one
  // in the lowest record is cancelled, which breaks the cycle. In the end no record
  // waits or is outstanding.
  void drain() {
    note("drain: seal every group");
    for (MGroup& g : m_.groups) {
      if (!expect_eq(cli_.seal_group(g.id), Errc::ok, "seal_group")) return;
      m_.seal(g);
    }
    check_tasks();
    for (int guard = 0; ok_ && guard < 4 * kSteps; ++guard) {
      if (!running_.empty()) {
        complete();
      } else if (m_.next()) {
        take();
      } else {
        MTask* stuck = nullptr;
        for (MTask& t : m_.tasks)
          if (t.status == TaskStatus::waiting && (stuck == nullptr || t.index < stuck->index)) stuck = &t;
        if (stuck == nullptr) break;
        note("drain: cancel " + task_name(stuck->id) + " waiting in a cycle");
        const auto got = cli_.cancel(stuck->id);
        if (!expect(got.ok() && got.value() == CancelOutcome::cancelled, "cancel of a task waiting in a cycle")) return;
        m_.cancel(*stuck);
      }
      if (ok_) check_tasks();
    }
    if (!ok_) return;
    Taken extra;
    expect(!cli_.try_take(q_, extra), "a task was left queued after the drain");
    check_tasks(true);
    check_groups();
    const Snapshot s = inspect(seg_);
    expect_eq(s.records[TaskState::waiting], 0u, "records waiting after the drain");
    expect_eq(s.records.outstanding(), 0u, "records outstanding after the drain");
    const auto v = cli_.verify_groups();
    expect(v.ok(), "verify_groups: " + (v.ok() ? std::string() : v.error().message()));
  }
};

TEST(LifecycleModel, RandomOperationsAgreeWithTheModel) {
  const std::uint64_t base = shmsched::test::test_seed();
  for (int i = 0; i < kSeeds; ++i) {
    Scenario run(base + static_cast<std::uint64_t>(i));
    if (!run.run()) return;  // reported with its seed; one seed's trace is enough
  }
}

}  // namespace
