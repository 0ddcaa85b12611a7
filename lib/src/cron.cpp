// The cron language and the due-time search (cron.hpp; docs/schedules.md).
#include "shmsched/cron.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <charconv>
#include <ctime>
#include <limits>

namespace shmsched {
namespace {

constexpr std::int64_t kMinute = 60;
constexpr std::int64_t kDay = 86400;
constexpr std::int64_t kSearchDays = 3660;  // ten years
constexpr std::int64_t kMinEveryMs = 10;
constexpr std::int64_t kMaxEveryMs = kSearchDays * kDay * 1000;

struct FieldDef {
  std::string_view name;
  unsigned lo, hi;
  const std::array<std::string_view, 12>* names;  // value = index + names_base
  unsigned names_base;
};

constexpr std::array<std::string_view, 12> kMonthNames = {"jan", "feb", "mar", "apr", "may", "jun",
                                                          "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr std::array<std::string_view, 12> kDayNames = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

constexpr std::array<FieldDef, 5> kFields = {{
    {"minute", 0, 59, nullptr, 0},
    {"hour", 0, 23, nullptr, 0},
    {"day of month", 1, 31, nullptr, 0},
    {"month", 1, 12, &kMonthNames, 1},
    {"day of week", 0, 7, &kDayNames, 0},
}};

Error bad(const FieldDef& f, std::string_view token, std::string_view why) {
  return Error(Errc::invalid_argument,
               "cron " + std::string(f.name) + " field: '" + std::string(token) + "' " + std::string(why));
}

bool equal_nocase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// One value of field f: a number in f's range or one of its names.
Result<unsigned> parse_value(std::string_view tok, const FieldDef& f) {
  if (tok.empty()) return bad(f, tok, "is empty");
  if (std::isdigit(static_cast<unsigned char>(tok[0])) != 0) {
    unsigned v = 0;
    auto [end, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), v);
    if (ec != std::errc{} || end != tok.data() + tok.size()) return bad(f, tok, "is not a number");
    if (v < f.lo || v > f.hi)
      return bad(f, tok, "is out of range " + std::to_string(f.lo) + "-" + std::to_string(f.hi));
    return v;
  }
  if (f.names != nullptr) {
    for (std::size_t i = 0; i < f.names->size(); ++i)
      if (!(*f.names)[i].empty() && equal_nocase(tok, (*f.names)[i])) return static_cast<unsigned>(i) + f.names_base;
  }
  return bad(f, tok, f.names != nullptr ? "is neither a number nor a name" : "is not a number");
}

// One comma-separated item: *, N, A-B, each with an optional /STEP.
Result<std::uint64_t> parse_item(std::string_view item, const FieldDef& f) {
  std::string_view base = item;
  unsigned step = 1;
  bool stepped = false;
  if (const auto slash = item.find('/'); slash != std::string_view::npos) {
    base = item.substr(0, slash);
    const std::string_view s = item.substr(slash + 1);
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), step);
    if (s.empty() || ec != std::errc{} || end != s.data() + s.size() || step == 0)
      return bad(f, item, "has a step that is not a whole number >= 1");
    stepped = true;
  }
  unsigned a = f.lo, b = f.hi;
  if (base != "*") {
    const auto dash = base.find('-');
    auto first = parse_value(base.substr(0, dash), f);
    if (!first) return first.error();
    a = *first;
    if (dash != std::string_view::npos) {
      auto last = parse_value(base.substr(dash + 1), f);
      if (!last) return last.error();
      b = *last;
      if (f.lo == 0 && f.hi == 7 && b == 0 && a > 0) b = 7;  // fri-sun: Sunday as 7
      if (a > b) return bad(f, item, "is a range that runs backwards");
    } else if (!stepped) {
      b = a;
    }
  }
  std::uint64_t bits = 0;
  for (unsigned v = a; v <= b; v += step) bits |= std::uint64_t{1} << v;
  return bits;
}

Result<std::uint64_t> parse_field(std::string_view text, const FieldDef& f) {
  std::uint64_t bits = 0;
  std::size_t pos = 0;
  while (true) {
    const std::size_t comma = text.find(',', pos);
    const std::string_view item = text.substr(pos, comma == std::string_view::npos ? text.npos : comma - pos);
    if (item.empty()) return bad(f, text, "has an empty list item");
    auto r = parse_item(item, f);
    if (!r) return r.error();
    bits |= *r;
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return bits;
}

Result<std::int64_t> parse_every(std::string_view text) {
  const auto err = [&](std::string_view why) {
    return Error(Errc::invalid_argument, "@every '" + std::string(text) + "' " + std::string(why));
  };
  if (text.empty()) return err("needs a duration such as 30s, 5m or 1h30m");
  std::int64_t total = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    std::int64_t n = 0;
    auto [end, ec] = std::from_chars(text.data() + i, text.data() + text.size(), n);
    if (ec != std::errc{} || end == text.data() + i)
      return err("is not a duration (a number and a unit: ms, s, m, h, d)");
    i = static_cast<std::size_t>(end - text.data());
    std::size_t j = i;
    while (j < text.size() && std::isalpha(static_cast<unsigned char>(text[j])) != 0) ++j;
    const std::string_view unit = text.substr(i, j - i);
    std::int64_t scale = 0;
    if (unit == "ms")
      scale = 1;
    else if (unit == "s")
      scale = 1000;
    else if (unit == "m")
      scale = 60'000;
    else if (unit == "h")
      scale = 3'600'000;
    else if (unit == "d")
      scale = kDay * 1000;
    else
      return err("has an unknown unit '" + std::string(unit) + "' (ms, s, m, h, d)");
    if (n > kMaxEveryMs / scale) return err("is longer than ten years");
    total += n * scale;
    if (total > kMaxEveryMs) return err("is longer than ten years");
    i = j;
  }
  if (total < kMinEveryMs) return err("is shorter than 10ms");
  return total;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())) != 0) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())) != 0) s.remove_suffix(1);
  return s;
}

constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)) ? 1 : 0);
}

// Civil dates from days since 1970-01-01 and back (proleptic Gregorian).
struct Civil {
  std::int64_t year;
  unsigned month, day;
};
constexpr Civil civil_from_days(std::int64_t z) {
  z += 719468;
  const std::int64_t era = floor_div(z, 146097);
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0), m, d};
}
constexpr std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = floor_div(y, 400);
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}
static_assert(days_from_civil(1970, 1, 1) == 0 && civil_from_days(0).year == 1970);
static_assert(days_from_civil(2000, 3, 1) == 11017);

// The first matching minute strictly after `wall_s` (seconds of a wall clock counted
// as if it were UTC), in the same seconds; nullopt within kSearchDays.
std::optional<std::int64_t> next_wall_minute(const CronFields& c, std::int64_t wall_s) {
  const std::int64_t first = floor_div(wall_s, kMinute) + 1;
  std::int64_t day = floor_div(first, 1440);
  auto minute_of_day = static_cast<unsigned>(first - day * 1440);
  for (const std::int64_t end = day + kSearchDays; day < end; ++day, minute_of_day = 0) {
    const Civil cd = civil_from_days(day);
    if ((c.months >> cd.month & 1U) == 0) {  // on to the first of the next month
      day = days_from_civil(cd.year + (cd.month == 12 ? 1 : 0), cd.month % 12 + 1, 1) - 1;
      continue;
    }
    const auto weekday = static_cast<unsigned>(((day + 4) % 7 + 7) % 7);  // 1970-01-01 was a Thursday
    if (!c.day_matches(cd.month, cd.day, weekday)) continue;
    for (unsigned h = minute_of_day / 60; h < 24; ++h) {
      if ((c.hours >> h & 1U) == 0) continue;
      const unsigned from = h == minute_of_day / 60 ? minute_of_day % 60 : 0;
      const std::uint64_t left = c.minutes >> from << from;
      if (left != 0) return ((day * 1440) + std::int64_t{h} * 60 + std::countr_zero(left)) * kMinute;
    }
  }
  return std::nullopt;
}

std::int64_t utc_offset_s(std::int64_t unix_s) {
  const auto t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  if (localtime_r(&t, &tm) == nullptr) return 0;
  return tm.tm_gmtoff;
}

// The first instant whose local wall clock reads `wall_s` or later: in a repeated
// stretch (clocks turned back) the first of the two, in a skipped one (clocks turned
// forward) the instant the clocks jumped. Assumes no two offset changes within 36 h.
std::int64_t first_instant_at_wall(std::int64_t wall_s) {
  constexpr std::int64_t kApart = std::int64_t{36} * 3600;
  const std::int64_t o1 = utc_offset_s(wall_s - kApart), o2 = utc_offset_s(wall_s + kApart);
  std::optional<std::int64_t> best;
  for (const std::int64_t o : {o1, o2}) {
    const std::int64_t x = wall_s - o;
    if (utc_offset_s(x) == o && (!best || x < *best)) best = x;
  }
  if (best) return *best;
  std::int64_t lo = wall_s - std::max(o1, o2), hi = wall_s - std::min(o1, o2);
  while (lo < hi) {  // wall(x) = x + offset(x) rises across a skipped stretch
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (mid + utc_offset_s(mid) >= wall_s)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

}  // namespace

bool CronFields::day_matches(unsigned month, unsigned day, unsigned weekday) const noexcept {
  if ((months >> month & 1U) == 0) return false;
  const bool d = (days >> day & 1U) != 0, w = (weekdays >> weekday & 1U) != 0;
  if ((flags & kDaysRestrict) != 0 && (flags & kWeekdaysRestrict) != 0) return d || w;
  return d && w;
}

Result<Recurrence> Recurrence::parse(std::string_view expression) {
  std::string_view text = trim(expression);
  Recurrence r;
  if (!text.empty() && text.front() == '@') {
    const std::size_t sp = text.find_first_of(" \t");
    const std::string_view word = text.substr(0, sp);
    if (equal_nocase(word, "@every")) {
      auto ms = parse_every(sp == std::string_view::npos ? std::string_view{} : trim(text.substr(sp)));
      if (!ms) return ms.error();
      r.every_ms = *ms;
      return r;
    }
    static constexpr std::array<std::pair<std::string_view, std::string_view>, 7> kShort = {{
        {"@yearly", "0 0 1 1 *"},
        {"@annually", "0 0 1 1 *"},
        {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"},
        {"@daily", "0 0 * * *"},
        {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"},
    }};
    const auto it =
        std::find_if(kShort.begin(), kShort.end(), [&](const auto& p) { return equal_nocase(text, p.first); });
    if (it == kShort.end())
      return Error(Errc::invalid_argument, "cron: unknown shorthand '" + std::string(text) +
                                               "' (@yearly, @annually, @monthly, @weekly, @daily, @midnight, "
                                               "@hourly, @every DURATION)");
    text = it->second;
  }
  std::array<std::string_view, 5> fields{};
  std::size_t n = 0;
  for (std::size_t i = 0; i < text.size();) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i])) != 0) ++i;
    std::size_t j = i;
    while (j < text.size() && std::isspace(static_cast<unsigned char>(text[j])) == 0) ++j;
    if (j == i) break;
    if (n == fields.size())
      return Error(Errc::invalid_argument, "cron: '" + std::string(text) + "' has more than 5 fields");
    fields[n++] = text.substr(i, j - i);
    i = j;
  }
  if (n != fields.size())
    return Error(Errc::invalid_argument,
                 "cron: '" + std::string(text) + "' needs 5 fields (minute hour day-of-month month day-of-week)");
  std::array<std::uint64_t, 5> bits{};
  for (std::size_t k = 0; k < 5; ++k) {
    auto b = parse_field(fields[k], kFields[k]);
    if (!b) return b.error();
    bits[k] = *b;
  }
  if ((bits[4] >> 7 & 1U) != 0) bits[4] = (bits[4] | 1U) & 0x7F;  // 7 is Sunday
  CronFields& c = r.cron;
  c.minutes = bits[0];
  c.hours = static_cast<std::uint32_t>(bits[1]);
  c.days = static_cast<std::uint32_t>(bits[2]);
  c.months = static_cast<std::uint16_t>(bits[3]);
  c.weekdays = static_cast<std::uint8_t>(bits[4]);
  constexpr std::uint32_t kAllDays = 0xFFFF'FFFEU;
  c.flags = static_cast<std::uint8_t>((c.days != kAllDays ? CronFields::kDaysRestrict : 0) |
                                      (c.weekdays != 0x7F ? CronFields::kWeekdaysRestrict : 0));
  return r;
}

std::optional<std::int64_t> Recurrence::next_after(std::int64_t unix_ms, TimeZone zone, std::int64_t anchor_ms) const {
  if (every_ms > 0) {
    if (unix_ms < anchor_ms + every_ms) return anchor_ms + every_ms;
    const std::int64_t k = floor_div(unix_ms - anchor_ms, every_ms) + 1;
    if (k > (std::numeric_limits<std::int64_t>::max() - anchor_ms) / every_ms) return std::nullopt;
    return anchor_ms + k * every_ms;
  }
  const std::int64_t t_s = floor_div(unix_ms, 1000);
  if (zone == TimeZone::utc) {
    auto w = next_wall_minute(cron, t_s);
    if (!w) return std::nullopt;
    return *w * 1000;
  }
  // Each matching wall-clock time once, at the first instant the clock shows it or a
  // later time; in a repeated stretch the wall times already passed are skipped (at most
  // a day of minutes).
  std::int64_t wall = t_s + utc_offset_s(t_s);
  for (int i = 0; i < 1441; ++i) {
    auto w = next_wall_minute(cron, wall);
    if (!w) return std::nullopt;
    const std::int64_t x = first_instant_at_wall(*w);
    if (x * 1000 > unix_ms) return x * 1000;
    wall = *w;
  }
  return std::nullopt;
}

Result<TimeZone> parse_time_zone(std::string_view text) {
  if (equal_nocase(text, "utc") || equal_nocase(text, "z") || equal_nocase(text, "etc/utc")) return TimeZone::utc;
  if (equal_nocase(text, "local")) return TimeZone::local;
  return Error(Errc::invalid_argument, "time zone '" + std::string(text) + "': use UTC or local (the host's zone)");
}

std::string_view to_string(TimeZone zone) noexcept {
  return zone == TimeZone::utc ? "UTC" : "local";
}

}  // namespace shmsched
