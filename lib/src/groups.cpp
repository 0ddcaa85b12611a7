// Groups: the API over engine/groups.hpp (create, find, seal, delete, read, wait,
// verify). docs/lifecycle.md: "Groups".
#include <algorithm>
#include <thread>

#include "engine/engine.hpp"
#include "shmsched/inspect.hpp"

namespace shmsched {

namespace {

using detail::GroupEntry;

GroupState state_of_group(std::uint64_t w) noexcept {
  switch (detail::group_state(w)) {
    case GroupEntry::kSealed:
      return GroupState::sealed;
    case GroupEntry::kFinished:
      return GroupState::finished;
    default:
      return GroupState::open;
  }
}

// Whether entry e (word w) holds a group named `name`.
bool holds_name(const GroupEntry& e, std::uint64_t w, std::string_view name) noexcept {
  return detail::group_state(w) >= GroupEntry::kOpen && detail::name_equals(e.name, name);
}

}  // namespace

Result<GroupId> Client::create_group(std::string_view name, const GroupOptions& options) {
  auto& im = *impl_;
  auto& core = *im.core;
  if (auto v = validate_short_name(name, 31, "group"); !v) return v.error();
  if (options.ttl.count() < 0 || options.ttl.count() > UINT32_MAX)
    return Error(Errc::invalid_argument, "group ttl must be 0 .. 2^32-1 seconds");
  if (find_group(name)) return Error(Errc::exists, "a group named '" + std::string(name) + "' exists");
  for (std::uint32_t gi = 0; gi < core.layout.max_groups; ++gi) {
    GroupEntry& e = core.groups[gi];
    std::uint64_t w = e.word.load(std::memory_order_acquire);
    if (detail::group_state(w) != GroupEntry::kFree) continue;
    const std::uint64_t gen = detail::group_gen(w) + 1;
    // acq_rel: the entry is ours to fill; a failed CAS means someone else took it.
    if (!e.word.compare_exchange_strong(w, detail::group_word(gen, GroupEntry::kCreating), std::memory_order_acq_rel))
      continue;
    detail::write_name(e.name, name);
    e.outstanding.store(0, std::memory_order_relaxed);
    e.dependents.store(0, std::memory_order_relaxed);
    e.waiters.store(0, std::memory_order_relaxed);
    e.finished_ns.store(0, std::memory_order_relaxed);
    e.created_ns.store(detail::coarse_now_ns(), std::memory_order_relaxed);
    e.ttl_s.store(static_cast<std::uint32_t>(options.ttl.count()), std::memory_order_relaxed);
    // The base: what this entry's earlier groups counted (nobody counts in it now).
    for (auto& b : e.base) b.store(0, std::memory_order_relaxed);
    const auto sums = im.group_sums(gi);
    for (unsigned k = 0; k < 4; ++k) e.base[k].store(sums[k], std::memory_order_relaxed);
    // seq_cst (a release too): publishes name and base; ordered before the look below.
    e.word.store(detail::group_word(gen, GroupEntry::kOpen), std::memory_order_seq_cst);
    // Two creators of one name racing: the entry with the lower index keeps it.
    for (std::uint32_t other = 0; other < gi; ++other) {
      const std::uint64_t ow = core.groups[other].word.load(std::memory_order_seq_cst);
      if (!holds_name(core.groups[other], ow, name)) continue;
      std::uint64_t mine = detail::group_word(gen, GroupEntry::kOpen);
      e.word.compare_exchange_strong(mine, detail::group_word(gen, GroupEntry::kFree), std::memory_order_acq_rel);
      return Error(Errc::exists, "a group named '" + std::string(name) + "' exists");
    }
    return detail::make_group_id(gen, gi);
  }
  return Error(Errc::group_table_full, "no room for group '" + std::string(name) + "' (max_groups " +
                                           std::to_string(core.layout.max_groups) +
                                           "): delete finished groups, or create the segment with more");
}

Result<GroupId> find_group(const Segment& segment, std::string_view name) {
  const auto& core = detail::core_of(segment);
  for (std::uint32_t gi = 0; gi < core.layout.max_groups; ++gi) {
    const std::uint64_t w = core.groups[gi].word.load(std::memory_order_acquire);
    if (holds_name(core.groups[gi], w, name)) return detail::make_group_id(detail::group_gen(w), gi);
  }
  return Error(Errc::unknown_group, "no group named '" + std::string(name) + "'");
}

Result<GroupId> Client::find_group(std::string_view name) const {
  return shmsched::find_group(*impl_->seg, name);
}

Errc Client::seal_group(GroupId group) noexcept {
  auto& im = *impl_;
  std::uint64_t w = 0;
  GroupEntry* e = im.group_entry(group, &w);
  for (; e != nullptr && detail::group_state(w) == GroupEntry::kFinishing; e = im.group_entry(group, &w))
    std::this_thread::yield();  // a delete_group is looking: it deletes it, or puts it back
  if (e == nullptr) return Errc::unknown_group;
  if (detail::group_state(w) == GroupEntry::kOpen) {
    // seq_cst: ordered before the look at the hint below; pairs with an adder's
    // announcement and count before its look (enqueue_member).
    if (!e->word.compare_exchange_strong(w, detail::group_word(detail::group_gen(w), GroupEntry::kSealed),
                                         std::memory_order_seq_cst))
      return im.group_entry(group) == nullptr ? Errc::unknown_group : Errc::ok;  // sealed or deleted meanwhile
  }
  if (e->outstanding.load(std::memory_order_seq_cst) <= 0) im.try_finish_group(group);
  return Errc::ok;
}

Errc Client::delete_group(GroupId group) noexcept {
  auto& im = *impl_;
  std::uint64_t w = 0;
  GroupEntry* e = im.group_entry(group, &w);
  if (e == nullptr) return Errc::unknown_group;
  const std::uint64_t gen = detail::group_gen(w), was = detail::group_state(w);
  if (was != GroupEntry::kFinished) {
    // Open or sealed: closed first (kFinishing: adders back off, as from a seal), then
    // -- seq_cst, the other half of an adder's announce-then-look -- only with nobody
    // adding and every member finished; else it goes back as it was.
    if (was == GroupEntry::kFinishing ||
        !e->word.compare_exchange_strong(w, detail::group_word(gen, GroupEntry::kFinishing), std::memory_order_seq_cst))
      return Errc::group_busy;
    const auto s = im.group_sums(detail::group_index_of(group));
    if (detail::adder_in_flight(*im.core, group) || s[0] != s[1] + s[2] + s[3]) {
      e->word.store(detail::group_word(gen, was), std::memory_order_seq_cst);
      if (was == GroupEntry::kSealed) im.try_finish_group(group);  // a finisher may have found it closed
      return Errc::group_busy;
    }
    w = detail::group_word(gen, GroupEntry::kFinishing);
  }
  // acq_rel: one CAS; the generation stays, so the id of the deleted group names nothing.
  if (!e->word.compare_exchange_strong(w, detail::group_word(gen, GroupEntry::kFree), std::memory_order_acq_rel))
    return im.group_entry(group) == nullptr ? Errc::unknown_group : Errc::group_busy;
  if (e->waiters.load(std::memory_order_seq_cst) != 0) detail::futex_wake_low(e->word, INT32_MAX);
  if (e->dependents.load(std::memory_order_seq_cst) != 0) im.release_waiting();  // they are cancelled
  return Errc::ok;
}

namespace {

// The counts of group entry gi (word w) as GroupInfo, without the table's recount.
GroupInfo read_group(const detail::Core& core, std::uint32_t gi, std::uint64_t w) {
  const GroupEntry& e = core.groups[gi];
  GroupInfo g;
  g.id = detail::make_group_id(detail::group_gen(w), gi);
  g.name = detail::read_name(e.name);
  g.state = state_of_group(w);
  const auto s = detail::group_sums(core, gi);
  g.total = s[0];
  g.done = s[1];
  g.failed = s[2];
  g.cancelled = s[3];
  g.created_ns = e.created_ns.load(std::memory_order_relaxed);
  g.finished_ns = e.finished_ns.load(std::memory_order_relaxed);
  return g;
}

// Adds what a recount of the table finds to the groups in `gs` (running, dependents).
void recount(const detail::Core& core, std::vector<GroupInfo>& gs) {
  for (std::uint32_t i = 0, end = core.scan_end(); i < end; ++i) {
    const TaskState st = detail::state_of(core.ctrl[i].state.load(std::memory_order_acquire));
    if (st != TaskState::running && st != TaskState::waiting) continue;
    const auto flags = detail::peek_field(core.hot(i)->flags);
    const auto* c = core.cold(i);
    for (auto& g : gs) {
      if (st == TaskState::running && (flags & detail::kHasGroup) != 0 && detail::peek_field(c->group_id) == g.id)
        ++g.running;
      if (st == TaskState::waiting && (flags & detail::kGateGroup) != 0 && detail::peek_field(c->gate) == g.id)
        ++g.dependents;
    }
  }
}

}  // namespace

Result<GroupInfo> group_info(const Segment& segment, GroupId group) {
  const auto& core = detail::core_of(segment);
  const std::uint32_t gi = detail::group_index_of(group);
  const std::uint64_t w = gi < core.layout.max_groups ? core.groups[gi].word.load(std::memory_order_acquire) : 0;
  if (group == 0 || gi >= core.layout.max_groups || detail::group_gen(w) != detail::group_gen_of(group) ||
      detail::group_state(w) < GroupEntry::kOpen)
    return Error(Errc::unknown_group, "no group " + std::to_string(group));
  std::vector<GroupInfo> gs{read_group(core, gi, w)};
  recount(core, gs);
  return gs.front();
}

std::vector<GroupInfo> groups(const Segment& segment) {
  std::vector<GroupInfo> gs;
  const auto& core = detail::core_of(segment);
  for (std::uint32_t gi = 0; gi < core.layout.max_groups; ++gi) {
    const std::uint64_t w = core.groups[gi].word.load(std::memory_order_acquire);
    if (detail::group_state(w) >= GroupEntry::kOpen) gs.push_back(read_group(core, gi, w));
  }
  recount(core, gs);
  return gs;
}

Result<GroupInfo> Client::group_info(GroupId group) const {
  return shmsched::group_info(*impl_->seg, group);
}

std::vector<GroupInfo> Client::groups() const {
  return shmsched::groups(*impl_->seg);
}

Result<GroupInfo> Client::wait_group(GroupId group, std::chrono::nanoseconds timeout,
                                     const std::function<void(const GroupInfo&)>& progress,
                                     std::chrono::nanoseconds interval) {
  auto& im = *impl_;
  const std::int64_t deadline =
      timeout.count() >= INT64_MAX / 2 ? INT64_MAX : monotonic_ns() + std::max<std::int64_t>(timeout.count(), 0);
  const std::int64_t step = std::max<std::int64_t>(interval.count(), 1'000'000);
  std::int64_t next_report = monotonic_ns();
  for (;;) {
    std::uint64_t w = 0;
    GroupEntry* e = im.group_entry(group, &w);
    if (e == nullptr) return Error(Errc::unknown_group, "no group " + std::to_string(group));
    const bool finished = detail::group_state(w) == GroupEntry::kFinished;
    const std::int64_t now = monotonic_ns();
    if (progress && (finished || now >= next_report)) {
      progress(read_group(*im.core, detail::group_index_of(group), w));
      next_report = now + step;
    }
    if (finished) return read_group(*im.core, detail::group_index_of(group), w);
    if (now >= deadline) return Error(Errc::timeout, "group " + std::to_string(group) + " has not finished");
    // Dekker's pair with try_finish_group: count ourselves, look again, then sleep on the
    // word's low half (the kernel compares it once more). At most 100 ms at a time: a
    // finisher killed between its CAS and its wake costs no more.
    e->waiters.fetch_add(1, std::memory_order_seq_cst);
    if (e->word.load(std::memory_order_seq_cst) == w) {
      std::int64_t sleep = std::min<std::int64_t>(deadline - now, 100'000'000);
      if (progress) sleep = std::min<std::int64_t>(sleep, std::max<std::int64_t>(next_report - now, 0));
      if (sleep > 0) detail::futex_wait_low(e->word, static_cast<std::uint32_t>(w), sleep);
    }
    e->waiters.fetch_sub(1, std::memory_order_relaxed);
  }
}

Result<void> Client::verify_groups() const {
  const auto& core = *impl_->core;
  std::vector<GroupInfo> gs;
  std::vector<std::uint64_t> live, dead;
  for (std::uint32_t gi = 0; gi < core.layout.max_groups; ++gi) {
    const std::uint64_t w = core.groups[gi].word.load(std::memory_order_acquire);
    if (detail::group_state(w) >= GroupEntry::kOpen) gs.push_back(read_group(*impl_->core, gi, w));
  }
  live.assign(gs.size(), 0);
  dead.assign(gs.size(), 0);
  std::string out;
  for (std::uint32_t i = 0, end = core.scan_end(); i < end; ++i) {
    const TaskState st = detail::state_of(core.ctrl[i].state.load(std::memory_order_acquire));
    const auto flags = detail::peek_field(core.hot(i)->flags);
    if (st == TaskState::waiting) {
      const GroupId gate = detail::peek_field(core.cold(i)->gate);
      for (const auto& g : gs)
        if (g.id == gate && g.state == GroupState::finished)
          out += "task " + std::to_string(core.hot(i)->id) + " waits for finished group '" + g.name + "'; ";
    }
    if ((flags & detail::kHasGroup) == 0) continue;
    const GroupId gid = detail::peek_field(core.cold(i)->group_id);
    for (std::size_t k = 0; k < gs.size(); ++k) {
      if (gs[k].id != gid) continue;
      if (is_outstanding(st)) ++live[k];
      if (st == TaskState::dead) ++dead[k];
    }
  }
  for (std::size_t k = 0; k < gs.size(); ++k) {
    const auto& g = gs[k];
    if (g.finished_members() > g.total || g.outstanding() != live[k])
      out += "group '" + g.name + "': " + std::to_string(g.total) + " accepted - " +
             std::to_string(g.finished_members()) + " finished != " + std::to_string(live[k]) +
             " outstanding in the table; ";
    if (dead[k] > g.failed)
      out += "group '" + g.name + "': " + std::to_string(dead[k]) + " dead letters > " + std::to_string(g.failed) +
             " failed; ";
    if (g.state == GroupState::sealed && live[k] == 0)
      out += "group '" + g.name + "' is sealed with every member finished but not finished; ";
  }
  if (out.empty()) return {};
  out.resize(out.size() - 2);
  return Result<void>(Errc::corrupt, out);
}

}  // namespace shmsched
