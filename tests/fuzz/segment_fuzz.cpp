// libFuzzer target: arbitrary bytes as a segment image through the open/inspect path.
// It must report an error or inspect the image -- never crash, hang or read out of
// bounds (built with ASan and UBSan).
//
// The first bytes of the input choose how to use it: taken as a raw image (so header
// checks are exercised), or laid after a valid header of a small layout (so the inspect
// path meets garbage rings, records, participants and semaphores behind a good header).
#include <cstdint>
#include <cstring>
#include <vector>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/shmsched.hpp"

using namespace shmsched;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool raw = (data[0] & 1) != 0;
  if (raw) {
    std::vector<std::uint8_t> image(data + 1, data + size);
    auto seg = Segment::from_image(image.data(), image.size());
    if (seg) (void)inspect(*seg);
    return 0;
  }
  // A valid header for a small layout, with the fuzz bytes as everything after it.
  Layout l;
  l.task_capacity = 64;
  l.levels = 1 + (data[0] >> 1) % 4;
  l.payload_bytes = 32;
  l.ring_capacity = 8;
  l.max_queues = 4;
  l.max_participants = 8;
  l.max_semaphores = 4;
  static std::vector<std::uint8_t> header_images[5];
  auto& templ = header_images[l.levels];
  if (templ.empty()) {
    auto seg = Segment::create_private(l, CreateOptions{0600, {"a", "b"}}).value();
    const auto* base = reinterpret_cast<const std::uint8_t*>(detail::core_of(seg).base);
    templ.assign(base, base + seg.size_bytes());
  }
  std::vector<std::uint8_t> image = templ;
  const std::size_t from = sizeof(detail::SegmentHeader);
  // Spread the input over the image after the header (repeat it), so every region
  // can be hit by small inputs.
  for (std::size_t i = from, j = 1; i < image.size() && size > 1; ++i, ++j) image[i] = data[1 + (j % (size - 1))];
  auto seg = Segment::from_image(image.data(), image.size());
  if (!seg) return 0;
  (void)inspect(*seg);
  return 0;
}
