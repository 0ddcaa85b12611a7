#include "common.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace shmctl {

Globals& globals() {
  static Globals g;
  return g;
}

shmsched::Result<shmsched::Segment> try_open_segment(const std::string& name, std::chrono::milliseconds timeout,
                                                     Access access) {
  shmsched::OpenOptions oo;
  oo.timeout = timeout;
  oo.read_only = access == Access::look;
  return shmsched::Segment::open(name, oo);
}

shmsched::Segment open_segment(const std::string& name, Access access) {
  const auto timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(parse_duration(globals().open_timeout, "--open-timeout"));
  auto seg = try_open_segment(name, timeout, access);
  if (!seg) throw Failure(seg.error().message());
  return std::move(seg.value());
}

void check(shmsched::Errc e, std::string_view what) {
  if (e != shmsched::Errc::ok) throw Failure(std::string(what) + ": " + std::string(shmsched::to_string(e)));
}

std::chrono::nanoseconds parse_duration(std::string_view text, std::string_view option) {
  const std::string s(text);
  auto bad = [&]() -> Usage {
    return Usage(std::string(option) + ": '" + s +
                 "' is not a duration: write a decimal number and a unit (ns, us, ms, s, m, h; a bare number is "
                 "seconds), e.g. 500ms, 10s, 1.5s, 2m, 1h");
  };
  // Decimal digits, an optional decimal fraction, then the unit. Checked by hand first:
  // strtod alone would also take "0x10", "1e3", "inf", "nan", " 5" and "+5".
  std::size_t i = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
  const std::size_t int_digits = i;
  if (int_digits == 0) throw bad();
  if (i < s.size() && s[i] == '.') {
    ++i;
    const std::size_t frac_start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == frac_start) throw bad();  // "1." or "1.s"
  }
  const std::string number = s.substr(0, i);
  const std::string unit = s.substr(i);
  double scale = 0;
  if (unit.empty() || unit == "s") {
    scale = 1e9;
  } else if (unit == "ms") {
    scale = 1e6;
  } else if (unit == "us") {
    scale = 1e3;
  } else if (unit == "ns") {
    scale = 1;
  } else if (unit == "m" || unit == "min") {
    scale = 60e9;
  } else if (unit == "h") {
    scale = 3600e9;
  } else {
    throw bad();
  }
  errno = 0;
  const double v = std::strtod(number.c_str(), nullptr);  // only digits and one '.' left
  if (errno != 0 || !std::isfinite(v)) throw bad();
  const double ns = v * scale;
  if (ns > 9.2e18) throw bad();  // would overflow int64 nanoseconds
  return std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
}

std::string format_duration(std::int64_t ns) {
  if (ns < 0) return "-";
  char buf[64];
  if (ns < 1'000'000) {
    std::snprintf(buf, sizeof buf, "%lldus", static_cast<long long>(ns / 1000));
  } else if (ns < 1'000'000'000) {
    std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(ns / 1'000'000));
  } else if (ns < 60'000'000'000) {
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ns) / 1e9);
  } else if (ns < 3600'000'000'000) {
    const long long s = ns / 1'000'000'000;
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  } else {
    const long long m = ns / 60'000'000'000;
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", m / 60, m % 60);
  }
  return buf;
}

std::string format_bytes(std::uint64_t bytes) {
  char buf[64];
  if (bytes < 1024) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else if (bytes < (1ull << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(bytes) / 1024.0);
  } else if (bytes < (1ull << 30)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  }
  return buf;
}

std::string role_names(shmsched::Role role) {
  using shmsched::Role;
  std::string out;
  auto add = [&](Role r, const char* name) {
    if (!shmsched::has_role(role, r)) return;
    if (!out.empty()) out += ',';
    out += name;
  };
  add(Role::producer, "producer");
  add(Role::consumer, "consumer");
  add(Role::observer, "observer");
  return out.empty() ? "-" : out;
}

std::uint64_t parse_task_id(std::string_view text) {
  const std::string s(text);
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 0);
  if (s.empty() || s.front() == '-' || *end != '\0' || errno != 0 || v == 0)
    throw Usage("'" + s + "' is not a task id (a positive number, decimal or 0x-hex)");
  return v;
}

shmsched::GroupId resolve_group(const shmsched::Segment& seg, const std::string& text) {
  if (!text.empty() && text.find_first_not_of("0123456789") == std::string::npos) {
    const shmsched::GroupId id = parse_task_id(text);
    if (!shmsched::group_info(seg, id)) throw Failure("no group " + text + " (never created, or deleted)");
    return id;
  }
  auto g = shmsched::find_group(seg, text);
  if (!g) throw Failure("no group named '" + text + "' (shmctl group NAME list shows them)");
  return *g;
}

CLI::Option* list_option(CLI::Option* opt) {
  return opt->expected(1)->allow_extra_args(false)->delimiter(',')->multi_option_policy(
      CLI::MultiOptionPolicy::TakeAll);
}

CLI::Option* whole_number(CLI::Option* opt) {
  return opt->check(CLI::Validator(
      [](std::string& v) -> std::string {
        if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos)
          return "'" + v + "' is not a whole number (0 or more)";
        return {};
      },
      "", "whole number"));
}

std::vector<std::string> split_list(const std::vector<std::string>& items) {
  std::vector<std::string> out;
  for (const auto& item : items) {
    std::size_t start = 0;
    while (start <= item.size()) {
      const std::size_t comma = item.find(',', start);
      const std::size_t stop = comma == std::string::npos ? item.size() : comma;
      if (stop > start) out.push_back(item.substr(start, stop - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  return out;
}

std::vector<const shmsched::ParticipantSnapshot*> live_consumers(const shmsched::Snapshot& snap) {
  std::vector<const shmsched::ParticipantSnapshot*> out;
  for (const auto& p : snap.participants)
    if (p.alive && shmsched::has_role(p.role, shmsched::Role::consumer)) out.push_back(&p);
  return out;
}

Table::Table(std::vector<std::string> headers, std::vector<bool> right_aligned)
    : headers_(std::move(headers)), right_(std::move(right_aligned)) {
  right_.resize(headers_.size(), false);
}

void Table::add(std::vector<std::string> row) {
  row.resize(headers_.size());
  rows_.push_back(std::move(row));
}

std::string Table::render(std::size_t indent) const {
  std::vector<std::size_t> width(headers_.size());
  for (std::size_t c = 0; c < headers_.size(); ++c) {
    width[c] = headers_[c].size();
    for (const auto& r : rows_) width[c] = std::max(width[c], r[c].size());
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string l(indent, ' ');
    for (std::size_t c = 0; c < cells.size(); ++c) {
      const std::size_t pad = width[c] - cells[c].size();
      if (c != 0) l += "  ";
      if (right_[c]) l.append(pad, ' ');
      l += cells[c];
      if (!right_[c] && c + 1 != cells.size()) l.append(pad, ' ');
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l;
    out += '\n';
  };
  line(headers_);
  for (const auto& r : rows_) line(r);
  return out;
}

std::string outstanding_counts(const shmsched::StateCounts& c, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < shmsched::kTaskStates; ++i) {
    const auto st = static_cast<shmsched::TaskState>(i);
    if (!shmsched::is_outstanding(st)) continue;
    if (!out.empty()) out += sep;
    out += std::string(shmsched::to_string(st)) + " " + std::to_string(c[st]);
  }
  return out;
}

// "gpu" or "gpu:2". Syntax only (a bad count is a usage error); see resolve_need.
NeedSpec parse_need(const std::string& spec) {
  NeedSpec n{spec, spec, 1};
  if (const auto colon = spec.rfind(':'); colon != std::string::npos) {
    // A count after the last ':' (semaphore names may hold ':' too, but not end in a
    // number that looks like a count): "gpu:2", and also "gpu:-1", "gpu:+3", "gpu:".
    std::string count = spec.substr(colon + 1);
    const bool sign = !count.empty() && (count[0] == '-' || count[0] == '+');
    const std::string digits = sign ? count.substr(1) : count;
    const bool numeric = !digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos;
    if (count.empty() || numeric) {
      if (colon == 0) throw Usage("--needs " + spec + ": give SEM[:N]");
      n.name = spec.substr(0, colon);
      errno = 0;
      n.count = sign || count.empty() ? 0 : std::strtoul(digits.c_str(), nullptr, 10);
      if (errno != 0) n.count = 0;
    }
  }
  if (n.count == 0 || n.count > shmsched::kMaxSemaphoreCapacity)
    throw Usage("--needs " + spec + ": the count must be 1.." + std::to_string(shmsched::kMaxSemaphoreCapacity));
  return n;
}

shmsched::Need resolve_need(shmsched::Segment& seg, const NeedSpec& n) {
  const std::string& spec = n.spec;
  const std::string& name = n.name;
  const unsigned long count = n.count;
  auto id = seg.find_semaphore(name);
  if (!id)
    throw Failure("--needs " + spec + ": " + id.error().message() + " (create it with 'shmctl sem " + seg.name() +
                  " set " + name + " CAPACITY')");
  for (const auto& m : seg.semaphores())
    if (m.id == *id && count > m.capacity) {
      std::string why = "--needs " + spec + ": semaphore '" + name + "' has capacity ";
      why += std::to_string(m.capacity) + "; the task could never run";
      throw Failure(why);
    }
  return shmsched::Need{*id, static_cast<std::uint16_t>(count)};
}

std::string rate_text(double per_second, std::uint32_t burst) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%g/s", per_second);
  std::string out = buf;
  if (burst > 1) out += " burst " + std::to_string(burst);
  return out;
}

}  // namespace shmctl
