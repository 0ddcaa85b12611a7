// The "shell" task type shared by submit (which encodes it) and worker (which runs
// it): the payload is the command's argv, NUL-separated, with no terminator.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace shmctl {

inline constexpr std::string_view kShellType = "shell";

/// Exit status a command uses to ask for a retry (sysexits.h EX_TEMPFAIL).
inline constexpr int kExitTempFail = 75;

inline std::string encode_argv(const std::vector<std::string>& argv) {
  std::string out;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    if (i != 0) out += '\0';
    out += argv[i];
  }
  return out;
}

inline std::vector<std::string> decode_argv(std::string_view payload) {
  std::vector<std::string> out;
  if (payload.empty()) return out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t nul = payload.find('\0', start);
    out.emplace_back(payload.substr(start, nul == std::string_view::npos ? std::string_view::npos : nul - start));
    if (nul == std::string_view::npos) break;
    start = nul + 1;
  }
  return out;
}

}  // namespace shmctl
