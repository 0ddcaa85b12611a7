/* The semaphore model (semaphore.pml) with one janitor tick running alongside two
 * workers (its CONFIG 3): the tick recounts parked_hint from the park rings and unparks
 * what free permits allow. The recount may only raise the hint: a recount that lowers it
 * can take a popped task's decrement twice (the pop took it out of the ring, the recount
 * saw the ring without it, then the popper decremented), and when that task is parked
 * again the hint reads 0 with a task parked, so releases skip it (a missed hand-over).
 * That mutant must fail: */
#ifdef MUTANT_RECOUNT_LOWERS
/* (semaphore.pml's janitor() reads it) */
#endif
#define JANITOR
#define CONFIG 3
#include "semaphore.pml"
