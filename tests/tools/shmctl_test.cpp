#include <gtest/gtest.h>
TEST(Shmctl, Placeholder) {}
