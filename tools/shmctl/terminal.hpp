// Terminal handling for the interactive verbs (top, wait --progress): whether a stream
// is a terminal, its size, and a guard that puts the terminal in raw mode and on the
// alternate screen, and puts it back however the program leaves (return, exception,
// SIGINT/SIGTERM/SIGHUP).
#pragma once

#include <signal.h>
#include <termios.h>

#include <atomic>

namespace shmctl {

bool is_terminal(int fd) noexcept;

struct TermSize {
  int rows = 24;
  int cols = 80;
};
/// The size of the terminal on `fd`, or 24x80 when it has none.
TermSize terminal_size(int fd) noexcept;

/// Set by the handlers that StopSignals installs.
std::atomic<bool>& stop_requested() noexcept;

/// Installs SIGINT/SIGTERM/SIGHUP handlers that set stop_requested() (without
/// SA_RESTART, so a blocking poll returns at once); a second signal restores the
/// terminal, if a RawTerminal is active, and exits with 130. Restores the previous
/// handlers when destroyed.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct ::sigaction old_[3];
};

/// Raw keyboard input (no echo, no line buffering; Ctrl-C still signals), the alternate
/// screen and a hidden cursor, all undone by the destructor.
class RawTerminal {
 public:
  /// `in` is the keyboard (may be a non-terminal: then only the screen is switched).
  RawTerminal(int in, int out);
  ~RawTerminal();
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;
  /// Restores the terminal; async-signal-safe, idempotent.
  static void restore() noexcept;
};

}  // namespace shmctl
