// Shared pieces of shmctl: how verbs report errors (exit codes), how they open a
// segment, and the small parsers and formatters every verb uses.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "shmsched/shmsched.hpp"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace shmctl {

/// Exit statuses: the contract scripts rely on.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  ///< a reported error (segment missing, corrupt, timeout ...)
inline constexpr int kExitUsage = 2;    ///< the command line itself is wrong

/// A reported error: main() prints "shmctl: <message>" on stderr and exits 1.
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// A command line that parsed but makes no sense (bad duration, missing operand):
/// main() prints it on stderr and exits 2.
struct Usage : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Options given before (or, since subcommands fall through, after) the verb.
struct Globals {
  /// How long open() waits for a creator that is still initialising. Short by default:
  /// an operator tool should report a stuck segment, not sit on it.
  std::string open_timeout = "1s";
};
Globals& globals();

/// One verb: its CLI11 subcommand and what runs when it was chosen.
struct Verb {
  CLI::App* command = nullptr;
  std::function<int()> run;
};
using Verbs = std::vector<Verb>;

// Each adds its verbs to `app` (one file per group of verbs).
void add_segment_verbs(CLI::App& app, Verbs& verbs);  // create, destroy, ls
void add_stat_verbs(CLI::App& app, Verbs& verbs);     // stat, metrics
void add_top_verb(CLI::App& app, Verbs& verbs);       // top
void add_admin_verbs(CLI::App& app, Verbs& verbs);    // queue, sem, rate, dlq, recover
void add_task_verbs(CLI::App& app, Verbs& verbs);     // status, result, cancel, priority
void add_wait_verb(CLI::App& app, Verbs& verbs);      // wait
void add_submit_verb(CLI::App& app, Verbs& verbs);    // submit
void add_worker_verb(CLI::App& app, Verbs& verbs);    // worker
void add_group_verb(CLI::App& app, Verbs& verbs);     // group
void add_cron_verb(CLI::App& app, Verbs& verbs);      // cron

/// Opens the named segment or throws Failure with the library's message, so every verb
/// reports a missing, corrupt, foreign, half-initialised or wrong-version segment alike.
/// What a verb does with a segment: verbs that only look open it read-only, so they work
/// on a segment the caller may only read.
enum class Access { look, change };
shmsched::Segment open_segment(const std::string& name, Access access);
/// Same, with an explicit bound on waiting for an initialising creator.
shmsched::Result<shmsched::Segment> try_open_segment(const std::string& name, std::chrono::milliseconds timeout,
                                                     Access access);

/// Throws Failure(what + ": " + message) unless `r` is ok.
template <class R>
void check(const R& r, std::string_view what) {
  if (!r.ok()) throw Failure(std::string(what) + ": " + r.error().message());
}
/// Throws Failure for a non-ok Errc.
void check(shmsched::Errc e, std::string_view what);

/// "500ms", "10s", "1.5s", "2m", "1h", "250us", "0"; a bare number means seconds.
/// Only decimal digits (with an optional ".fraction") and a unit (ns, us, ms, s, m,
/// min, h): throws Usage on anything else, including "", "0x10", "1e3", "inf", "-1s".
std::chrono::nanoseconds parse_duration(std::string_view text, std::string_view option);
/// "12ms", "3.4s", "5m12s", "2h03m"; "-" for a negative (unknown) age.
std::string format_duration(std::int64_t ns);
/// "1000/s burst 10", "0.5/s"
std::string rate_text(double per_second, std::uint32_t burst);
/// "100.1 MiB"
std::string format_bytes(std::uint64_t bytes);
/// "producer,consumer"
std::string role_names(shmsched::Role role);
/// Parses a task id (decimal or 0x-hex); throws Usage.
std::uint64_t parse_task_id(std::string_view text);
/// A group by name, or by its id (digits); throws Failure when there is none.
shmsched::GroupId resolve_group(const shmsched::Segment& seg, const std::string& text);
/// Makes `opt` a list option: "--opt a,b" or "--opt a --opt b". One value per
/// occurrence, so a following positional (or "--" and a command) is never swallowed.
CLI::Option* list_option(CLI::Option* opt);
/// Makes `opt` accept only a whole decimal number, 0 or more ("-1", "1.5", "0x10" are
/// usage errors: CLI11 alone would wrap "-1" around to the largest unsigned value).
CLI::Option* whole_number(CLI::Option* opt);
/// Splits "a,b,c" (empty items dropped).
std::vector<std::string> split_list(const std::vector<std::string>& items);

/// A semaphore need as written, "gpu" or "gpu:2" (syntax only; throws Usage).
struct NeedSpec {
  std::string spec, name;
  unsigned long count = 1;
};
NeedSpec parse_need(const std::string& spec);
/// The need in `seg`: throws Failure for an unknown semaphore or a count over its capacity.
shmsched::Need resolve_need(shmsched::Segment& seg, const NeedSpec& n);

/// The consumers that are alive (role has consumer, process alive).
std::vector<const shmsched::ParticipantSnapshot*> live_consumers(const shmsched::Snapshot& snap);
/// "queued 3, running 1, delayed 0, parked 0": the count of each outstanding state
/// (shmsched::is_outstanding), in state order, joined by `sep`.
std::string outstanding_counts(const shmsched::StateCounts& c, std::string_view sep = ", ");

/// A plain text table: columns sized to their widest cell, numbers right-aligned.
class Table {
 public:
  explicit Table(std::vector<std::string> headers, std::vector<bool> right_aligned = {});
  void add(std::vector<std::string> row);
  bool empty() const noexcept { return rows_.empty(); }
  /// Each line is indented by `indent` spaces and ends with '\n'.
  std::string render(std::size_t indent = 0) const;

 private:
  std::vector<std::string> headers_;
  std::vector<bool> right_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace shmctl
