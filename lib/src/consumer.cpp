#include "shmsched/consumer.hpp"

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <exception>
#include <optional>
#include <thread>
#include <unordered_map>

#include "shmsched/detail/saturate.hpp"

namespace shmsched {

namespace {
inline void cpu_relax() noexcept {
  __builtin_ia32_pause();
}
}  // namespace

struct Consumer::Impl {
  Segment* seg = nullptr;
  std::unique_ptr<Client> client;
  ConsumerOptions opts;
  std::vector<QueueId> home, help;
  std::unordered_map<std::uint64_t, Handler> handlers;
  struct BatchSpec {
    std::size_t max = 1;
    std::int64_t wait_ns = 0;
    BatchHandler handler;
  };
  std::unordered_map<std::uint64_t, BatchSpec> batch_handlers;
  std::atomic<std::uint64_t> batches{0};
  EventHook hook;
  std::unordered_map<std::uint64_t, std::string> handler_names;
  std::unordered_map<std::uint64_t, std::array<Need, 2>> type_needs;
  std::atomic<std::uint64_t> parked{0}, handed{0};
  std::vector<std::thread> threads;
  std::thread keeper;  // the housekeeper
  std::stop_source stop;
  std::atomic<unsigned> live_workers{0};
  // One stop token per worker, made once: copying a token per task would bump a
  // reference count shared by all workers.
  std::vector<std::stop_token> tokens;
  // Handler runs not yet added to the participant's shared `processed` counter, per
  // worker (flushed every kFlushEvery runs and when the worker idles).
  static constexpr unsigned kFlushEvery = 32;
  struct alignas(64) WorkerLocal {
    unsigned unflushed = 0;
    // Tasks this worker completed; summed by stats(). Only its worker writes it, and
    // stats() may read it from another thread, hence an atomic (relaxed, no RMW).
    std::atomic<std::uint64_t> done{0};
    WorkerLocal() = default;
    WorkerLocal(const WorkerLocal&) {}
    WorkerLocal& operator=(const WorkerLocal&) { return *this; }
  };
  std::vector<WorkerLocal> local;

  void flush_processed(unsigned w) noexcept {
    if (local[w].unflushed == 0) return;
    client->count_processed(local[w].unflushed);
    local[w].unflushed = 0;
  }
  std::atomic<std::uint64_t> done{0}, retried{0}, failed{0}, dead{0}, helped{0}, no_handler{0}, cancelled{0};
  bool started = false;
  bool joined = false;

  std::string_view queue_name(QueueId q) const noexcept {
    for (std::size_t i = 0; i < home.size(); ++i)
      if (home[i] == q) return opts.home[i];
    for (std::size_t i = 0; i < help.size(); ++i)
      if (help[i] == q) return opts.help[i];
    return {};
  }

  bool take(Taken& t, bool may_help) noexcept {
    for (QueueId q : home)
      if (client->try_take(q, t)) return true;
    if (may_help)
      for (QueueId q : help)
        if (client->try_take(q, t, true)) return true;
    return false;
  }

  // This process's participant slot (current_task is shown by inspect and shmctl).
  std::optional<StatusBoard> board;  // this process's, from start()

  // The handler of a type; each worker remembers the last one it looked up, since a
  // worker usually runs many tasks of one type in a row (the map is not touched then).
  struct HandlerCache {
    std::uint64_t type = 0;
    Handler* handler = nullptr;
  };
  Handler* handler_of(std::uint64_t type, HandlerCache& cache) {
    if (cache.handler != nullptr && cache.type == type) return cache.handler;
    const auto it = handlers.find(type);
    if (it == handlers.end()) return nullptr;
    cache = {type, &it->second};
    return cache.handler;
  }

  // Runs `t` and any parked tasks handed over to this worker by the permits it frees.
  // `next` is the worker's scratch record for a handed-over task.
  void run(Taken& t, unsigned w, Taken& next, HandlerCache& cache) {
    for (int hops = 0; hops < 64; ++hops) {
      if (const BatchSpec* b = batch_of(t.type); b != nullptr) return run_batch(t, w, *b, next, cache);
      if (!run_one(t, w, next, cache)) return;
      t = next;
      handed.fetch_add(1, std::memory_order_relaxed);
    }
    (void)client->requeue(t);  // bound the chain: let another take it
  }

  // The task's own needs, else its type's; plus the queue's concurrency limit if the
  // queue has one and a need is still free.
  std::array<Need, 2> needs_of(const Taken& t) const {
    std::array<Need, 2> need{};
    if (t.needs[0].count != 0 || t.needs[1].count != 0) {
      need = {t.needs[0], t.needs[1]};
    } else if (auto it = type_needs.empty() ? type_needs.end() : type_needs.find(t.type); it != type_needs.end()) {
      need = it->second;
    }
    if (SemId limit = 0; client->queue_limit(t.queue, limit)) {
      for (Need& n : need) {
        if (n.count == 0) {
          n = Need{limit, 1};
          break;
        }
      }
    }
    return need;
  }

  void emit(TaskEvent e, const Taken& t, std::string_view why) noexcept {
    if (!hook) return;
    try {
      hook(e, t, why);
    } catch (...) {  // the task has moved on: nothing to undo
    }
  }

  // Calls the handler; an exception counts as a failure with its message.
  static Outcome invoke(Handler& handler, TaskContext& ctx) {
    try {
      return handler(ctx);
    } catch (const std::exception& e) {
      return Outcome::fail(e.what());
    } catch (...) {
      return Outcome::fail("handler threw a non-standard exception");
    }
  }

  // Returns true with `next` set when a parked task was handed over.
  bool run_one(Taken& t, unsigned w, Taken& next, HandlerCache& cache) {
    if (t.helped) helped.fetch_add(1, std::memory_order_relaxed);
    Handler* handler = handler_of(t.type, cache);
    if (handler == nullptr) {
      std::string why = "no handler for type '";
      why += t.type_name.empty() ? std::to_string(t.type) : std::string(t.type_name);
      why += "'";
      (void)client->dead_letter(t, why);
      no_handler.fetch_add(1, std::memory_order_relaxed);
      dead.fetch_add(1, std::memory_order_relaxed);
      emit(TaskEvent::dead_lettered, t, why);
      return false;
    }
    std::array<Need, 2> need{};
    bool has_needs = false;
    if (!admit(t, need, has_needs)) return false;  // parked or delayed (or gone): take other work
    board->set_current_task(t.id);
    TaskContext ctx{t, tokens[w], w, queue_name(t.queue), &*client};
    const Outcome o = invoke(*handler, ctx);
    const bool last_attempt = t.attempt >= t.max_attempts;
    // Permits go back before the record moves on, whatever the outcome; a parked task
    // they free may be handed to us to run next.
    bool handed_over = false;
    if (has_needs) handed_over = client->release_for(t, need, &next);
    if (o.kind() != Outcome::Kind::done && client->cancel_requested(t)) {
      (void)client->finish_cancelled(t);  // gave up on cancel: not retried
      cancelled.fetch_add(1, std::memory_order_relaxed);
      emit(TaskEvent::cancelled, t, {});
    } else {
      finish(w, t, o, last_attempt);
    }
    board->set_current_task(0);
    if (++local[w].unflushed >= kFlushEvery) flush_processed(w);
    if (handed_over && handler_of(next.type, cache) == nullptr && batch_of(next.type) == nullptr) {
      (void)client->requeue(next);  // not ours to run: back to its queue
      return false;
    }
    return handed_over;
  }

  const BatchSpec* batch_of(std::uint64_t type) const {
    if (batch_handlers.empty()) return nullptr;
    const auto it = batch_handlers.find(type);
    return it == batch_handlers.end() ? nullptr : &it->second;
  }

  // Whether `t` may run now: its permits (and rate tokens) granted, or it was parked or
  // delayed for them (no longer ours). Its needs in `need`, whether it has any in `has`.
  bool admit(const Taken& t, std::array<Need, 2>& need, bool& has) {
    need = needs_of(t);
    has = need[0].count != 0 || need[1].count != 0 || client->queue_rated(t.queue);
    if (!has) return true;
    const Client::Grant g = client->acquire_for(t, need);
    if (g == Client::Grant::parked) parked.fetch_add(1, std::memory_order_relaxed);
    return g == Client::Grant::granted;
  }

  // Collects up to spec.max tasks of first's type from its queue (waiting up to
  // spec.wait_ns for more while fewer are queued), runs them with one handler call, and
  // then the tasks of other types it took meanwhile.
  void run_batch(const Taken& first, unsigned w, const BatchSpec& spec, Taken& next, HandlerCache& cache) {
    std::vector<Taken> batch{first}, others;
    const std::int64_t deadline = spec.wait_ns > 0 ? monotonic_ns() + spec.wait_ns : 0;
    Taken x;
    while (batch.size() < spec.max && others.size() < spec.max) {
      if (client->try_take(first.queue, x, first.helped)) {
        (x.type == first.type ? batch : others).push_back(x);
        continue;
      }
      const std::int64_t now = deadline == 0 ? 0 : monotonic_ns();
      if (deadline == 0 || now >= deadline || stop.stop_requested()) break;
      // Fewer are queued than a batch takes: look again shortly, until the deadline.
      std::this_thread::sleep_for(std::chrono::nanoseconds(std::min<std::int64_t>(deadline - now, 100'000)));
    }
    std::vector<std::array<Need, 2>> needs(batch.size());
    std::vector<char> has(batch.size());
    std::size_t k = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      bool h = false;
      if (!admit(batch[i], needs[k], h)) continue;  // parked or delayed: not in this batch
      has[k] = h ? 1 : 0;
      batch[k++] = batch[i];
    }
    batch.resize(k);
    if (k != 0) run_admitted(batch, needs, has, w, spec);
    for (Taken& o : others) run(o, w, next, cache);
  }

  void run_admitted(std::vector<Taken>& batch, const std::vector<std::array<Need, 2>>& needs,
                    const std::vector<char>& has, unsigned w, const BatchSpec& spec) {
    for (const Taken& t : batch)
      if (t.helped) helped.fetch_add(1, std::memory_order_relaxed);
    std::vector<Outcome> outcomes(batch.size(), Outcome::done());
    board->set_current_task(batch.front().id);
    BatchContext ctx{batch, outcomes, tokens[w], w, &*client};
    try {
      spec.handler(ctx);
    } catch (const std::exception& e) {
      outcomes.assign(batch.size(), Outcome::fail(e.what()));
    } catch (...) {
      outcomes.assign(batch.size(), Outcome::fail("batch handler threw a non-standard exception"));
    }
    batches.fetch_add(1, std::memory_order_relaxed);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const Taken& t = batch[i];
      if (has[i]) (void)client->release_for(t, needs[i]);  // no hand-over: parked tasks go back to their queues
      const Outcome& o = outcomes[i];
      if (o.kind() != Outcome::Kind::done && client->cancel_requested(t)) {
        (void)client->finish_cancelled(t);
        cancelled.fetch_add(1, std::memory_order_relaxed);
        emit(TaskEvent::cancelled, t, {});
      } else {
        finish(w, t, o, t.attempt >= t.max_attempts);
      }
      if (++local[w].unflushed >= kFlushEvery) flush_processed(w);
    }
    board->set_current_task(0);
  }

  // Moves task t on by its handler's outcome.
  void finish(unsigned w, const Taken& t, const Outcome& o, bool last_attempt) {
    switch (o.kind()) {
      case Outcome::Kind::done:
        (void)(t.keep_result ? client->complete(t, as_payload(std::string_view(o.result()))) : client->complete(t));
        local[w].done.store(local[w].done.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        emit(TaskEvent::done, t, {});
        break;
      case Outcome::Kind::retry:
      case Outcome::Kind::fail: {
        const bool is_fail = o.kind() == Outcome::Kind::fail;
        (void)client->retry_or_dead_letter(t, o.reason(), o.delay(), is_fail);
        (last_attempt ? dead : retried).fetch_add(1, std::memory_order_relaxed);
        if (is_fail) failed.fetch_add(1, std::memory_order_relaxed);
        emit(last_attempt ? TaskEvent::dead_lettered : is_fail ? TaskEvent::failed : TaskEvent::retried, t, o.reason());
        break;
      }
    }
  }

  void worker(unsigned w) {
    const bool may_help = !help.empty() && w >= opts.reserve;
    const std::span<const QueueId> home_span(home);
    const std::span<const QueueId> help_span = may_help ? std::span<const QueueId>(help) : std::span<const QueueId>();
    const std::int64_t tick_ns = std::chrono::nanoseconds(opts.tick).count();
    unsigned idle = 0;
    Taken t, next;
    HandlerCache cache;
    while (!stop.stop_requested()) {
      if (take(t, may_help)) {
        run(t, w, next, cache);
        idle = 0;
        continue;
      }
      if (++idle < opts.spin) {
        cpu_relax();
        continue;
      }
      flush_processed(w);
      // Sleep: read the doorbell, announce, look once more, then wait. A producer that
      // publishes after our last look sees our bit and rings (docs/consumer.md).
      const std::uint32_t seen = client->doorbell();
      client->announce_sleep(home_span, help_span);
      if (!stop.stop_requested() && take(t, may_help)) {
        client->wake_up(home_span, help_span);
        run(t, w, next, cache);
        idle = 0;
        continue;
      }
      if (!stop.stop_requested()) {
        // Idle workers make delayed tasks due themselves (cheap when none is), and sleep
        // no longer than until the next one is due: retries and ETAs do not wait for a
        // janitor that may be busy.
        const std::int64_t now = monotonic_ns();
        client->promote_due(now);
        client->sleep(seen, std::chrono::nanoseconds(client->sleep_until_due_ns(now, tick_ns)));
      }
      client->wake_up(home_span, help_span);
      idle = opts.spin / 2;  // a short spin after waking: work often comes in bursts
    }
    flush_processed(w);
    live_workers.fetch_sub(1, std::memory_order_acq_rel);
  }

  // The housekeeper: one thread per consumer process, never running a handler, so
  // nothing a handler does delays it. Each tick it beats, and renews (or takes over)
  // the janitor lease and does the janitor's duties (janitor_tick); between ticks it
  // sleeps until the next delayed task is due (wait_for_due: a producer that sets an
  // earlier due time wakes it), so retries and ETAs are promoted on time while every
  // worker is busy; the janitor's also until the next schedule is due, and fires it.
  void housekeeper() {
    const std::int64_t tick_ns = std::chrono::nanoseconds(opts.tick).count();
    std::int64_t next_tick = 0;
    while (!stop.stop_requested()) {
      std::int64_t now = monotonic_ns();
      if (now >= next_tick) {
        client->janitor_tick(now);
        next_tick = now + tick_ns;
      }
      client->promote_due(now);
      if (client->holds_janitor_lease()) client->fire_schedules(unix_ns() / 1'000'000);
      const std::uint32_t seen = client->due_seq();  // before the stop check: request_stop bumps it
      if (stop.stop_requested()) break;
      now = monotonic_ns();
      client->wait_for_due(seen, std::chrono::nanoseconds(std::max<std::int64_t>(next_tick - now, 1)));
    }
  }
};

Consumer::Consumer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Consumer::~Consumer() {
  if (impl_->started && !impl_->joined) {
    request_stop();
    join();
  }
}

Result<std::unique_ptr<Consumer>> Consumer::create(Segment& segment, ConsumerOptions options) {
  if (options.workers == 0 || options.workers > 1024) return Error(Errc::invalid_argument, "workers must be 1..1024");
  if (options.reserve > options.workers) return Error(Errc::invalid_argument, "reserve must not exceed workers");
  if (options.home.empty() && options.help.empty())
    return Error(Errc::invalid_argument, "a consumer needs at least one home or help queue");
  if (options.tick.count() <= 0) return Error(Errc::invalid_argument, "tick must be positive");
  if (options.take_ahead == 0 || options.take_ahead > Client::kMaxTakeAhead)
    return Error(Errc::invalid_argument, "take_ahead must be 1.." + std::to_string(Client::kMaxTakeAhead));
  auto impl = std::make_unique<Impl>();
  impl->seg = &segment;
  for (const auto& n : options.home) {
    auto q = segment.find_queue(n);
    if (!q) return q.error();
    impl->home.push_back(*q);
  }
  for (const auto& n : options.help) {
    auto q = segment.find_queue(n);
    if (!q) return q.error();
    impl->help.push_back(*q);
  }
  auto c = Client::attach(segment, options.role);
  if (!c) return c.error();
  impl->client = std::make_unique<Client>(std::move(*c));
  if (options.take_ahead > 1)
    for (QueueId q : impl->home)
      if (const Errc e = impl->client->set_take_ahead(q, options.take_ahead); e != Errc::ok)
        return Error(e, "take_ahead of a home queue");
  impl->opts = std::move(options);
  return std::unique_ptr<Consumer>(new Consumer(std::move(impl)));
}

void Consumer::on(std::string_view type, Handler handler) {
  impl_->handlers[type_hash(type)] = std::move(handler);
  impl_->handler_names[type_hash(type)] = std::string(type);
}

void Consumer::on_batch(std::string_view type, std::size_t max_tasks, std::chrono::nanoseconds max_wait,
                        BatchHandler handler) {
  impl_->batch_handlers[type_hash(type)] = Impl::BatchSpec{
      std::max<std::size_t>(max_tasks, 1), std::max<std::int64_t>(max_wait.count(), 0), std::move(handler)};
  impl_->handler_names[type_hash(type)] = std::string(type);
}

void Consumer::on_event(EventHook hook) {
  impl_->hook = std::move(hook);
}

Result<void> Consumer::needs(std::string_view type, const std::vector<std::pair<std::string, std::uint16_t>>& list) {
  if (list.size() > 2) return Result<void>(Errc::invalid_argument, "a task type may need at most two semaphores");
  Need need[2] = {};
  for (std::size_t i = 0; i < list.size(); ++i) {
    auto id = impl_->seg->find_semaphore(list[i].first);
    if (!id) return Result<void>(id.error());
    need[i] = Need{*id, list[i].second};
  }
  merge_needs(need);  // a semaphore named twice needs the sum
  for (const Need& n : need) {
    if (n.count == 0) continue;
    for (const auto& info : impl_->seg->semaphores())
      if (info.id == n.sem && n.count > info.capacity)
        return Result<void>(Errc::need_exceeds_capacity, "type '" + std::string(type) + "' needs " +
                                                             std::to_string(n.count) + " of '" + info.name +
                                                             "', capacity " + std::to_string(info.capacity));
  }
  impl_->type_needs[type_hash(type)] = {need[0], need[1]};
  return {};
}

void Consumer::start() {
  if (impl_->started) return;
  impl_->started = true;
  impl_->board = impl_->client->status_board();
  impl_->board->set_workers(impl_->opts.workers);
  impl_->board->set_activity(Activity::busy);
  impl_->live_workers.store(impl_->opts.workers, std::memory_order_release);
  impl_->tokens.assign(impl_->opts.workers, impl_->stop.get_token());
  impl_->local.assign(impl_->opts.workers, Impl::WorkerLocal{});
  for (unsigned w = 0; w < impl_->opts.workers; ++w) impl_->threads.emplace_back([this, w] { impl_->worker(w); });
  impl_->keeper = std::thread([this] { impl_->housekeeper(); });
}

void Consumer::request_stop() noexcept {
  impl_->stop.request_stop();
  impl_->client->status_board().set_activity(Activity::stopping);
  impl_->client->ring_own_doorbell();  // sleepers look at the stop flag now
  impl_->client->wake_housekeepers();  // so does the housekeeper (others just look again)
}

bool Consumer::stopping() const noexcept {
  return impl_->stop.stop_requested();
}

bool Consumer::join() {
  if (!impl_->started || impl_->joined) return true;
  const auto deadline = std::chrono::steady_clock::now() + impl_->opts.grace;
  while (impl_->live_workers.load(std::memory_order_acquire) != 0) {
    if (impl_->stop.stop_requested() && std::chrono::steady_clock::now() >= deadline) {
      // Handlers overran the grace period: leave them to the reaper after exit.
      for (auto& t : impl_->threads) t.detach();
      impl_->threads.clear();
      if (impl_->keeper.joinable()) impl_->keeper.join();  // woken by request_stop
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  if (impl_->keeper.joinable()) {
    impl_->stop.request_stop();  // workers are gone; so goes the housekeeper
    impl_->client->wake_housekeepers();
    impl_->keeper.join();
  }
  impl_->joined = true;
  impl_->client->detach();  // puts back anything still held (nothing, normally)
  return true;
}

int Consumer::run_until_signal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // workers inherit the mask
  start();
  siginfo_t info;
  while (sigwaitinfo(&set, &info) < 0) {
  }
  request_stop();
  const auto deadline = std::chrono::steady_clock::now() + impl_->opts.grace;
  while (impl_->live_workers.load(std::memory_order_acquire) != 0 && std::chrono::steady_clock::now() < deadline) {
    const timespec ts{0, 20'000'000};
    if (sigtimedwait(&set, &info, &ts) > 0) {
      // The housekeeper ends at once after request_stop (woken); handlers may not.
      if (impl_->keeper.joinable()) impl_->keeper.join();
      std::fflush(nullptr);
      ::_exit(130);  // second signal: stop at once; the reaper recovers
    }
  }
  if (!join()) {
    std::fflush(nullptr);
    ::_exit(1);  // handlers overran the grace period; the reaper requeues their tasks
  }
  return 0;
}

ConsumerStats Consumer::stats() const noexcept {
  const auto& i = *impl_;
  std::uint64_t done = i.done.load();
  for (const auto& l : i.local) done += l.done.load(std::memory_order_relaxed);
  return ConsumerStats{done,
                       i.retried.load(),
                       i.failed.load(),
                       i.dead.load(),
                       i.helped.load(),
                       i.no_handler.load(),
                       i.parked.load(),
                       i.handed.load(),
                       i.cancelled.load(),
                       i.batches.load()};
}

Client& Consumer::client() noexcept {
  return *impl_->client;
}

}  // namespace shmsched
