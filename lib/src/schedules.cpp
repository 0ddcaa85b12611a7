// Schedules: the API over engine/schedules.hpp (add, remove, pause, resume, read).
// docs/schedules.md.
#include <thread>

#include "engine/engine.hpp"

namespace shmsched {

namespace {

using detail::ScheduleEntry;

bool in_use(std::uint64_t w) noexcept {
  const std::uint64_t s = detail::schedule_state(w);
  return s == ScheduleEntry::kActive || s == ScheduleEntry::kPaused;
}

// The entry of the schedule named `id` and its word; -1 when there is none.
std::int64_t find_schedule(const detail::Core& core, std::string_view id, std::uint64_t& word) noexcept {
  for (std::uint32_t e = 0; e < detail::kMaxSchedules; ++e) {
    const ScheduleEntry& en = core.schedules[e];
    word = en.word.load(std::memory_order_acquire);  // acquire: its name, written before its release
    if (in_use(word) && detail::name_equals(en.name, id)) return e;
  }
  return -1;
}

std::int64_t now_ms() noexcept {
  return unix_ns() / 1'000'000;
}

// The template of `spec`, checked; queue resolved by the caller.
Result<detail::ScheduleTemplate> make_template(const ScheduleSpec& spec, const detail::Core& core, QueueId q,
                                               std::int64_t anchor_ms) {
  if (auto v = validate_short_name(spec.id, 31, "schedule id"); !v) return v.error();
  if (auto v = validate_short_name(spec.type, detail::kMaxTypeName, "task type"); !v) return v.error();
  detail::ScheduleTemplate t{};
  if (spec.expression.size() >= sizeof t.expression)
    return Error(Errc::invalid_argument,
                 "the expression is longer than " + std::to_string(sizeof t.expression - 1) + " bytes");
  auto r = Recurrence::parse(spec.expression);
  if (!r) return r.error();
  if (!r->next_after(anchor_ms, spec.zone, anchor_ms))
    return Error(Errc::invalid_argument, "'" + spec.expression + "' is never due (no time matches within ten years)");
  const std::size_t max_payload = std::min<std::size_t>(detail::kMaxSchedulePayload, core.layout.payload_bytes);
  if (spec.payload.size() > max_payload)
    return Error(Errc::invalid_argument, "the payload is " + std::to_string(spec.payload.size()) +
                                             " bytes; a schedule's task takes at most " + std::to_string(max_payload));
  if (spec.priority >= core.levels)
    return Error(Errc::invalid_argument, "priority " + std::to_string(spec.priority) + " is not a level (0.." +
                                             std::to_string(core.levels - 1) + ")");
  if (spec.max_attempts == 0) return Error(Errc::invalid_argument, "max_attempts must be at least 1");
  detail::copy_cstr(t.expression, sizeof t.expression, spec.expression);
  detail::copy_cstr(t.type, sizeof t.type, spec.type);
  t.cron = r->cron;
  t.every_ms = r->every_ms;
  t.anchor_ms = anchor_ms;
  t.queue = q;
  t.level = spec.priority;
  t.zone = static_cast<std::uint8_t>(spec.zone);
  t.missed = static_cast<std::uint8_t>(spec.missed);
  t.max_attempts = spec.max_attempts;
  Need needs[2] = {spec.needs[0], spec.needs[1]};
  merge_needs(needs);
  for (int k = 0; k < 2; ++k) {
    t.need_sem[k] = needs[k].count != 0 ? needs[k].sem : 0;
    t.need_count[k] = needs[k].count;
  }
  t.payload_len = static_cast<std::uint32_t>(spec.payload.size());
  std::memcpy(t.payload, spec.payload.data(), spec.payload.size());
  return t;
}

ScheduleInfo info_of(const ScheduleEntry& en, std::uint64_t w, const detail::ScheduleTemplate& t) {
  ScheduleInfo i;
  i.spec.id = detail::read_name(en.name);
  i.spec.expression = std::string(t.expression, ::strnlen(t.expression, sizeof t.expression));
  i.spec.zone = static_cast<TimeZone>(t.zone);
  i.spec.missed = static_cast<MissedRuns>(t.missed);
  i.spec.type = std::string(t.type, ::strnlen(t.type, sizeof t.type));
  i.spec.payload = std::string(t.payload, std::min<std::size_t>(t.payload_len, sizeof t.payload));
  i.spec.queue = t.queue;
  i.spec.priority = t.level;
  i.spec.max_attempts = t.max_attempts;
  for (int k = 0; k < 2; ++k) i.spec.needs[k] = Need{t.need_sem[k], t.need_count[k]};
  i.queue = t.queue;
  i.paused = detail::schedule_state(w) == ScheduleEntry::kPaused;
  const std::uint64_t n = en.next.load(std::memory_order_acquire);
  i.next_due_ms = detail::schedule_due(n);
  i.firing = detail::schedule_claimer(n) != 0;
  i.fired = en.fired.load(std::memory_order_relaxed);
  i.missed = en.missed.load(std::memory_order_relaxed);
  i.stalls = en.stalls.load(std::memory_order_relaxed);
  i.last_due_ms = en.last_due_ms.load(std::memory_order_relaxed);
  i.last_late_us = en.last_late_us.load(std::memory_order_relaxed);
  i.last_task = en.last_task.load(std::memory_order_relaxed);
  return i;
}

}  // namespace

std::string_view to_string(MissedRuns m) noexcept {
  return m == MissedRuns::skip ? "skip" : "once";
}

Result<void> Client::add_schedule(const ScheduleSpec& spec) {
  auto& im = *impl_;
  auto& core = *im.core;
  if (!im.attached) return Error(Errc::not_attached);
  QueueId q = 0;
  if (Errc e = im.resolve_queue(spec.queue, q); e != Errc::ok)
    return Error(e, spec.queue.is_name() ? "no queue named '" + std::string(spec.queue.name()) + "'" : "");
  for (const Need& n : spec.needs) {
    if (n.count == 0) continue;
    const detail::SemaphoreEntry* s = im.permits.entry(n.sem);
    if (s == nullptr) return Error(Errc::unknown_semaphore, "no semaphore " + std::to_string(n.sem));
    if (n.count > detail::Permits::capacity(*s))
      return Error(Errc::need_exceeds_capacity, "the task needs " + std::to_string(n.count) +
                                                    " permits of a semaphore of " +
                                                    std::to_string(detail::Permits::capacity(*s)));
  }
  const std::int64_t now = now_ms();
  auto t = make_template(spec, core, q, now);
  if (!t) return t.error();
  const Recurrence r{t->cron, t->every_ms};
  const std::uint64_t first = detail::schedule_next(r.next_after(now, spec.zone, now), 0);
  std::uint64_t w = 0;
  if (find_schedule(core, spec.id, w) >= 0) return Error(Errc::exists, "a schedule '" + spec.id + "' exists");
  for (std::uint32_t e = 0; e < detail::kMaxSchedules; ++e) {
    ScheduleEntry& en = core.schedules[e];
    w = en.word.load(std::memory_order_acquire);
    if (detail::schedule_state(w) != ScheduleEntry::kFree) continue;
    const std::uint64_t gen = detail::schedule_gen(w) + 1;
    // acq_rel: the entry is ours to fill; a failed CAS means another took it.
    if (!en.word.compare_exchange_strong(w, detail::schedule_word(gen, ScheduleEntry::kCreating),
                                         std::memory_order_acq_rel))
      continue;
    detail::write_name(en.name, spec.id);
    detail::store_words(en.tmpl, *t);
    for (auto* c : {&en.fired, &en.missed, &en.last_task, &en.stalls}) c->store(0, std::memory_order_relaxed);
    en.last_due_ms.store(0, std::memory_order_relaxed);
    en.last_late_us.store(0, std::memory_order_relaxed);
    en.next.store(first, std::memory_order_relaxed);
    // seq_cst (a release too): publishes the template; ordered before the look below.
    en.word.store(detail::schedule_word(gen, ScheduleEntry::kActive), std::memory_order_seq_cst);
    // Two adders of one id racing: the entry with the lower index keeps it.
    for (std::uint32_t other = 0; other < e; ++other) {
      const std::uint64_t ow = core.schedules[other].word.load(std::memory_order_seq_cst);
      if (!in_use(ow) || !detail::name_equals(core.schedules[other].name, spec.id)) continue;
      en.word.store(detail::schedule_word(gen, ScheduleEntry::kFree), std::memory_order_release);
      return Error(Errc::exists, "a schedule '" + spec.id + "' exists");
    }
    im.lower_schedule_due(detail::schedule_due(first));
    return {};
  }
  return Error(Errc::schedule_table_full, "no room for schedule '" + spec.id + "' (" +
                                              std::to_string(detail::kMaxSchedules) + " schedules at most)");
}

Errc Client::remove_schedule(std::string_view id) noexcept {
  auto& core = *impl_->core;
  std::uint64_t w = 0;
  for (int tries = 0; tries < 1000; ++tries) {
    const std::int64_t e = find_schedule(core, id, w);
    if (e < 0) return Errc::unknown_schedule;
    // acq_rel: one CAS; the generation stays, so a firer that read the schedule sees it gone.
    if (core.schedules[e].word.compare_exchange_strong(
            w, detail::schedule_word(detail::schedule_gen(w), ScheduleEntry::kFree), std::memory_order_acq_rel))
      return Errc::ok;
  }
  return Errc::unknown_schedule;
}

Errc Client::pause_schedule(std::string_view id) noexcept {
  auto& core = *impl_->core;
  std::uint64_t w = 0;
  const std::int64_t e = find_schedule(core, id, w);
  if (e < 0) return Errc::unknown_schedule;
  if (detail::schedule_state(w) == ScheduleEntry::kPaused) return Errc::ok;
  // acq_rel: a due time claimed before this still fires; none after it does.
  if (!core.schedules[e].word.compare_exchange_strong(
          w, detail::schedule_word(detail::schedule_gen(w), ScheduleEntry::kPaused), std::memory_order_acq_rel))
    return find_schedule(core, id, w) >= 0 ? Errc::ok : Errc::unknown_schedule;
  return Errc::ok;
}

Errc Client::resume_schedule(std::string_view id) noexcept {
  auto& im = *impl_;
  auto& core = *im.core;
  std::uint64_t w = 0;
  const std::int64_t e = find_schedule(core, id, w);
  if (e < 0) return Errc::unknown_schedule;
  if (detail::schedule_state(w) != ScheduleEntry::kPaused) return Errc::ok;
  ScheduleEntry& en = core.schedules[e];
  detail::ScheduleTemplate t;
  if (!detail::read_template(en, w, t)) return Errc::unknown_schedule;
  // While still paused: the next due time moves past now (the ones passed are not
  // missed runs), once any claim made before the pause is finished.
  const std::int64_t now = now_ms();
  const Recurrence r{t.cron, t.every_ms};
  std::uint64_t n = en.next.load(std::memory_order_acquire);
  for (int spins = 0; spins < 100'000; ++spins, n = en.next.load(std::memory_order_acquire)) {
    if (detail::schedule_claimer(n) != 0) {
      std::this_thread::yield();
      continue;
    }
    const std::int64_t due = detail::schedule_due(n);
    if (due == 0 || due > now) break;
    // acq_rel: as F4.
    if (en.next.compare_exchange_strong(
            n, detail::schedule_next(r.next_after(now, static_cast<TimeZone>(t.zone), t.anchor_ms), 0),
            std::memory_order_acq_rel))
      break;
  }
  // acq_rel: from here on firers fire it.
  if (!en.word.compare_exchange_strong(w, detail::schedule_word(detail::schedule_gen(w), ScheduleEntry::kActive),
                                       std::memory_order_acq_rel))
    return find_schedule(core, id, w) >= 0 ? Errc::ok : Errc::unknown_schedule;
  im.lower_schedule_due(detail::schedule_due(en.next.load(std::memory_order_acquire)));
  return Errc::ok;
}

Result<ScheduleInfo> Client::schedule(std::string_view id) const {
  return shmsched::schedule(*impl_->seg, id);
}

std::vector<ScheduleInfo> Client::schedules() const {
  return shmsched::schedules(*impl_->seg);
}

Result<ScheduleInfo> schedule(const Segment& segment, std::string_view id) {
  for (auto& s : schedules(segment))
    if (s.spec.id == id) return s;
  return Error(Errc::unknown_schedule, "no schedule '" + std::string(id) + "'");
}

std::vector<ScheduleInfo> schedules(const Segment& segment) {
  const auto& core = detail::core_of(segment);
  std::vector<ScheduleInfo> out;
  for (std::uint32_t e = 0; e < detail::kMaxSchedules; ++e) {
    const ScheduleEntry& en = core.schedules[e];
    for (int tries = 0; tries < 100; ++tries) {
      const std::uint64_t w = en.word.load(std::memory_order_acquire);
      if (!in_use(w)) break;
      detail::ScheduleTemplate t;
      if (!detail::read_template(en, w, t)) continue;  // changed while read: again
      out.push_back(info_of(en, w, t));
      break;
    }
  }
  return out;
}

}  // namespace shmsched
