#include "terminal.hpp"

#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>

namespace shmctl {

namespace {

// What restore() needs, kept where a signal handler may read it: plain globals set
// before the handlers can run, and a flag that says whether there is anything to undo.
struct SavedTerminal {
  int in = -1;
  int out = -1;
  bool have_termios = false;
  termios termios_before{};
};
SavedTerminal g_saved;
std::atomic<bool> g_active{false};
std::atomic<bool> g_stop{false};

constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGHUP};

void write_all(int fd, const char* s) noexcept {
  std::size_t left = std::strlen(s);
  while (left > 0) {
    const ssize_t n = ::write(fd, s, left);
    if (n <= 0) return;
    s += n;
    left -= static_cast<std::size_t>(n);
  }
}

extern "C" void on_stop_signal(int) {
  if (g_stop.exchange(true)) {
    // Second signal: the first did not get us out; leave now, but not with the
    // terminal in raw mode.
    RawTerminal::restore();
    ::_exit(130);
  }
}

}  // namespace

bool is_terminal(int fd) noexcept {
  return ::isatty(fd) == 1;
}

TermSize terminal_size(int fd) noexcept {
  TermSize s;
  winsize ws{};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
    s.rows = ws.ws_row;
    s.cols = ws.ws_col;
  }
  return s;
}

std::atomic<bool>& stop_requested() noexcept {
  return g_stop;
}

StopSignals::StopSignals() {
  struct ::sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: poll()/nanosleep return EINTR and the loop notices
  for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &sa, &old_[i]);
}

StopSignals::~StopSignals() {
  for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &old_[i], nullptr);
}

RawTerminal::RawTerminal(int in, int out) {
  g_saved.in = in;
  g_saved.out = out;
  g_saved.have_termios = false;
  if (::isatty(in) == 1 && ::tcgetattr(in, &g_saved.termios_before) == 0) {
    termios raw = g_saved.termios_before;
    // Keys arrive one by one and are not echoed; ISIG stays on so Ctrl-C still
    // reaches StopSignals.
    raw.c_lflag &= static_cast<tcflag_t>(~(ICANON | ECHO));
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    if (::tcsetattr(in, TCSANOW, &raw) == 0) g_saved.have_termios = true;
  }
  g_active.store(true);
  write_all(out, "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J");  // alternate screen, hide cursor, clear
}

RawTerminal::~RawTerminal() {
  restore();
}

void RawTerminal::restore() noexcept {
  if (!g_active.exchange(false)) return;
  write_all(g_saved.out, "\x1b[?25h\x1b[?1049l");  // show cursor, back to the normal screen
  if (g_saved.have_termios) ::tcsetattr(g_saved.in, TCSANOW, &g_saved.termios_before);
}

}  // namespace shmctl
