// When a schedule is due: the cron language and fixed intervals.
//
// Contract: Recurrence::parse reads one expression and either returns its compiled form
// or an Error that names the field and the token at fault. The compiled form is plain
// data (bit sets), stored in the segment as is. next_after() is pure: the first due time
// strictly after a Unix time, in UTC or in the host's zone (docs/schedules.md, "Time
// zones"), found field by field (no minute-by-minute walk).
//
// The language: five fields, minute (0-59), hour (0-23), day of month (1-31), month
// (1-12 or jan..dec), day of week (0-7 or sun..sat; 0 and 7 are Sunday). Each field is
// a comma list of `*`, `N`, `A-B`, with an optional `/STEP` (`*/15`, `1-30/2`, `5/10` =
// `5-max/10`). Names are case-insensitive. When both day fields restrict the day (each
// leaves out some value of its range), a day matches if either matches (as Vixie cron
// and croniter); otherwise it must match both. Shorthands: @yearly (@annually),
// @monthly, @weekly, @daily (@midnight), @hourly, and `@every DURATION` for a fixed
// interval (`@every 90s`, `@every 1h30m`; units ms, s, m, h, d; at least 10 ms).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "shmsched/error.hpp"

namespace shmsched {

/// Where a cron expression's wall-clock times are read.
enum class TimeZone : std::uint8_t { utc = 0, local = 1 };

/// The compiled cron fields: bit v set = value v matches.
struct CronFields {
  static constexpr std::uint8_t kDaysRestrict = 1;      ///< day of month leaves out some day
  static constexpr std::uint8_t kWeekdaysRestrict = 2;  ///< day of week leaves out some day
  std::uint64_t minutes = 0;                            ///< bits 0..59
  std::uint32_t hours = 0;                              ///< bits 0..23
  std::uint32_t days = 0;                               ///< bits 1..31
  std::uint16_t months = 0;                             ///< bits 1..12
  std::uint8_t weekdays = 0;                            ///< bits 0..6, 0 = Sunday
  std::uint8_t flags = 0;

  /// Whether a civil day (month 1..12, day 1..31, weekday 0..6) matches.
  bool day_matches(unsigned month, unsigned day, unsigned weekday) const noexcept;
};

/// A compiled expression: cron fields, or a fixed interval (every_ms > 0).
struct Recurrence {
  CronFields cron;
  std::int64_t every_ms = 0;

  /// Errors: invalid_argument, with a message naming the field and the token.
  static Result<Recurrence> parse(std::string_view expression);

  /// The first due time strictly after `unix_ms`, in Unix milliseconds; nullopt when
  /// none comes within ten years (`0 0 30 2 *`). An interval's due times are
  /// anchor_ms + k * every_ms for k >= 1; a cron expression's are whole minutes read in
  /// `zone` (the anchor is not used).
  std::optional<std::int64_t> next_after(std::int64_t unix_ms, TimeZone zone, std::int64_t anchor_ms = 0) const;
};

/// "utc" or "local" (case-insensitive; "UTC", "Z" and "Etc/UTC" too).
Result<TimeZone> parse_time_zone(std::string_view text);
std::string_view to_string(TimeZone zone) noexcept;

}  // namespace shmsched
