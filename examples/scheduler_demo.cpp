// scheduler_demo: the scenario shmsched exists for, as separate processes.
//
//   producer   enqueues dedicated `selenium` tasks (level 0, urgent) and `general`
//              tasks (levels 2..7) into one named segment
//   primary    consumer process, 4 workers, home `general`
//   secondary  consumer process, 2 workers, home `selenium`, help `general`, reserve 1:
//              it drains its own queue first and helps with `general` only while idle
//
// Every `browse` task and every fourth `general` task (a `screenshot`) needs a permit of
// the `selenium` semaphore (capacity 5), shared by both processes: at most 5 run at once,
// the rest park and are handed a permit as one frees.
//
// It prints who ran what, how often the secondary helped, the most permits ever held at
// once, and checks that every task ran exactly once and no permit is left in use.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "shmsched/shmsched.hpp"

using namespace shmsched;
using namespace std::chrono_literals;

namespace {

constexpr std::uint32_t kSelenium = 300;
constexpr std::uint32_t kGeneral = 3000;
constexpr std::uint32_t kTotal = kSelenium + kGeneral;

enum Runner : std::uint8_t { nobody = 0, primary = 1, secondary = 2 };

// Results, in memory shared with the consumer processes.
struct Board {
  std::atomic<std::uint32_t> runs[kTotal];
  std::atomic<std::uint8_t> runner[kTotal];
  std::atomic<std::uint32_t> finished{0};
  std::atomic<std::uint32_t> ran_by[3][2];  // [runner][0 = selenium, 1 = general]
  std::atomic<std::uint32_t> helped{0};
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::int32_t> holding{0};  // tasks inside a selenium session now
  std::atomic<std::int32_t> max_holding{0};
};

struct Job {
  std::uint32_t n;
};

int run_consumer(Segment& seg, Board* board, Runner who) {
  ConsumerOptions co;
  if (who == primary) {
    co.home = {"general"};
    co.workers = 4;
  } else {
    co.home = {"selenium"};
    co.help = {"general"};
    co.workers = 2;
    co.reserve = 1;
  }
  auto c = Consumer::create(seg, co);
  if (!c) {
    std::fprintf(stderr, "scheduler_demo: consumer: %s\n", c.error().message().c_str());
    return 1;
  }
  auto record = [board, who](const Job& job, TaskContext& ctx, int kind, bool session) {
    if (session) {
      const std::int32_t now = board->holding.fetch_add(1) + 1;
      std::int32_t m = board->max_holding.load();
      while (now > m && !board->max_holding.compare_exchange_weak(m, now)) {
      }
    }
    std::this_thread::sleep_for(kind == 0 ? 3ms : 1ms);  // the work
    if (session) board->holding.fetch_sub(1);
    board->runs[job.n].fetch_add(1);
    board->runner[job.n].store(who);
    board->ran_by[who][kind].fetch_add(1);
    if (ctx.task.helped) board->helped.fetch_add(1);
    board->finished.fetch_add(1);
    return Outcome::done();
  };
  (*c)->on_value<Job>("browse", [&](const Job& j, TaskContext& ctx) { return record(j, ctx, 0, true); });
  (*c)->on_value<Job>("report", [&](const Job& j, TaskContext& ctx) { return record(j, ctx, 1, false); });
  (*c)->on_value<Job>("screenshot", [&](const Job& j, TaskContext& ctx) { return record(j, ctx, 1, true); });
  // Both task types that drive a browser need a selenium permit while they run.
  for (const char* type : {"browse", "screenshot"}) {
    if (auto r = (*c)->needs(type, {{"selenium", 1}}); !r) {
      std::fprintf(stderr, "scheduler_demo: needs: %s\n", r.error().message().c_str());
      return 1;
    }
  }
  board->ready.fetch_add(1);
  return (*c)->run_until_signal();
}

pid_t spawn_consumer(const std::string& name, Board* board, Runner who) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  int rc = 1;
  if (auto seg = Segment::open(name); seg) rc = run_consumer(*seg, board, who);
  std::fflush(nullptr);
  ::_exit(rc);
}

}  // namespace

int main() {
  const std::string name = "demo-" + std::to_string(::getpid());
  Layout layout;
  layout.task_capacity = 8192;
  layout.payload_bytes = 64;
  layout.max_queues = 4;
  auto seg = Segment::create(name, layout, CreateOptions{0600, {"selenium", "general"}});
  if (!seg) {
    std::fprintf(stderr, "scheduler_demo: %s\n", seg.error().message().c_str());
    return 1;
  }
  if (auto sem = seg->create_semaphore("selenium", 5); !sem) {
    std::fprintf(stderr, "scheduler_demo: %s\n", sem.error().message().c_str());
    return 1;
  }
  auto* board =
      static_cast<Board*>(::mmap(nullptr, sizeof(Board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (board) Board();
  std::printf(
      "segment /dev/shm/%s; primary: 4 workers, home general; "
      "secondary: 2 workers, home selenium, help general, reserve 1\n",
      Segment::object_name(name).c_str());
  std::fflush(nullptr);
  const pid_t p1 = spawn_consumer(name, board, primary);
  const pid_t p2 = spawn_consumer(name, board, secondary);
  while (board->ready.load() < 2) std::this_thread::sleep_for(1ms);

  auto producer = Client::attach(*seg, Role::producer).value();
  const auto start = std::chrono::steady_clock::now();
  // Bursts: general backlog first, then dedicated work arriving while it is served.
  std::uint32_t s = 0, g = 0;
  for (int burst = 0; burst < 10; ++burst) {
    for (std::uint32_t i = 0; i < kGeneral / 10; ++i, ++g) {
      TaskOptions o;
      o.queue = "general";
      o.priority = static_cast<std::uint8_t>(2 + g % 6);
      (void)producer.enqueue_value(g % 4 == 0 ? "screenshot" : "report", Job{kSelenium + g}, o);
    }
    std::this_thread::sleep_for(30ms);
    for (std::uint32_t i = 0; i < kSelenium / 10; ++i, ++s) {
      TaskOptions o;
      o.queue = "selenium";
      o.priority = 0;
      (void)producer.enqueue_value("browse", Job{s}, o);
    }
  }
  while (board->finished.load() < kTotal && std::chrono::steady_clock::now() - start < 120s)
    std::this_thread::sleep_for(5ms);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ::kill(p1, SIGTERM);
  ::kill(p2, SIGTERM);
  int st1 = 0, st2 = 0;
  ::waitpid(p1, &st1, 0);
  ::waitpid(p2, &st2, 0);

  std::uint32_t lost = 0, dup = 0, sel_by_primary = 0;
  for (std::uint32_t i = 0; i < kTotal; ++i) {
    const auto r = board->runs[i].load();
    lost += r == 0;
    dup += r > 1;
    if (i < kSelenium && board->runner[i].load() == primary) ++sel_by_primary;
  }
  std::printf("ran %u tasks in %.2f s\n", board->finished.load(), secs);
  std::printf("  primary   ran %5u general, %4u selenium\n", board->ran_by[primary][1].load(),
              board->ran_by[primary][0].load());
  std::printf("  secondary ran %5u general, %4u selenium; it helped with general %u times\n",
              board->ran_by[secondary][1].load(), board->ran_by[secondary][0].load(), board->helped.load());
  std::printf("tasks lost: %u, run twice: %u, selenium tasks run by the primary: %u\n", lost, dup, sel_by_primary);
  std::uint32_t in_use = 99;
  for (const auto& info : seg->semaphores())
    if (info.name == "selenium") in_use = info.in_use;
  const auto verified = producer.verify_permits();
  std::printf("selenium semaphore (capacity 5): at most %d sessions at once; in use at the end: %u; ledger %s\n",
              board->max_holding.load(), in_use, verified ? "consistent" : verified.error().message().c_str());
  const bool clean_exit = WIFEXITED(st1) && WEXITSTATUS(st1) == 0 && WIFEXITED(st2) && WEXITSTATUS(st2) == 0;
  std::printf("consumers stopped on SIGTERM: %s\n", clean_exit ? "cleanly" : "NOT cleanly");
  const bool ok = lost == 0 && dup == 0 && sel_by_primary == 0 && clean_exit && board->max_holding.load() <= 5 &&
                  in_use == 0 && verified.ok();
  std::printf("%s\n",
              ok ? "OK: every task ran exactly once; selenium stayed on the secondary; permits held" : "FAILED");
  (void)Segment::destroy(name);
  return ok ? 0 : 1;
}
