// Enqueues and takes one task through an installed shmsched; exit 0 when it round-trips.
// check_install.cmake runs it with SHMSCHED_FAULT set to a point it passes: an installed
// library has no fault points, so it must still round-trip.
#include <shmsched/shmsched.hpp>

#include <cstdio>

int main() {
  using namespace shmsched;
  auto seg = Segment::create_private(Layout{}, CreateOptions{0600, {"q"}});
  if (!seg) return 1;
  if (shmsched::fault::enabled()) return 5;  // the installed headers and library are the users' build
  auto cli = Client::attach(*seg).value();
  TaskOptions o;
  o.queue = "q";
  if (cli.enqueue_text("hello", "world", o) != Errc::ok) return 2;
  Taken t;
  if (!cli.try_take(seg->find_queue("q").value(), t) || t.type_name != "hello") return 3;
  std::puts("installed shmsched works");
  return cli.complete(t) == Errc::ok ? 0 : 4;
}
