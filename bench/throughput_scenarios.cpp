// shmsched_throughput: the whole task path -- enqueue -> handler -> ack -- between separate
// processes, shmsched against Boost.Interprocess message_queue and Redis (bench/process_run.hpp
// runs them all the same way).
//
//   shmsched_throughput [--json=PATH] [--quick] [--only=SUBSTRING] [--tasks=N] [--rounds=R]
//
//   --json=PATH  append one JSON object per line to PATH (default: stdout); a summary of
//                each record goes to stderr either way
//   --quick      fewer tasks and samples: well under a minute on 2 cores
//   --only=S     run only the measurements whose "scenario/system" contains S
//   --tasks=N    tasks per shmsched / boost_mq throughput run (default 1,000,000, --quick
//                200,000); Redis runs use at most N
//   --rounds=R   measure the rows the floors are judged on R times, every system once a
//                round (default 1); each record says its round in extra.round
//
// Scenarios (scenario names as in bench/results/latest.json):
//   full_path         tasks/s, clock from the first enqueue to the last handler's completion;
//                     payloads of 64 and 256 bytes; 1 producer / 1 consumer and 2 / 2, each
//                     its own process; systems shmsched, boost_mq, redis, redis_pipelined. The
//                     64-byte 1P/1C rows run once a round.
//   latency_busy      one way, just before enqueue -> first instruction of the handler, a task
//                     every 20..25 us, one at a time (the consumer is awake); shmsched,
//                     boost_mq, redis
//   latency_sleeping  the same with 2..2.5 ms between tasks, so that the consumer has gone to
//                     sleep in the kernel before each one; once a round
//   scaling           full_path at 64 B with N producers and N consumers, N = 1 .. 2x the cores
//                     this process may use (at most 8); shmsched and boost_mq
//   chain             a chain of 1,000 dependent tasks (after_task + pipe) run by a consumer
//                     process with one worker; latency of each link's start after its
//                     parent's handler returned; once a round; shmsched only
//   result_round_trip one producer waits for each task's result in turn: enqueue with
//                     keep_result -> a consumer process runs it, keeping "ok" -> wait returns
//                     it; round trips/s and their latency. Against Redis as a result
//                     backend: LPUSH the task, the worker BRPOPs it and LPUSHes the result
//                     to the task's own list, the producer BRPOPs that list.
//
// The systems:
//   shmsched         a producer process attaches a Client and enqueues with priorities 0..7
//                    (priority_of); a consumer process runs a shmsched::Consumer with 1 worker,
//                    the default spin and tick, and a handler that copies the payload out and
//                    checksums it. Segment: 8 levels, 65536 records, payload = the payload size.
//   boost_mq         boost::interprocess::message_queue, 1024 messages of the payload size,
//                    priority = priority_of (reversed: boost serves the highest number first),
//                    blocking send / receive; with several producers and consumers, all of
//                    them share the one queue.
//   redis            a private redis-server on a free loopback port; one list per priority
//                    level; producers LPUSH to the list of the task's level, consumers BRPOP
//                    all eight lists in priority order (what RQ-style workers do with several
//                    queues): one round trip per operation.
//   redis_pipelined  producers pipeline LPUSH in batches of 64; consumers pop up to 64 per
//                    round trip with BLMPOP (Redis 7) over the same eight lists, which blocks
//                    when they are empty, as BRPOP does, and keeps the priority order.
//   Redis moves 15k..100k tasks/s, so it gets far fewer tasks (redis 20,000, 5,000 with
//   --quick; redis_pipelined five times that): tasks/s is a rate, and extra.tasks records the
//   count used.
//
// Exit status: 0 when no record has an error, 1 otherwise. A Redis record whose error is
// "redis not available: ..." (hiredis not compiled in, or no redis-server on PATH) is
// written but does not count as a failure; a server that is there but fails does.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(SHMSCHED_BENCH_HAVE_HIREDIS) && SHMSCHED_BENCH_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#define SHMSCHED_TP_REDIS 1
#else
#define SHMSCHED_TP_REDIS 0
#endif

#include "process_run.hpp"

namespace shmsched::bench {
namespace {

using namespace run;

constexpr std::size_t kRedisBatch = 64;  // redis_pipelined: commands per round trip

// ---- Redis ---------------------------------------------------------------------------

#if SHMSCHED_TP_REDIS

constexpr const char* kRedisKeys[kLevels] = {"tp:q0", "tp:q1", "tp:q2", "tp:q3", "tp:q4", "tp:q5", "tp:q6", "tp:q7"};
constexpr const char* kRedisPopTimeout = "0.1";  // seconds; consumers look at `stop` this often when idle

struct ReplyFree {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

Reply as_reply(void* r) noexcept {
  return Reply(static_cast<redisReply*>(r));
}

/// One synchronous hiredis connection to the private server.
class RedisConn {
 public:
  RedisConn() = default;
  RedisConn(const RedisConn&) = delete;
  RedisConn& operator=(const RedisConn&) = delete;
  ~RedisConn() {
    if (c_ != nullptr) redisFree(c_);
  }
  std::string connect(int port, std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) {
    const timeval tv{static_cast<time_t>(timeout.count() / 1000),
                     static_cast<suseconds_t>(timeout.count() % 1000) * 1000};
    c_ = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c_ == nullptr) return "redis: cannot allocate a connection";
    if (c_->err != 0) return std::string("redis connect: ") + c_->errstr;
    // Every command is bounded too (blocking pops use a far shorter timeout of their own).
    const timeval cmd{5, 0};
    if (redisSetTimeout(c_, cmd) != REDIS_OK) return "redis: cannot set the command timeout";
    return {};
  }
  redisContext* get() const noexcept { return c_; }
  /// The error of a failed command: the connection's, or the reply's.
  std::string error_of(const redisReply* r, std::string_view what) const {
    if (r == nullptr) return std::string(what) + ": " + (c_->err != 0 ? c_->errstr : "no reply");
    if (r->type == REDIS_REPLY_ERROR) return std::string(what) + ": " + std::string(r->str, r->len);
    return std::string(what) + ": unexpected reply type " + std::to_string(r->type);
  }

 private:
  redisContext* c_ = nullptr;
};

template <class P>
class RedisSys {
 public:
  static constexpr bool kDoorbell = false;
  RedisSys(int port, bool pipelined) : port_(port), pipelined_(pipelined) {}

  nlohmann::json describe() const {
    nlohmann::json j = {{"transport", "tcp 127.0.0.1"}, {"lists", kLevels}};
    if (pipelined_) {
      j["push"] = "LPUSH pipelined by " + std::to_string(kRedisBatch);
      j["pop"] = "BLMPOP COUNT " + std::to_string(kRedisBatch);
    } else {
      j["push"] = "LPUSH";
      j["pop"] = "BRPOP";
    }
    return j;
  }

  // A clean server for every run.
  std::string prepare(const Plan&) {
    if (auto e = conn_.connect(port_); !e.empty()) return e;
    Reply r = as_reply(redisCommand(conn_.get(), "FLUSHALL"));
    if (!r || r->type != REDIS_REPLY_STATUS) return conn_.error_of(r.get(), "FLUSHALL");
    return {};
  }
  // An empty string per consumer on the most urgent list tells it to leave at once; one
  // that misses it (a pipelined pop may take two) sees `stop` within its pop timeout.
  void after_done(unsigned consumers) {
    for (unsigned i = 0; i < consumers; ++i) {
      const Reply r = as_reply(redisCommand(conn_.get(), "LPUSH %s %b", kRedisKeys[0], "", std::size_t{0}));
    }
  }

  int consume(Tally<P>& tally, const Plan&) {
    RedisConn conn;
    if (auto e = conn.connect(port_); !e.empty()) {
      tally.fail(kOpenFailed, e);
      return 3;
    }
    // BRPOP k0..k7 timeout  |  BLMPOP timeout 8 k0..k7 RIGHT COUNT 64
    std::vector<const char*> argv;
    const std::string count = std::to_string(kRedisBatch);
    if (pipelined_) {
      argv = {"BLMPOP", kRedisPopTimeout, "8"};
      argv.insert(argv.end(), std::begin(kRedisKeys), std::end(kRedisKeys));
      argv.insert(argv.end(), {"RIGHT", "COUNT", count.c_str()});
    } else {
      argv = {"BRPOP"};
      argv.insert(argv.end(), std::begin(kRedisKeys), std::end(kRedisKeys));
      argv.push_back(kRedisPopTimeout);
    }
    tally.ready();
    for (;;) {
      Reply r = as_reply(redisCommandArgv(conn.get(), static_cast<int>(argv.size()), argv.data(), nullptr));
      if (!r || r->type == REDIS_REPLY_ERROR) {
        tally.fail(kCompleteFailed, conn.error_of(r.get(), argv[0]));
        return 4;
      }
      if (r->type == REDIS_REPLY_NIL) {  // the pop timed out: nothing queued
        if (tally.stop_requested()) return 0;
        if (tally.must_quit()) return 4;
        continue;
      }
      // BRPOP: [list, value]; BLMPOP: [list, [value...]]
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        tally.fail(kBadItem, conn.error_of(r.get(), argv[0]));
        return 4;
      }
      const redisReply* v = r->element[1];
      if (pipelined_ && v->type != REDIS_REPLY_ARRAY) {
        tally.fail(kBadItem, conn.error_of(v, argv[0]));
        return 4;
      }
      const std::size_t n = pipelined_ ? v->elements : 1;
      bool leave = false;
      for (std::size_t i = 0; i < n; ++i) {
        const redisReply* s = pipelined_ ? v->element[i] : v;
        if (s->type != REDIS_REPLY_STRING) {
          tally.fail(kBadItem, conn.error_of(s, argv[0]));
          return 4;
        }
        if (s->len == 0) {  // the driver's stop message
          leave = true;
          continue;
        }
        if (!tally.item(s->str, s->len)) return 4;
      }
      if (leave) return 0;
    }
  }

  class Sender {
   public:
    std::string open(RedisSys& sys) {
      pipelined_ = sys.pipelined_;
      return conn_.connect(sys.port_);
    }
    bool send(const P& p, std::uint8_t level, const Watchdog&) {
      if (!pipelined_) {
        Reply r = as_reply(redisCommand(conn_.get(), "LPUSH %s %b", kRedisKeys[level], &p, sizeof p));
        if (!r || r->type != REDIS_REPLY_INTEGER) {
          error_ = conn_.error_of(r.get(), "LPUSH");
          return false;
        }
        return true;
      }
      if (redisAppendCommand(conn_.get(), "LPUSH %s %b", kRedisKeys[level], &p, sizeof p) != REDIS_OK) {
        error_ = conn_.error_of(nullptr, "LPUSH");
        return false;
      }
      return ++pending_ < kRedisBatch || drain();
    }
    bool flush(const Watchdog&) { return pending_ == 0 || drain(); }
    bool peer_asleep(const RunShared&) const noexcept { return true; }  // a blocked BRPOP sleeps
    const std::string& error() const noexcept { return error_; }

   private:
    // Sends the batch (hiredis writes the buffer on the first redisGetReply) and reads its replies.
    bool drain() {
      for (; pending_ > 0; --pending_) {
        void* raw = nullptr;
        if (redisGetReply(conn_.get(), &raw) != REDIS_OK) {
          error_ = conn_.error_of(nullptr, "LPUSH (pipelined)");
          return false;
        }
        Reply r = as_reply(raw);
        if (!r || r->type != REDIS_REPLY_INTEGER) {
          error_ = conn_.error_of(r.get(), "LPUSH (pipelined)");
          return false;
        }
      }
      return true;
    }
    RedisConn conn_;
    bool pipelined_ = false;
    std::size_t pending_ = 0;
    std::string error_;
  };

 private:
  int port_;
  bool pipelined_;
  RedisConn conn_;  // the driver's: FLUSHALL and the stop messages
};

/// A port nobody listens on now (the kernel's pick for 127.0.0.1:0). Another process may
/// take it before redis-server binds it; the caller retries then.
int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

/// A private redis-server: no persistence, loopback only, a child of the driver (it dies
/// with it); shut down by the destructor.
class RedisServer {
 public:
  RedisServer() = default;
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;
  ~RedisServer() { shut_down(); }

  /// Empty once PING answers; else why not.
  std::string start() {
    std::string why;
    for (int attempt = 0; attempt < 3; ++attempt) {  // the port may be taken in between
      port_ = free_loopback_port();
      if (port_ <= 0) return "no free loopback port";
      const std::string port = std::to_string(port_);
      child_.emplace(Child::spawn([&port]() -> int {
        // Its log must not mix with records on stdout.
        const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null >= 0) ::dup2(null, STDOUT_FILENO);
        ::execlp("redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", static_cast<char*>(nullptr));
        return 127;
      }));
      if (!child_->started()) return "fork failed";
      why = wait_ping(std::chrono::milliseconds(5000));
      if (why.empty()) return {};
      child_.reset();  // kills and reaps it
    }
    return why;
  }
  int port() const noexcept { return port_; }

 private:
  std::string wait_ping(std::chrono::milliseconds bound) {
    const std::int64_t deadline = now_ns() + to_ns(bound);
    std::string why = "PING not answered within " + std::to_string(bound.count()) + " ms";
    while (now_ns() < deadline) {
      if (child_->exited()) return "redis-server exited with status " + std::to_string(child_->wait());
      RedisConn c;
      if (c.connect(port_, std::chrono::milliseconds(200)).empty()) {
        Reply r = as_reply(redisCommand(c.get(), "PING"));
        if (r && r->type == REDIS_REPLY_STATUS && std::string_view(r->str, r->len) == "PONG") return {};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return why;
  }
  void shut_down() {
    if (!child_) return;
    {
      RedisConn c;
      if (c.connect(port_, std::chrono::milliseconds(500)).empty()) {
        Reply r = as_reply(redisCommand(c.get(), "SHUTDOWN NOSAVE"));  // no reply: it is gone
      }
    }
    const std::int64_t deadline = now_ns() + to_ns(std::chrono::milliseconds(2000));
    while (!child_->exited() && now_ns() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    child_.reset();  // SIGKILL if it is still there
  }

  std::optional<Child> child_;
  int port_ = 0;
};

#endif  // SHMSCHED_TP_REDIS

// ---- the driver ----------------------------------------------------------------------

struct Options {
  std::string json;
  bool quick = false;
  std::string only;
  std::optional<std::uint64_t> tasks;
  unsigned rounds = 1;
};

struct Counts {
  std::uint64_t tasks;        // shmsched and boost_mq throughput runs
  std::uint64_t redis_tasks;  // redis throughput runs (redis_pipelined: 5x, it is that much faster)
  std::uint32_t busy_samples;
  std::uint32_t sleeping_samples;  // a round
};

constexpr Counts kFull{1'000'000, 20'000, 20'000, 1'000};
constexpr Counts kQuick{200'000, 5'000, 3'000, 300};
static_assert(kFull.busy_samples <= kMaxLatencySamples && kFull.sleeping_samples <= kMaxLatencySamples);

#if SHMSCHED_TP_REDIS
bool on_path(const char* program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  std::string_view rest(path);
  while (!rest.empty()) {
    const std::size_t colon = rest.find(':');
    const std::string dir(rest.substr(0, colon));
    rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    const std::string file = (dir.empty() ? std::string(".") : dir) + "/" + program;
    if (::access(file.c_str(), X_OK) == 0) return true;
  }
  return false;
}
#endif

// ---- result round trips ------------------------------------------------------------------

constexpr std::uint64_t kRoundTripWarm = 200;

// Times `n` calls of `trip` (after kRoundTripWarm unrecorded ones); false from `trip`
// stops with `why`.
template <class Trip>
Measured time_round_trips(std::uint64_t n, Trip&& trip) {
  Measured m;
  std::string why;
  for (std::uint64_t i = 0; i < kRoundTripWarm; ++i)
    if (!trip(why)) {
      m.error = why;
      return m;
    }
  const std::int64_t t0 = now_ns();
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::int64_t a = now_ns();
    if (!trip(why)) {
      m.error = why;
      return m;
    }
    m.latency.record(now_ns() - a);
  }
  m.seconds = static_cast<double>(now_ns() - t0) * 1e-9;
  return m;
}

// One producer against one worker: a private one-queue segment, a consumer process
// with one worker running `handler` for `type`, and this process's producer Client.
// `error` says what failed.
struct OneWorker {
  std::optional<Segment> seg;
  std::optional<Child> worker;
  std::optional<Client> client;
  std::string error;
  QueueId queue = 0;
};

void start_one_worker(OneWorker& w, std::uint32_t capacity, std::uint32_t payload, const std::string& type,
                      Handler handler) {
  Layout l;
  l.levels = 1;
  l.task_capacity = capacity;
  l.payload_bytes = payload;
  l.max_queues = 1;
  l.max_participants = 4;
  auto seg = Segment::create_private(l, CreateOptions{0600, {type}});
  if (!seg) {
    w.error = seg.error().message();
    return;
  }
  w.seg.emplace(std::move(*seg));
  w.queue = w.seg->find_queue(type).value();
  w.worker.emplace(Child::spawn([&]() -> int {
    const CpuPin pin(consumer_cpu());
    ConsumerOptions co;
    co.home = {type};
    auto c = Consumer::create(*w.seg, co);
    if (!c) return 3;
    (*c)->on(type, handler);
    return (*c)->run_until_signal();
  }));
  if (!w.worker->started()) {
    w.error = "fork failed";
    return;
  }
  auto client = Client::attach(*w.seg, Role::producer);
  if (!client) {
    w.error = client.error().message();
    return;
  }
  w.client.emplace(std::move(*client));
}

Measured round_trips_shmsched(std::uint64_t n) {
  Measured m;
  OneWorker w;
  start_one_worker(w, 1024, sizeof(Item), "rt", [](TaskContext&) { return Outcome::done("ok"); });
  if (!w.error.empty()) {
    m.error = w.error;
    return m;
  }
  const CpuPin pin(producer_cpu());
  auto& client = w.client;
  TaskOptions o;
  o.queue = w.queue;
  o.keep_result = true;
  const Item item{};
  return time_round_trips(n, [&](std::string& why) {
    TaskId id = kNoTask;
    if (const Errc e = client->enqueue_value("rt", item, o, &id); e != Errc::ok) {
      why = "enqueue: " + std::string(to_string(e));
      return false;
    }
    auto r = client->wait(id, std::chrono::seconds(10));
    if (!r || r->value != "ok") {
      why = r ? "wrong result" : "wait: " + r.error().message();
      return false;
    }
    return true;
  });
}

// A chain of `links` dependent tasks (each after_task the one before, with pipe) run by a
// consumer process with one worker. Each link's handler keeps as its result the time it
// returns and the latency of its own start after its parent's return (its payload, piped
// from the parent's result); the producer reads the results after the last link. The
// first link is delayed so that the whole chain is enqueued before it starts.
struct LinkResult {
  std::int64_t returned_ns;
  std::int64_t latency_ns;  // 0 for the first link
};

Measured chain_shmsched(std::uint32_t links) {
  Measured m;
  OneWorker w;
  start_one_worker(w, std::bit_ceil(2 * links), sizeof(LinkResult), "link", [](TaskContext& ctx) {
    const std::int64_t start = now_ns();
    LinkResult parent{};
    (void)payload_to(ctx.task.payload, parent);
    LinkResult mine{0, parent.returned_ns == 0 ? 0 : start - parent.returned_ns};
    mine.returned_ns = now_ns();
    return Outcome::done(std::string(reinterpret_cast<const char*>(&mine), sizeof mine));
  });
  if (!w.error.empty()) {
    m.error = w.error;
    return m;
  }
  const CpuPin pin(producer_cpu());
  auto& client = w.client;
  std::vector<TaskId> ids(links);
  TaskOptions o;
  o.queue = w.queue;
  o.keep_result = true;
  o.after(std::chrono::milliseconds(100));  // the first link: after the chain is enqueued
  for (std::uint32_t i = 0; i < links; ++i) {
    if (const Errc e = client->enqueue_value("link", LinkResult{}, o, &ids[i]); e != Errc::ok) {
      m.error = "enqueue: " + std::string(to_string(e));
      return m;
    }
    o.not_before_ns = 0;
    o.after_task = ids[i];
    o.pipe = true;
  }
  std::int64_t first = 0, last = 0;  // the first and the last link's returns
  for (std::uint32_t i = 0; i < links; ++i) {
    auto r = client->wait(ids[i], std::chrono::seconds(30));
    LinkResult link{};
    if (!r || r->status != TaskStatus::done || !payload_to(as_payload(std::string_view(r->value)), link)) {
      m.error = "link " + std::to_string(i) + ": " + (r ? "not done: " + r->error : r.error().message());
      return m;
    }
    if (i != 0) m.latency.record(link.latency_ns);
    (i == 0 ? first : last) = link.returned_ns;
  }
  m.seconds = static_cast<double>(last - first) * 1e-9;  // links 2..N, after the first link's delay
  return m;
}

#if SHMSCHED_TP_REDIS
Measured round_trips_redis(int port, std::uint64_t n) {
  Measured m;
  RedisConn conn;
  if (auto e = conn.connect(port); !e.empty()) {
    m.error = e;
    return m;
  }
  Reply flushed = as_reply(redisCommand(conn.get(), "FLUSHALL"));
  Child worker = Child::spawn([&]() -> int {
    const CpuPin pin(consumer_cpu());
    RedisConn w;
    if (!w.connect(port).empty()) return 3;
    for (;;) {  // BRPOP a task id, LPUSH "ok" to rt:res:<id>
      Reply r = as_reply(redisCommand(w.get(), "BRPOP rt:tasks 1"));
      if (!r) return 4;
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) continue;
      const std::string id(r->element[1]->str, r->element[1]->len);
      Reply done = as_reply(redisCommand(w.get(), "LPUSH rt:res:%s ok", id.c_str()));
      if (!done) return 4;
    }
  });
  if (!worker.started()) {
    m.error = "fork failed";
    return m;
  }
  const CpuPin pin(producer_cpu());
  std::uint64_t next = 0;
  return time_round_trips(n, [&](std::string& why) {
    const std::string id = std::to_string(++next);
    Reply pushed = as_reply(redisCommand(conn.get(), "LPUSH rt:tasks %s", id.c_str()));
    Reply r = as_reply(redisCommand(conn.get(), "BRPOP rt:res:%s 10", id.c_str()));
    if (!pushed || !r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
      why = conn.error_of(r.get(), "BRPOP result");
      return false;
    }
    return true;
  });
}
#endif

class Driver {
 public:
  Driver(const Options& o, RecordSink& sink) : o_(o), sink_(sink), counts_(o.quick ? kQuick : kFull) {
    if (o.tasks) {
      counts_.tasks = *o.tasks;
      counts_.redis_tasks = std::min(counts_.redis_tasks, *o.tasks);
    }
  }

  // The layout the floors are judged on (64 B, 1P/1C) once a round, every system in turn,
  // so that each round's ratios are of rows measured within seconds of each other; then the
  // other payloads and layouts once.
  void full_path() {
    for (unsigned round = 1; round <= o_.rounds; ++round)
      for (const std::string_view system : kSystems) full_path_row(system, 64, 1, round);
    for (const auto& [payload, n] : {std::pair{256u, 1u}, std::pair{64u, 2u}, std::pair{256u, 2u}})
      for (const std::string_view system : kSystems) full_path_row(system, payload, n, 0);
  }

  void latency() {
    for (unsigned round = 0; round <= o_.rounds; ++round) {
      const Mode mode = round == 0 ? Mode::busy : Mode::sleeping;
      const std::string_view scenario = round == 0 ? "latency_busy" : "latency_sleeping";
      for (const std::string_view system : {"shmsched", "boost_mq", "redis"}) {
        if (!selected(scenario, system)) continue;
        Plan plan;
        plan.mode = mode;
        plan.warm = kWarmSamples;
        plan.tasks = kWarmSamples + (mode == Mode::busy ? counts_.busy_samples : counts_.sleeping_samples);
        Record r = blank(scenario, system, sizeof(Item), 1, 1, round);
        r.extra["warmup_samples"] = kWarmSamples;
        r.extra["gap_us"] = mode == Mode::busy ? nlohmann::json::array({20, 25}) : nlohmann::json::array({2000, 2500});
        r.extra["gap_from"] = mode == Mode::busy ? "send to send" : "handler to send";
        Measured m = measure(system, sizeof(Item), plan);
        if (m.error.empty()) {
          merge(r, m);
          r.set_latency(m.latency);
        }
        emit(r, m);
      }
    }
  }

  void scaling() {
    const unsigned cores = std::max(1u, machine().cores);
    const unsigned max_n = std::min(2 * cores, kMaxProcs);
    for (unsigned n = 1; n <= max_n; ++n) {
      for (const std::string_view system : {"shmsched", "boost_mq"}) {
        if (!selected("scaling", system)) continue;
        Plan plan;
        plan.producers = n;
        plan.consumers = n;
        plan.tasks = counts_.tasks;
        Record r = blank("scaling", system, sizeof(Item), n, n, 0);
        r.extra["tasks"] = plan.tasks;
        r.extra["cores"] = cores;
        throughput(r, measure(system, sizeof(Item), plan), plan.tasks);
      }
    }
  }

  // A producer's wait for one task's result, in turn: enqueue with keep_result, a
  // consumer process runs it and keeps "ok", Client::wait returns it; against the same
  // round trip through Redis (LPUSH the task; the worker BRPOPs it and LPUSHes the result
  // to a list of the task's own; the producer BRPOPs that list).
  void result_round_trip() {
    for (const std::string_view system : {"shmsched", "redis"}) {
      if (!selected("result_round_trip", system)) continue;
      const std::uint64_t n = system == "shmsched" ? counts_.busy_samples : counts_.busy_samples / 4;
      Record r = blank("result_round_trip", system, sizeof(Item), 1, 1, 0);
      r.extra["round_trips"] = n;
      Measured m;
      if (system == "shmsched") {
        m = round_trips_shmsched(n);
      } else if (redis_ready(m)) {
#if SHMSCHED_TP_REDIS
        m = round_trips_redis(redis_->port(), n);
#endif
      }
      if (m.error.empty()) {
        r.set_latency(m.latency);
        r.tasks_per_s = static_cast<double>(n) / m.seconds;
      }
      emit(r, m);
    }
  }

  // A chain of 1,000 dependent tasks, once a round (with the sleeping wake-up rows it is
  // compared with): the latency of each link's start after its parent's handler returned.
  void chain() {
    constexpr std::uint32_t kLinks = 1000;
    for (unsigned round = 1; round <= o_.rounds; ++round) {
      if (!selected("chain", "shmsched")) continue;
      Record r = blank("chain", "shmsched", sizeof(LinkResult), 1, 1, round);
      r.extra["links"] = kLinks;
      Measured m = chain_shmsched(kLinks);
      if (m.error.empty()) {
        r.set_latency(m.latency);
        r.tasks_per_s = static_cast<double>(kLinks - 1) / m.seconds;
      }
      emit(r, m);
    }
  }

  int exit_code() const {
    return failures_ == 0 ? 0 : 1;
  }

 private:
  static constexpr std::string_view kSystems[] = {"shmsched", "boost_mq", "redis", "redis_pipelined"};

  static bool is_redis(std::string_view system) {
    return system.substr(0, 5) == "redis";
  }

  void full_path_row(std::string_view system, unsigned payload, unsigned n, unsigned round) {
    if (!selected("full_path", system)) return;
    Plan plan;
    plan.producers = n;
    plan.consumers = n;
    plan.tasks = !is_redis(system)             ? counts_.tasks
                 : system == "redis_pipelined" ? std::min(5 * counts_.redis_tasks, counts_.tasks)
                                               : counts_.redis_tasks;
    Record r = blank("full_path", system, payload, n, n, round);
    r.extra["tasks"] = plan.tasks;
    throughput(r, measure(system, payload, plan), plan.tasks);
  }

  bool selected(std::string_view scenario, std::string_view system) const {
    if (o_.only.empty()) return true;
    const std::string key = std::string(scenario) + "/" + std::string(system);
    return key.find(o_.only) != std::string::npos;
  }

  // `round` 0: a row measured once.
  static Record blank(std::string_view scenario, std::string_view system, unsigned payload, unsigned n_producers,
                      unsigned n_consumers, unsigned round) {
    Record r;
    r.scenario = scenario;
    r.system = system;
    r.payload_bytes = payload;
    r.producers = n_producers;
    r.consumers = n_consumers;
    if (round != 0) r.extra["round"] = round;
    return r;
  }

  static void merge(Record& r, const Measured& m) {
    for (const auto& [k, v] : m.extra.items()) r.extra[k] = v;
  }

  void throughput(Record& r, const Measured& m, std::uint64_t tasks) {
    if (m.error.empty()) {
      merge(r, m);
      r.tasks_per_s = static_cast<double>(tasks) / m.seconds;
      r.extra["seconds"] = m.seconds;
    }
    emit(r, m);
  }

  // A failed run carries its error and no figures. "Not available" is said in the record
  // but is no failure of the run; anything else is.
  void emit(Record& r, const Measured& m) {
    if (!m.error.empty()) {
      r.error = m.error;
      r.tasks_per_s.reset();
      r.p50_us.reset();
      r.p99_us.reset();
      r.p999_us.reset();
      if (!m.unavailable) ++failures_;
    }
    sink_.write(r);
  }

  Measured measure(std::string_view system, unsigned payload, const Plan& plan) {
    return payload == 64 ? measure_as<Payload<64>>(system, plan) : measure_as<Payload<256>>(system, plan);
  }

  template <class P>
  Measured measure_as(std::string_view system, const Plan& plan) {
    if (system == "shmsched") return measure_shmsched<P>(Path::consumer, plan);
    if (system == "boost_mq") return measure_boost<P>(plan);
    Measured m;
    if (!redis_ready(m)) return m;
#if SHMSCHED_TP_REDIS
    RedisSys<P> sys(redis_->port(), system == "redis_pipelined");
    return run_once<RedisSys<P>, P>(sys, plan);
#else
    return m;  // not reached: redis_ready() is false without hiredis
#endif
  }

  // Starts the private redis-server on first use. False (with m.error set) when Redis cannot
  // be measured; m.unavailable tells a missing prerequisite from a failure.
  bool redis_ready(Measured& m) {
    if (!redis_tried_) {
      redis_tried_ = true;
#if SHMSCHED_TP_REDIS
      if (!on_path("redis-server")) {
        redis_why_ = "redis not available: redis-server not found on PATH";
        redis_unavailable_ = true;
      } else {
        redis_.emplace();
        if (auto e = redis_->start(); !e.empty()) redis_why_ = "redis-server did not start: " + e;
      }
#else
      redis_why_ = "redis not available: built without hiredis (libhiredis-dev was not found at configure time)";
      redis_unavailable_ = true;
#endif
    }
    if (redis_why_.empty()) return true;
    m.error = redis_why_;
    m.unavailable = redis_unavailable_;
    return false;
  }

  const Options& o_;
  RecordSink& sink_;
  Counts counts_;
  unsigned failures_ = 0;
  bool redis_tried_ = false;
  bool redis_unavailable_ = false;
  std::string redis_why_;
#if SHMSCHED_TP_REDIS
  std::optional<RedisServer> redis_;
#endif
};

void usage(std::FILE* to) {
  std::fprintf(to,
               "usage: shmsched_throughput [--json=PATH] [--quick] [--only=SUBSTRING] [--tasks=N] [--rounds=R]\n"
               "  --json=PATH    append one JSON object per line to PATH (default: stdout)\n"
               "  --quick        fewer tasks and samples (well under a minute on 2 cores)\n"
               "  --only=S       only measurements whose \"scenario/system\" contains S\n"
               "  --tasks=N      tasks per shmsched/boost_mq throughput run (redis: at most N)\n"
               "  --rounds=R     the floors' rows R times, every system once a round\n"
               "scenarios: full_path, latency_busy, latency_sleeping, scaling, result_round_trip, chain\n"
               "systems: shmsched, boost_mq, redis, redis_pipelined\n");
}

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&](std::string_view flag) { return a.substr(flag.size()); };
    if (a.rfind("--json=", 0) == 0) {
      o.json = value("--json=");
    } else if (a == "--quick") {
      o.quick = true;
    } else if (a.rfind("--only=", 0) == 0) {
      o.only = value("--only=");
    } else if (a.rfind("--tasks=", 0) == 0) {
      const std::string v(value("--tasks="));
      char* end = nullptr;
      errno = 0;
      const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || errno != 0 || n == 0 || v[0] == '-') {
        std::fprintf(stderr, "shmsched_throughput: --tasks needs a positive integer, not '%s'\n", v.c_str());
        return false;
      }
      o.tasks = n;
    } else if (a.rfind("--rounds=", 0) == 0) {
      const int r = std::atoi(std::string(value("--rounds=")).c_str());
      if (r < 1 || r > 20) {
        std::fprintf(stderr, "shmsched_throughput: --rounds wants 1..20\n");
        return false;
      }
      o.rounds = static_cast<unsigned>(r);
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    } else {
      std::fprintf(stderr, "shmsched_throughput: unknown argument '%s'\n", argv[i]);
      return false;
    }
  }
  return true;
}

int run_main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) {
    usage(stderr);
    return 2;
  }
  install_cleanup_handlers();
  // A dead redis connection must be an error return, not a SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  std::fprintf(stderr, "shmsched_throughput: %s run, %u rounds, %u cores (%s)\n", o.quick ? "quick" : "full", o.rounds,
               machine().cores, machine().cpu_model.c_str());
  try {
    RecordSink sink(o.json);
    Driver d(o, sink);
    d.full_path();
    d.latency();
    d.scaling();
    d.result_round_trip();
    d.chain();
    return d.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmsched_throughput: %s\n", e.what());
    return 1;
  }
}

}  // namespace
}  // namespace shmsched::bench

int main(int argc, char** argv) {
  return shmsched::bench::run_main(argc, argv);
}
