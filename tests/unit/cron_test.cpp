// The cron language and the due-time search (shmsched/cron.hpp). Every expected Unix
// time below was worked out by hand and checked with `date -u -d ... +%s` and
// `TZ=America/New_York date -d @SECONDS`; none is computed by the code under test.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "shmsched/cron.hpp"

using shmsched::CronFields;
using shmsched::Errc;
using shmsched::Recurrence;
using shmsched::TimeZone;

namespace {

constexpr std::int64_t kSec = 1000;

// Unix seconds of the UTC instants used below (date -u -d '...' +%s).
constexpr std::int64_t k20240101T0000Z = 1704067200;
constexpr std::int64_t k20240101T0230Z = 1704076200;
constexpr std::int64_t k20240301T0000Z = 1709251200;
constexpr std::int64_t k20280229T0000Z = 1835395200;
constexpr std::int64_t k20240308T1200Z = 1709899200;  // a Friday
constexpr std::int64_t k20240311T1200Z = 1710158400;  // the Monday after
constexpr std::int64_t k20240515T1017Z = 1715768220;  // 10:17:00
constexpr std::int64_t k20240515T1018Z = 1715768280;  // 10:18:00
constexpr std::int64_t k20240901T0000Z = 1725148800;  // a Sunday
constexpr std::int64_t k20240906T0000Z = 1725580800;  // the first Friday of September
constexpr std::int64_t k20240913T0000Z = 1726185600;  // the 13th (also a Friday)

// Parses an expression that must be valid.
Recurrence parsed(std::string_view expression) {
  auto r = Recurrence::parse(expression);
  EXPECT_TRUE(r.ok()) << "'" << expression << "': " << (r.ok() ? std::string() : r.error().message());
  return r.ok() ? *r : Recurrence{};
}

// The expression is refused with invalid_argument and a message holding every word.
void expect_parse_error(std::string_view expression, std::initializer_list<std::string_view> words) {
  SCOPED_TRACE("expression '" + std::string(expression) + "'");
  auto r = Recurrence::parse(expression);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Errc::invalid_argument);
  const std::string message = r.error().message();
  for (const std::string_view w : words)
    EXPECT_NE(message.find(w), std::string::npos) << "message '" << message << "' does not mention '" << w << "'";
}

void expect_same_fields(std::string_view a, std::string_view b) {
  SCOPED_TRACE("'" + std::string(a) + "' vs '" + std::string(b) + "'");
  const Recurrence ra = parsed(a), rb = parsed(b);
  EXPECT_EQ(ra.every_ms, 0);
  EXPECT_EQ(rb.every_ms, 0);
  EXPECT_EQ(ra.cron.minutes, rb.cron.minutes);
  EXPECT_EQ(ra.cron.hours, rb.cron.hours);
  EXPECT_EQ(ra.cron.days, rb.cron.days);
  EXPECT_EQ(ra.cron.months, rb.cron.months);
  EXPECT_EQ(ra.cron.weekdays, rb.cron.weekdays);
  EXPECT_EQ(ra.cron.flags, rb.cron.flags);
}

std::optional<std::int64_t> next_s(std::string_view expression, std::int64_t unix_s, TimeZone zone) {
  return parsed(expression).next_after(unix_s * kSec, zone);
}

}  // namespace

// ---- parse errors ----

TEST(Cron, ParseErrorsNameTheFieldAndTheToken) {
  expect_parse_error("60 * * * *", {"minute", "60"});
  expect_parse_error("* 24 * * *", {"hour", "24"});
  expect_parse_error("* * 32 * *", {"day of month", "32"});
  expect_parse_error("* * 0 * *", {"day of month", "0"});
  expect_parse_error("* * * foo *", {"month", "foo"});
  expect_parse_error("* * * 13 *", {"month", "13"});
  expect_parse_error("* * * * 8", {"day of week", "8"});
  expect_parse_error("* * * * funday", {"day of week", "funday"});
  expect_parse_error("*/0 * * * *", {"minute", "step"});
  expect_parse_error("*/x * * * *", {"minute", "step"});
  expect_parse_error("5-1 * * * *", {"minute", "5-1", "backwards"});
  expect_parse_error("1,,2 * * * *", {"minute"});
}

TEST(Cron, ParseErrorsForTheWrongNumberOfFields) {
  expect_parse_error("* * * *", {"5 fields"});
  expect_parse_error("* * * * * *", {"5 fields"});
  expect_parse_error("", {"5 fields"});
  expect_parse_error("   ", {"5 fields"});
}

TEST(Cron, ParseErrorsForShorthands) {
  expect_parse_error("@reboot", {"shorthand", "@reboot"});
  expect_parse_error("@every 5ms", {"10ms"});  // shorter than 10 ms
  expect_parse_error("@every 5x", {"unit", "x"});
  expect_parse_error("@every", {"@every"});
  expect_parse_error("@every 1h30", {"@every"});  // a number without a unit
  // 10 ms is the shortest interval allowed.
  EXPECT_EQ(parsed("@every 10ms").every_ms, 10);
}

// ---- shorthands and names ----

TEST(Cron, ShorthandsEqualTheirExpansions) {
  expect_same_fields("@hourly", "0 * * * *");
  expect_same_fields("@daily", "0 0 * * *");
  expect_same_fields("@midnight", "0 0 * * *");
  expect_same_fields("@weekly", "0 0 * * 0");
  expect_same_fields("@monthly", "0 0 1 * *");
  expect_same_fields("@yearly", "0 0 1 1 *");
  expect_same_fields("@annually", "0 0 1 1 *");
  expect_same_fields("@DAILY", "0 0 * * *");
  expect_same_fields("@Hourly", "0 * * * *");
}

TEST(Cron, HourlyCompilesToTheExpectedBits) {
  const Recurrence r = parsed("@hourly");
  EXPECT_EQ(r.every_ms, 0);
  EXPECT_EQ(r.cron.minutes, 1U);
  EXPECT_EQ(r.cron.hours, 0x00FF'FFFFU);  // 0..23
  EXPECT_EQ(r.cron.days, 0xFFFF'FFFEU);   // 1..31
  EXPECT_EQ(r.cron.months, 0x1FFEU);      // 1..12
  EXPECT_EQ(r.cron.weekdays, 0x7FU);      // 0..6
  EXPECT_EQ(r.cron.flags, 0U);
}

TEST(Cron, MonthAndDayNamesAreCaseInsensitive) {
  expect_same_fields("0 0 * JAN-mar MON-fri", "0 0 * 1-3 1-5");
  const Recurrence r = parsed("0 0 * JAN-mar MON-fri");
  EXPECT_EQ(r.cron.months, 0b1110U);      // 1, 2, 3
  EXPECT_EQ(r.cron.weekdays, 0b111110U);  // 1..5
  expect_same_fields("0 0 * dec sat", "0 0 * 12 6");
}

TEST(Cron, WeekdayRangeThroughSundayWraps) {
  const Recurrence r = parsed("0 0 * * fri-sun");
  EXPECT_EQ(r.cron.weekdays, (1U << 5) | (1U << 6) | (1U << 0));
  EXPECT_EQ(r.cron.flags, CronFields::kWeekdaysRestrict);
  expect_same_fields("0 0 * * fri-sun", "0 0 * * 5,6,0");
}

TEST(Cron, SevenIsSunday) {
  expect_same_fields("0 0 * * 7", "0 0 * * 0");
  EXPECT_EQ(parsed("0 0 * * 7").cron.weekdays, 1U);
  expect_same_fields("0 0 * * 5-7", "0 0 * * 5,6,0");
}

TEST(Cron, FullWeekdayRangesLeaveNoDayOut) {
  for (const std::string_view e : {"0 0 * * */1", "0 0 * * 0-7", "0 0 * * *", "0 0 * * 0-6"}) {
    SCOPED_TRACE(std::string(e));
    const Recurrence r = parsed(e);
    EXPECT_EQ(r.cron.weekdays, 0x7FU);
    EXPECT_EQ(r.cron.flags & CronFields::kWeekdaysRestrict, 0);
  }
}

TEST(Cron, StepsAndLists) {
  EXPECT_EQ(parsed("*/15 * * * *").cron.minutes, (1ULL << 0) | (1ULL << 15) | (1ULL << 30) | (1ULL << 45));
  EXPECT_EQ(parsed("50/5 * * * *").cron.minutes, (1ULL << 50) | (1ULL << 55));  // 50-59/5
  EXPECT_EQ(parsed("1-9/4,20 * * * *").cron.minutes, (1ULL << 1) | (1ULL << 5) | (1ULL << 9) | (1ULL << 20));
  EXPECT_EQ(parsed("* * 1,15 * *").cron.flags, CronFields::kDaysRestrict);
}

// ---- fixed intervals ----

TEST(Cron, EveryParsesCompoundDurations) {
  EXPECT_EQ(parsed("@every 1h30m").every_ms, 5'400'000);
  EXPECT_EQ(parsed("@every 90s").every_ms, 90'000);
  EXPECT_EQ(parsed("@every 1d").every_ms, 86'400'000);
  EXPECT_EQ(parsed("@every 2m500ms").every_ms, 120'500);
  EXPECT_EQ(parsed("@EVERY 5s").every_ms, 5'000);
}

TEST(Cron, EveryCountsFromTheAnchorStrictlyAfter) {
  const Recurrence r = parsed("@every 1h30m");
  const std::int64_t every = 5'400'000;
  const std::int64_t anchor = 1'700'000'000'000;
  EXPECT_EQ(r.next_after(anchor + 1, TimeZone::utc, anchor), anchor + every);
  EXPECT_EQ(r.next_after(anchor, TimeZone::utc, anchor), anchor + every);
  EXPECT_EQ(r.next_after(anchor + every - 1, TimeZone::utc, anchor), anchor + every);
  EXPECT_EQ(r.next_after(anchor + every, TimeZone::utc, anchor), anchor + 2 * every);
  EXPECT_EQ(r.next_after(anchor + 3 * every, TimeZone::utc, anchor), anchor + 4 * every);
  EXPECT_EQ(r.next_after(anchor + 3 * every + 1, TimeZone::utc, anchor), anchor + 4 * every);
  EXPECT_EQ(r.next_after(anchor - 1, TimeZone::utc, anchor), anchor + every);
  EXPECT_EQ(r.next_after(anchor - 10 * every, TimeZone::utc, anchor), anchor + every);
  // The zone does not matter for an interval.
  EXPECT_EQ(r.next_after(anchor + 3 * every, TimeZone::local, anchor), anchor + 4 * every);
}

// ---- next_after in UTC ----

TEST(Cron, DailyAtAFixedTime) {
  EXPECT_EQ(next_s("30 2 * * *", k20240101T0000Z, TimeZone::utc), k20240101T0230Z * kSec);
  // Strictly after: from 02:30 exactly, the next day.
  EXPECT_EQ(next_s("30 2 * * *", k20240101T0230Z, TimeZone::utc), (k20240101T0230Z + 86400) * kSec);
}

TEST(Cron, LeapDayWaitsForTheNextLeapYear) {
  EXPECT_EQ(next_s("0 0 29 2 *", k20240301T0000Z, TimeZone::utc), k20280229T0000Z * kSec);
}

TEST(Cron, WeekdaysSkipTheWeekendStrictlyAfter) {
  EXPECT_EQ(next_s("0 12 * * mon-fri", k20240308T1200Z, TimeZone::utc), k20240311T1200Z * kSec);
  EXPECT_EQ(next_s("0 12 * * mon-fri", k20240308T1200Z - 1, TimeZone::utc), k20240308T1200Z * kSec);
}

TEST(Cron, MidMinuteGivesTheNextWholeMinute) {
  const Recurrence r = parsed("* * * * *");
  // 2024-05-15T10:17:30.5Z
  EXPECT_EQ(r.next_after(k20240515T1017Z * kSec + 30'500, TimeZone::utc), k20240515T1018Z * kSec);
  // A whole minute exactly: the one after.
  EXPECT_EQ(r.next_after(k20240515T1017Z * kSec, TimeZone::utc), k20240515T1018Z * kSec);
  EXPECT_EQ(r.next_after(k20240515T1017Z * kSec - 1, TimeZone::utc), k20240515T1017Z * kSec);
}

TEST(Cron, ImpossibleDateHasNoNextTime) {
  EXPECT_EQ(next_s("0 0 30 2 *", k20240101T0000Z, TimeZone::utc), std::nullopt);
  EXPECT_EQ(next_s("0 0 31 4,6,9,11 *", k20240101T0000Z, TimeZone::utc), std::nullopt);
}

TEST(Cron, BothDayFieldsRestrictedMeansEither) {
  // The 13th or a Friday: Friday 2024-09-06 comes first.
  EXPECT_EQ(next_s("0 0 13 * 5", k20240901T0000Z, TimeZone::utc), k20240906T0000Z * kSec);
  // Then Friday the 13th.
  EXPECT_EQ(next_s("0 0 13 * 5", k20240906T0000Z, TimeZone::utc), k20240913T0000Z * kSec);
  // The 2nd (a Monday) comes before the first Friday.
  EXPECT_EQ(next_s("0 0 2 * fri", k20240901T0000Z, TimeZone::utc), (k20240901T0000Z + 86400) * kSec);
}

TEST(Cron, OneDayFieldStarMeansBoth) {
  EXPECT_EQ(next_s("0 0 13 * *", k20240901T0000Z, TimeZone::utc), k20240913T0000Z * kSec);
  EXPECT_EQ(next_s("0 0 * * 5", k20240901T0000Z, TimeZone::utc), k20240906T0000Z * kSec);
  // "*/1" and "0-7" in the weekday field restrict nothing: the 13th only.
  EXPECT_EQ(next_s("0 0 13 * */1", k20240901T0000Z, TimeZone::utc), k20240913T0000Z * kSec);
  EXPECT_EQ(next_s("0 0 13 * 0-7", k20240901T0000Z, TimeZone::utc), k20240913T0000Z * kSec);
}

// ---- next_after in a local zone with daylight saving time ----

class CronLocalTime : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* old = std::getenv("TZ")) saved_ = old;
    ::setenv("TZ", "America/New_York", 1);
    ::tzset();
    // The zone must really be loaded (tzdata): 2024-01-01T00:00Z is 19:00 EST.
    const std::time_t t = k20240101T0000Z;
    std::tm tm{};
    ASSERT_NE(::localtime_r(&t, &tm), nullptr);
    ASSERT_EQ(tm.tm_gmtoff, -5 * 3600) << "America/New_York not available (tzdata)";
  }
  void TearDown() override {
    if (saved_)
      ::setenv("TZ", saved_->c_str(), 1);
    else
      ::unsetenv("TZ");
    ::tzset();
  }

 private:
  std::optional<std::string> saved_;
};

// Spring forward 2024-03-10: 02:00 EST -> 03:00 EDT at 07:00Z.
constexpr std::int64_t k20240310T0600Z = 1710050400;  // 01:00 EST
constexpr std::int64_t k20240310T0650Z = 1710053400;  // 01:50 EST
constexpr std::int64_t k20240310T0700Z = 1710054000;  // 03:00 EDT, the jump
constexpr std::int64_t k20240310T0715Z = 1710054900;  // 03:15 EDT
constexpr std::int64_t k20240311T0630Z = 1710138600;  // 02:30 EDT
// Fall back 2024-11-03: 02:00 EDT -> 01:00 EST at 06:00Z.
constexpr std::int64_t k20241103T0400Z = 1730606400;  // 00:00 EDT
constexpr std::int64_t k20241103T0530Z = 1730611800;  // 01:30 EDT, the first 01:30
constexpr std::int64_t k20241103T0600Z = 1730613600;  // 01:00 EST, the second 01:00
constexpr std::int64_t k20241103T0700Z = 1730617200;  // 02:00 EST
constexpr std::int64_t k20241104T0630Z = 1730701800;  // 01:30 EST the next day

TEST_F(CronLocalTime, WinterAndSummerOffsets) {
  // 02:30 local: 07:30Z in winter (EST), 06:30Z in summer (EDT).
  EXPECT_EQ(next_s("30 2 * * *", k20240101T0000Z, TimeZone::local), (k20240101T0000Z + 7 * 3600 + 1800) * kSec);
  // 2024-09-01T00:00Z is 2024-08-31 20:00 EDT: the next 02:30 EDT is 2024-09-01T06:30Z.
  EXPECT_EQ(next_s("30 2 * * *", k20240901T0000Z, TimeZone::local), (k20240901T0000Z + 6 * 3600 + 1800) * kSec);
}

TEST_F(CronLocalTime, SkippedTimeFiresOnceAtTheJump) {
  EXPECT_EQ(next_s("30 2 * * *", k20240310T0600Z, TimeZone::local), k20240310T0700Z * kSec);
  EXPECT_EQ(next_s("30 2 * * *", k20240310T0700Z, TimeZone::local), k20240311T0630Z * kSec);
}

TEST_F(CronLocalTime, SkippedQuartersFireOnce) {
  // 02:00, 02:15, 02:30 and 02:45 do not exist; they all fall on the jump, once.
  EXPECT_EQ(next_s("*/15 * * * *", k20240310T0650Z, TimeZone::local), k20240310T0700Z * kSec);
  EXPECT_EQ(next_s("*/15 * * * *", k20240310T0700Z, TimeZone::local), k20240310T0715Z * kSec);
}

TEST_F(CronLocalTime, RepeatedTimeFiresOnlyTheFirstTime) {
  EXPECT_EQ(next_s("30 1 * * *", k20241103T0400Z, TimeZone::local), k20241103T0530Z * kSec);
  // Not again at 06:30Z (the second 01:30, in EST): the next day.
  EXPECT_EQ(next_s("30 1 * * *", k20241103T0530Z, TimeZone::local), k20241104T0630Z * kSec);
  // From inside the repeated hour (01:00 EST), 01:30 has been run already.
  EXPECT_EQ(next_s("30 1 * * *", k20241103T0600Z, TimeZone::local), k20241104T0630Z * kSec);
}

TEST_F(CronLocalTime, HourlyAcrossFallBack) {
  // 01:00 passed at 05:00Z (EDT); the repeated 01:00 EST at 06:00Z is not run again.
  EXPECT_EQ(next_s("0 * * * *", k20241103T0530Z, TimeZone::local), k20241103T0700Z * kSec);
}

// ---- time zone names ----

TEST(Cron, ParseTimeZone) {
  for (const std::string_view t : {"UTC", "utc", "Z", "z", "Etc/UTC"}) {
    auto r = shmsched::parse_time_zone(t);
    ASSERT_TRUE(r.ok()) << t;
    EXPECT_EQ(*r, TimeZone::utc) << t;
  }
  for (const std::string_view t : {"local", "LOCAL"}) {
    auto r = shmsched::parse_time_zone(t);
    ASSERT_TRUE(r.ok()) << t;
    EXPECT_EQ(*r, TimeZone::local) << t;
  }
  for (const std::string_view t : {"Europe/Berlin", "", "GMT+1"}) {
    auto r = shmsched::parse_time_zone(t);
    ASSERT_FALSE(r.ok()) << t;
    EXPECT_EQ(r.code(), Errc::invalid_argument);
    const std::string m = r.error().message();
    EXPECT_NE(m.find("UTC"), std::string::npos) << m;
    EXPECT_NE(m.find("local"), std::string::npos) << m;
  }
  EXPECT_NE(shmsched::parse_time_zone("Europe/Berlin").error().message().find("Europe/Berlin"), std::string::npos);
}

TEST(Cron, TimeZoneToString) {
  EXPECT_EQ(shmsched::to_string(TimeZone::utc), "UTC");
  EXPECT_EQ(shmsched::to_string(TimeZone::local), "local");
  // The text reads back as the same zone.
  EXPECT_EQ(shmsched::parse_time_zone(shmsched::to_string(TimeZone::utc)).value(), TimeZone::utc);
  EXPECT_EQ(shmsched::parse_time_zone(shmsched::to_string(TimeZone::local)).value(), TimeZone::local);
}
