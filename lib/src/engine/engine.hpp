// The whole engine, for the translation units that define Client's members
// (client.cpp, semaphore.cpp): the Impl and every concept's inline definitions.
#pragma once

#include "impl.hpp"

#include "cancel.hpp"
#include "delayed.hpp"
#include "enqueue.hpp"
#include "enqueue_batch.hpp"
#include "groups.hpp"
#include "holders.hpp"
#include "parking.hpp"
#include "participants.hpp"
#include "priority.hpp"
#include "records.hpp"
#include "recovery.hpp"
#include "results.hpp"
#include "schedules.hpp"
#include "take.hpp"
#include "take_ahead.hpp"
#include "types.hpp"
#include "waking.hpp"
