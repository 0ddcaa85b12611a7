// mapreduce_demo: a batch job split into a group of thousands of tasks with a fan-in
// step, run by worker processes of which some are killed (SIGKILL) while they work.
//
//   map      3,000 tasks, one per chunk of 1..N: each sums the squares of its chunk and
//            stores the partial sum in its own cell (a store, so a chunk run again after
//            a kill writes the same value)
//   reduce   one task enqueued with after_group: it waits (state `waiting`) until the
//            group is sealed and every map task has finished, then adds the cells (a
//            reduce killed while it runs would run again, to the same total)
//
// Three worker processes (two workers each) run them. While the job runs, the demo kills
// a worker process with SIGKILL every 150 ms (six times) and starts another; the
// survivors' janitor reaps the dead and their tasks run again, each counted once in the
// group. The producer draws a progress bar from wait_group's reports, then checks the
// total against the closed form, the group's counts (3,000 done, nothing failed) and
// verify_groups (the counts against a recount of the table).
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "shmsched/shmsched.hpp"

using namespace shmsched;
using namespace std::chrono_literals;

namespace {

constexpr std::uint32_t kChunks = 3000;
constexpr std::uint64_t kChunkSize = 1000;  // sums 1 .. kChunks * kChunkSize
constexpr int kWorkerProcesses = 3;
constexpr int kKills = 6;

// What the tasks produce, in memory shared with the worker processes.
struct Board {
  std::atomic<std::uint64_t> partial[kChunks];
  std::atomic<std::uint32_t> map_runs{0};  // map handler starts, re-runs after kills included
  std::atomic<std::uint64_t> total{0};
  std::atomic<std::uint32_t> reduce_runs{0};
};

struct Chunk {
  std::uint32_t index;
};

int run_worker(const std::string& name, Board* board) {
  auto seg = Segment::open(name);
  if (!seg) return 1;
  ConsumerOptions co;
  co.home = {"jobs"};
  co.workers = 2;
  auto c = Consumer::create(*seg, co);
  if (!c) return 1;
  (*c)->on_value<Chunk>("map", [board](const Chunk& chunk, TaskContext&) {
    board->map_runs.fetch_add(1);
    std::uint64_t sum = 0;
    const std::uint64_t first = std::uint64_t{chunk.index} * kChunkSize + 1;
    for (std::uint64_t x = first; x < first + kChunkSize; ++x) sum += x * x;
    std::this_thread::sleep_for(2ms);  // the rest of the work
    board->partial[chunk.index].store(sum);
    return Outcome::done();
  });
  (*c)->on_value<Chunk>("reduce", [board](const Chunk&, TaskContext&) {
    std::uint64_t total = 0;
    for (const auto& p : board->partial) total += p.load();
    board->total.store(total);
    board->reduce_runs.fetch_add(1);
    return Outcome::done();
  });
  return (*c)->run_until_signal();
}

pid_t spawn_worker(const std::string& name, Board* board) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  const int rc = run_worker(name, board);
  std::fflush(nullptr);
  ::_exit(rc);
}

void draw(const GroupInfo& g) {
  const std::uint64_t fin = g.finished_members();
  const int width = 40, fill = g.total == 0 ? 0 : static_cast<int>(fin * width / g.total);
  std::printf("\r[%s%s] %5llu/%llu", std::string(static_cast<std::size_t>(fill), '#').c_str(),
              std::string(static_cast<std::size_t>(width - fill), '.').c_str(), static_cast<unsigned long long>(fin),
              static_cast<unsigned long long>(g.total));
  std::fflush(stdout);
}

}  // namespace

int main() {
  const std::string name = "mapreduce-" + std::to_string(::getpid());
  Layout layout;
  layout.task_capacity = 8192;
  layout.payload_bytes = 64;
  layout.max_queues = 2;
  auto seg = Segment::create(name, layout, CreateOptions{0600, {"jobs"}});
  if (!seg) {
    std::fprintf(stderr, "mapreduce_demo: %s\n", seg.error().message().c_str());
    return 1;
  }
  auto* board =
      static_cast<Board*>(::mmap(nullptr, sizeof(Board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (board) Board();
  std::vector<pid_t> workers;
  for (int i = 0; i < kWorkerProcesses; ++i) workers.push_back(spawn_worker(name, board));

  auto producer = Client::attach(*seg, Role::producer).value();
  const GroupId job = producer.create_group("sum-of-squares").value();
  TaskOptions reduce;
  reduce.queue = "jobs";
  reduce.after_group = job;
  TaskId reduce_id = kNoTask;
  if (const Errc e = producer.enqueue_value("reduce", Chunk{0}, reduce, &reduce_id); e != Errc::ok) {
    std::fprintf(stderr, "mapreduce_demo: reduce: %s\n", std::string(to_string(e)).c_str());
    return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  for (std::uint32_t i = 0; i < kChunks; ++i) {
    TaskOptions o;
    o.queue = "jobs";
    o.group_id = job;
    o.max_attempts = 10;  // a kill costs an attempt
    if (const Errc e = producer.enqueue_value("map", Chunk{i}, o); e != Errc::ok) {
      std::fprintf(stderr, "mapreduce_demo: map %u: %s\n", i, std::string(to_string(e)).c_str());
      return 1;
    }
  }
  (void)producer.seal_group(job);
  std::printf("group sum-of-squares: %u map tasks, then reduce (task %llu, waiting); %d worker processes\n", kChunks,
              static_cast<unsigned long long>(reduce_id), kWorkerProcesses);

  // The killer: SIGKILL a worker process every 150 ms and start another in its place.
  std::atomic<bool> done{false};
  std::atomic<int> kills{0};
  std::thread killer([&] {
    for (int k = 0; k < kKills && !done.load(); ++k) {
      std::this_thread::sleep_for(150ms);
      if (done.load()) break;
      const std::size_t victim = static_cast<std::size_t>(k) % workers.size();
      ::kill(workers[victim], SIGKILL);
      ::waitpid(workers[victim], nullptr, 0);
      workers[victim] = spawn_worker(name, board);
      kills.fetch_add(1);
    }
  });
  auto waited = producer.wait_group(job, 120s, draw, 50ms);
  done = true;
  killer.join();
  std::printf("\n");
  const std::int64_t deadline = monotonic_ns() + 30'000'000'000;
  while (board->reduce_runs.load() == 0 && monotonic_ns() < deadline) std::this_thread::sleep_for(1ms);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (pid_t w : workers) ::kill(w, SIGTERM);
  for (pid_t w : workers) ::waitpid(w, nullptr, 0);

  const std::uint64_t n = std::uint64_t{kChunks} * kChunkSize;
  const unsigned __int128 exact = static_cast<unsigned __int128>(n) * (n + 1) * (2 * n + 1) / 6;
  const auto expected = static_cast<std::uint64_t>(exact);  // the sum wraps mod 2^64 on both sides
  const auto verified = producer.verify_groups();
  bool ok = waited.ok();
  if (waited) {
    const GroupInfo& g = *waited;
    std::printf(
        "map: %llu done, %llu failed, %llu cancelled; %u handler starts for %u tasks (%d worker processes killed)\n",
        static_cast<unsigned long long>(g.done), static_cast<unsigned long long>(g.failed),
        static_cast<unsigned long long>(g.cancelled), board->map_runs.load(), kChunks, kills.load());
    ok = ok && g.done == kChunks && g.failed == 0 && g.cancelled == 0;
  } else {
    std::printf("wait_group: %s\n", waited.error().message().c_str());
  }
  std::printf("reduce ran %u time(s): total %llu, expected %llu; %.2f s\n", board->reduce_runs.load(),
              static_cast<unsigned long long>(board->total.load()), static_cast<unsigned long long>(expected), secs);
  std::printf("group counts against the table: %s\n", verified ? "consistent" : verified.error().message().c_str());
  // At least once: a reduce killed while it ran would run again, to the same total.
  ok = ok && board->reduce_runs.load() >= 1 && board->total.load() == expected && verified.ok();
  std::printf("%s\n", ok ? "OK: every chunk counted once, reduce ran after the last, through the kills" : "FAILED");
  (void)Segment::destroy(name);
  return ok ? 0 : 1;
}
