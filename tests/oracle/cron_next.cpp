// The cron oracle test's driver: reads "EXPRESSION<TAB>UNIX_SECONDS<TAB>COUNT<TAB>ZONE"
// lines and prints, per line, "ok T1 T2 ..." (the next COUNT due times in Unix
// seconds) or "error MESSAGE". tests/oracle/cron_oracle.py compares it with croniter.
#include <iostream>
#include <sstream>
#include <string>

#include "shmsched/cron.hpp"

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string expr, start, count, zone;
    std::getline(in, expr, '\t');
    std::getline(in, start, '\t');
    std::getline(in, count, '\t');
    std::getline(in, zone, '\t');
    auto r = shmsched::Recurrence::parse(expr);
    if (!r) {
      std::cout << "error " << r.error().message() << '\n';
      continue;
    }
    auto z = shmsched::parse_time_zone(zone.empty() ? "utc" : zone);
    if (!z) {
      std::cout << "error " << z.error().message() << '\n';
      continue;
    }
    std::int64_t t = std::stoll(start) * 1000;
    std::cout << "ok";
    for (int i = 0, n = std::stoi(count); i < n; ++i) {
      auto next = r->next_after(t, *z);
      if (!next) {
        std::cout << " none";
        break;
      }
      t = *next;
      std::cout << ' ' << t / 1000;
    }
    std::cout << '\n';
  }
}
