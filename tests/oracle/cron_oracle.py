#!/usr/bin/env python3
"""The cron parser and due-time search against croniter (python3-croniter) as an oracle.

Usage: cron_oracle.py DRIVER [CASES] [SEED]

Generates random expressions over the language both accept (docs/schedules.md) and
random start times from 1995 to 2045, asks the driver (tests/oracle/cron_next.cpp) and
croniter for the next five due times in UTC, and fails on the first difference. Also
checks that malformed expressions are refused by both.
"""
import datetime
import random
import subprocess
import sys

try:
    from croniter import croniter, CroniterBadDateError
except ImportError:
    sys.exit("cron_oracle: python3-croniter is not installed (apt-get install python3-croniter)")

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (lo, hi, names) per field; day of week stays within 0..6 here: croniter counts a
# set holding both 0 and 7 (or "*/1") as restricting, shmsched does not (see the docs).
FIELDS = [(0, 59, None), (0, 23, None), (1, 31, None), (1, 12, MONTHS), (0, 6, DAYS)]


def value(rng, lo, hi, names, v=None):
    v = rng.randint(lo, hi) if v is None else v
    if names and rng.random() < 0.4:
        name = names[v - lo]
        return rng.choice([name, name.upper(), name.capitalize()])
    return str(v)


def item(rng, field):
    lo, hi, names = FIELDS[field]
    kind = rng.random()
    if kind < 0.15:
        return "*"
    if kind < 0.30:
        step = rng.randint(2 if field == 4 else 1, max(2, (hi - lo) // 2 + 1))
        return "*/%d" % step
    if kind < 0.55:
        return value(rng, lo, hi, names)
    a = rng.randint(lo, hi)
    b = rng.randint(a, hi)
    if kind < 0.80:
        base = "%s-%s" % (value(rng, lo, hi, names, a), value(rng, lo, hi, names, b))
        return base if rng.random() < 0.6 else base + "/%d" % rng.randint(1, max(1, hi - lo))
    if field == 4 and a > 0 and rng.random() < 0.3:
        return "%s-sun" % value(rng, lo, hi, names, a)  # Sunday as 7
    return "%d/%d" % (a, rng.randint(1, max(1, hi - lo)))


def field_text(rng, field):
    n = 1 if rng.random() < 0.7 else rng.randint(2, 3)
    return ",".join(item(rng, field) for _ in range(n))


def expression(rng):
    if rng.random() < 0.03:
        return rng.choice(["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"])
    # Mostly busy fields, so that the search crosses days, months and years.
    return " ".join(field_text(rng, k) for k in range(5))


def oracle(expr, start, count):
    """The next `count` due times; "none" ends the list when croniter finds no more."""
    it = croniter(expr, datetime.datetime.fromtimestamp(start, tz=datetime.timezone.utc))
    out = []
    for _ in range(count):
        try:
            out.append(str(int(it.get_next(float))))
        except CroniterBadDateError:
            out.append("none")
            break
    return out


def brute_force(expr, start, count):
    """The next `count` due times by a walk over days and minutes, with croniter's parse
    (its `expanded` sets) and the day rule of docs/schedules.md. It decides where
    croniter 1.3 is wrong: its search gives up when both day fields restrict and a month
    holds none of the days of the month listed (a day of the week still matches); it
    skips the first days of a month under the same rule; it reads `*` inside a list
    (`*,5`) as nothing. The walk finds no time when none comes within ten years."""
    minutes, hours, days, months, weekdays = croniter(expr).expanded[:5]
    full = lambda s, n: s == ["*"] or len(set(s)) >= n
    star = lambda s: "*" in s
    weekdays = ["*"] if star(weekdays) else [w % 7 for w in weekdays]
    day_or = not full(days, 31) and not full(weekdays, 7)
    out = []
    t = datetime.datetime.fromtimestamp(start - start % 60 + 60, tz=datetime.timezone.utc)
    end = t + datetime.timedelta(days=3660)
    while len(out) < count:
        if t >= end:
            out.append("none")
            break
        d = t.date()
        if (star(months) or d.month in months):
            dm = star(days) or d.day in days
            wm = star(weekdays) or (d.isoweekday() % 7) in weekdays
            if (dm or wm) if day_or else (dm and wm):
                hm = t.hour * 60 + t.minute
                for m in range(hm, 1440):
                    if (star(hours) or m // 60 in hours) and (star(minutes) or m % 60 in minutes):
                        t = datetime.datetime.combine(d, datetime.time(m // 60, m % 60), tzinfo=datetime.timezone.utc)
                        out.append(str(int(t.timestamp())))
                        t += datetime.timedelta(minutes=1)
                        break
                else:
                    t = datetime.datetime.combine(d + datetime.timedelta(days=1), datetime.time(), tzinfo=datetime.timezone.utc)
                continue
        t = datetime.datetime.combine(d + datetime.timedelta(days=1), datetime.time(), tzinfo=datetime.timezone.utc)
    return out


BAD = ["60 * * * *", "* 24 * * *", "* * 0 * *", "* * 32 * *", "* * * 13 *", "* * * 0 *", "* * * * 8",
       "5-1 * * * *", "*/0 * * * *", "* * * *", "a * * * *", "* * * foo *", "1,,2 * * * *",
       "-1 * * * *", "@reboot", "1-2-3 * * * *"]


def main():
    driver = sys.argv[1]
    cases = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else random.randrange(1 << 30)
    rng = random.Random(seed)
    lines, expected = [], []
    lo, hi = 788918400, 2366841600  # 1995-01-01 .. 2045-01-01
    fixed = [("0 0 29 2 *", 951782400), ("59 23 31 12 *", 946684799), ("0 12 * * mon-fri", 1700000000),
             ("*/7 */5 1,15 * sun", 1600000000), ("0 0 * * fri-sun", 1234567890), ("0 0 13 * 5", 1000000000)]
    for expr, start in fixed + [(expression(rng), rng.randint(lo, hi)) for _ in range(cases)]:
        lines.append("%s\t%d\t5\tutc" % (expr, start))
        expected.append((expr, start, oracle(expr, start, 5)))
    for expr in BAD:
        lines.append("%s\t0\t1\tutc" % expr)
    out = subprocess.run([driver], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    got = out.stdout.splitlines()
    if len(got) != len(lines):
        sys.exit("cron_oracle: the driver answered %d lines for %d" % (len(got), len(lines)))
    failures = fallbacks = 0
    for (expr, start, want), line in zip(expected, got):
        have = line.split()
        if have[0] == "ok" and have[1:] != want:
            # croniter is wrong in three known cases (brute_force): a walk decides.
            want = brute_force(expr, start, 5)
            fallbacks += 1
        if have[0] != "ok" or have[1:] != want:
            failures += 1
            if failures <= 10:
                print("MISMATCH %r from %d: shmsched %s, croniter %s" % (expr, start, line, want))
    for expr, line in zip(BAD, got[len(expected):]):
        try:
            croniter(expr)
            accepted_by_oracle = True
        except Exception:
            accepted_by_oracle = False
        if not line.startswith("error ") or accepted_by_oracle:
            failures += 1
            print("BAD INPUT %r: shmsched %s, croniter %s" % (expr, line, "accepts" if accepted_by_oracle else "refuses"))
    # Six fields (croniter's seconds) are not part of the language: refused with a reason.
    six = subprocess.run([driver], input="* * * * * *\t0\t1\tutc\n", capture_output=True, text=True, check=True)
    if not six.stdout.startswith("error ") or "5 fields" not in six.stdout:
        failures += 1
        print("SIX FIELDS: shmsched %s" % six.stdout.strip())
    print("cron_oracle: seed %d, %d expressions (%d where croniter is wrong, decided by a walk), %d malformed, "
          "%d failures" % (seed, len(expected), fallbacks, len(BAD), failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
