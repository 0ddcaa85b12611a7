// Umbrella header: everything a program that links shmsched needs.
#pragma once

#include "shmsched/client.hpp"
#include "shmsched/consumer.hpp"
#include "shmsched/cron.hpp"
#include "shmsched/error.hpp"
#include "shmsched/inspect.hpp"
#include "shmsched/layout.hpp"
#include "shmsched/participant.hpp"
#include "shmsched/process.hpp"
#include "shmsched/queue.hpp"
#include "shmsched/ring.hpp"
#include "shmsched/schedule.hpp"
#include "shmsched/segment.hpp"
#include "shmsched/semaphore.hpp"
#include "shmsched/task.hpp"
