// priority_demo: producer processes enqueue tasks across 8 priority levels into one
// named segment; a separate consumer process then drains the queue and shows that it
// ran them in priority order (level 0 first, FIFO within a level) and lost none.
//
//   priority_demo [--producers N] [--tasks-per-producer M]
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "shmsched/shmsched.hpp"

using namespace shmsched;

namespace {

struct Job {
  std::uint32_t producer;
  std::uint32_t seq;
  std::uint32_t level;
};

int fail(const char* what, const Error& e) {
  std::fprintf(stderr, "priority_demo: %s: %s\n", what, e.message().c_str());
  return 1;
}

int produce(const std::string& name, std::uint32_t producer, std::uint32_t count) {
  auto seg = Segment::open(name);
  if (!seg) return fail("open", seg.error());
  auto cli = Client::attach(*seg, Role::producer);
  if (!cli) return fail("attach", cli.error());
  auto q = seg->find_queue("general");
  if (!q) return fail("queue", q.error());
  std::uint64_t seed = 0x9E3779B97F4A7C15ULL * (producer + 1);
  for (std::uint32_t i = 0; i < count; ++i) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    const Job job{producer, i, static_cast<std::uint32_t>(seed % 8)};
    TaskOptions o;
    o.queue = *q;
    o.priority = static_cast<std::uint8_t>(job.level);
    const Errc e = cli->enqueue_wait("report", as_payload(job), o, std::chrono::seconds(10));
    if (e != Errc::ok) {
      std::fprintf(stderr, "priority_demo: enqueue: %s\n", std::string(to_string(e)).c_str());
      return 1;
    }
  }
  std::printf("producer %u (pid %d): enqueued %u tasks across levels 0..7\n", producer, getpid(), count);
  return 0;
}

int consume(const std::string& name, std::uint32_t producers, std::uint32_t per_producer) {
  auto seg = Segment::open(name);
  if (!seg) return fail("open", seg.error());
  auto cli = Client::attach(*seg, Role::consumer);
  if (!cli) return fail("attach", cli.error());
  const QueueId q = seg->find_queue("general").value();
  std::vector<std::uint64_t> per_level(8, 0);
  std::vector<std::vector<std::int64_t>> last_seq(producers, std::vector<std::int64_t>(8, -1));
  std::vector<std::uint8_t> seen(std::size_t{producers} * per_producer, 0);
  std::uint64_t taken = 0, order_violations = 0, fifo_violations = 0, duplicates = 0;
  std::uint32_t prev_level = 0;
  Taken t;
  while (cli->try_take(q, t)) {
    Job job{};
    if (!payload_to(t.payload, job) || job.producer >= producers || job.seq >= per_producer) {
      std::fprintf(stderr, "priority_demo: malformed task %llu\n", static_cast<unsigned long long>(t.id));
      return 1;
    }
    if (t.level < prev_level) ++order_violations;
    prev_level = t.level;
    auto& last = last_seq[job.producer][job.level];
    if (static_cast<std::int64_t>(job.seq) <= last) ++fifo_violations;
    last = job.seq;
    auto& s = seen[std::size_t{job.producer} * per_producer + job.seq];
    duplicates += s;
    s = 1;
    ++per_level[t.level];
    ++taken;
    if (cli->complete(t) != Errc::ok) return 1;
  }
  std::uint64_t missing = 0;
  for (auto s : seen) missing += s == 0;
  std::printf("consumer (pid %d): drained %llu tasks in this order of levels:\n", getpid(),
              static_cast<unsigned long long>(taken));
  for (int l = 0; l < 8; ++l)
    std::printf("  level %d: %6llu tasks%s\n", l, static_cast<unsigned long long>(per_level[l]),
                l == 0 ? "  (most urgent, ran first)" : "");
  std::printf("priority order violations: %llu, FIFO violations within a level: %llu\n",
              static_cast<unsigned long long>(order_violations), static_cast<unsigned long long>(fifo_violations));
  std::printf("tasks lost: %llu, duplicates: %llu\n", static_cast<unsigned long long>(missing),
              static_cast<unsigned long long>(duplicates));
  const bool ok = missing == 0 && duplicates == 0 && order_violations == 0 && fifo_violations == 0;
  std::printf("%s\n", ok ? "OK: every task ran once, most urgent first" : "FAILED");
  return ok ? 0 : 1;
}

int wait_all(const std::vector<pid_t>& pids) {
  int rc = 0;
  for (pid_t p : pids) {
    int status = 0;
    ::waitpid(p, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint32_t producers = 2, per_producer = 20000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--producers") == 0)
      producers = static_cast<std::uint32_t>(std::atoi(argv[i + 1]));
    else if (std::strcmp(argv[i], "--tasks-per-producer") == 0)
      per_producer = static_cast<std::uint32_t>(std::atoi(argv[i + 1]));
  }
  if (producers == 0 || producers > 16 || per_producer == 0 || producers * per_producer > 65536) {
    std::fprintf(stderr,
                 "usage: priority_demo [--producers 1..16] [--tasks-per-producer M], at most 65536 tasks in all\n");
    return 2;
  }
  const std::string name = "demo-" + std::to_string(getpid());
  Layout layout;
  layout.task_capacity = 65536;  // room for the whole backlog
  layout.payload_bytes = 64;
  layout.max_queues = 4;
  {
    auto seg = Segment::create(name, layout, CreateOptions{0600, {"general"}});
    if (!seg) return fail("create", seg.error());
    std::printf("segment /dev/shm/%s: %zu MiB mapped (pages are touched only when used)\n",
                Segment::object_name(name).c_str(), seg->size_bytes() >> 20);
  }
  std::fflush(nullptr);
  std::vector<pid_t> pids;
  for (std::uint32_t p = 0; p < producers; ++p) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int r = produce(name, p, per_producer);
      std::fflush(nullptr);
      ::_exit(r);
    }
    pids.push_back(pid);
  }
  int rc = wait_all(pids);
  if (rc == 0) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int r = consume(name, producers, per_producer);
      std::fflush(nullptr);
      ::_exit(r);
    }
    rc = wait_all({pid});
  }
  (void)Segment::destroy(name);
  return rc;
}
