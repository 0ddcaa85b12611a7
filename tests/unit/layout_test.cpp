#include <gtest/gtest.h>

#include "shmsched/detail/shm_structs.hpp"
#include "shmsched/layout.hpp"

using shmsched::Errc;
using shmsched::Layout;

TEST(Layout, DefaultsAreValid) {
  Layout l;
  EXPECT_TRUE(l.validate().ok());
  EXPECT_EQ(l.effective_ring_capacity(), l.task_capacity);
}

TEST(Layout, RejectsOutOfRangeFields) {
  auto bad = [](auto mutate) {
    Layout l;
    mutate(l);
    auto r = l.validate();
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.code(), Errc::invalid_layout);
    EXPECT_FALSE(r.error().detail().empty());
  };
  bad([](Layout& l) { l.levels = 0; });
  bad([](Layout& l) { l.levels = 17; });
  bad([](Layout& l) { l.task_capacity = 1000; });
  bad([](Layout& l) { l.task_capacity = 1; });
  bad([](Layout& l) { l.task_capacity = Layout::kMaxTasks * 2; });
  bad([](Layout& l) { l.payload_bytes = 12; });
  bad([](Layout& l) { l.ring_capacity = 3; });
  bad([](Layout& l) { l.max_queues = 0; });
  bad([](Layout& l) { l.max_participants = 1024; });
  bad([](Layout& l) { l.max_semaphores = 5000; });
}

TEST(Layout, SixteenLevelsAllowed) {
  Layout l;
  l.levels = 16;
  EXPECT_TRUE(l.validate().ok());
}

TEST(Layout, HashDistinguishesLayouts) {
  Layout a, b;
  EXPECT_EQ(a.hash(), b.hash());
  b.payload_bytes = 512;
  EXPECT_NE(a.hash(), b.hash());
  Layout c;
  c.ring_capacity = c.task_capacity;  // same effective layout as 0
  EXPECT_EQ(a.hash(), c.hash());
}

TEST(Layout, MapRegionsAreOrderedAlignedAndDisjoint) {
  Layout l;
  l.task_capacity = 1024;
  l.payload_bytes = 64;
  const auto m = shmsched::detail::SegmentMap::compute(l);
  const std::uint64_t offs[] = {m.header, m.task_ctrl,    m.task_body,  m.types,        m.queues, m.ring_hdrs,
                                m.rings,  m.participants, m.semaphores, m.delayed_bits, m.total};
  for (std::size_t i = 1; i < std::size(offs); ++i) EXPECT_LT(offs[i - 1], offs[i]) << i;
  for (auto o : offs) EXPECT_EQ(o % 64, 0u);
  EXPECT_EQ(m.total % 4096, 0u);
  EXPECT_EQ(m.body_stride % 64, 0u);
  EXPECT_GE(m.body_stride, sizeof(shmsched::detail::TaskHot) + 64 + sizeof(shmsched::detail::TaskCold));
  EXPECT_EQ(m.cold_offset, 128u);  // hot line + one line of payload
  EXPECT_EQ(m.task_body - m.task_ctrl >= 1024 * 16, true);
}
