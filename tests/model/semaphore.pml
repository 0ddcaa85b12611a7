/* A model of the shmsched semaphore protocol for task needs (lib/src/permits.hpp:
 * Permits::try_acquire, Permits::release; lib/src/engine/parking.hpp: pop_parked,
 * unpark_to_queues, repark, park, hand_over; lib/src/semaphore.cpp: acquire_for,
 * release_for; the worker loop around them is lib/src/consumer.cpp run/run_one), for spin.
 *
 * Workers take tasks from the ready queue (in any order). A task needs permits of one or
 * two of two semaphores s0, s1. A worker's acquire_for grants the needs in ascending
 * semaphore order, or gives back those it got and parks the task on the semaphore that
 * was not free, then looks again (K1). A granted task runs, then release_for returns its
 * permits and hands over: the oldest parked task of the first semaphore it freed that has
 * one is claimed to run next on this worker (acquire_for for it again), and on every
 * semaphore it freed, unpark_to_queues moves parked tasks whose need the free permits
 * (less the handed-over task's) cover back to the ready queue; a popped task that needs
 * more is re-parked at the tail, followed by one more look at the permit word. Nobody
 * else moves parked tasks -- no janitor, no direct releaser -- so a hand-over the workers
 * miss leaves a task parked for good. Two runs are checked (init picks one, see there):
 * two workers on s0 of capacity 2 (tasks needing 1 and 2 of it) and s1 of capacity 1,
 * and three workers on two semaphores of capacity 1. A semaphore has as many ledger
 * slots as its capacity (as one of capacity 56 has), so a G1 can find too few free slots
 * while a permit is free. Checked:
 *   1. capacity: the permits of the tasks whose handler runs never exceed a semaphore's
 *      capacity, and a running task holds exactly its needs, under its name in the
 *      ledger; a slot claimed in G1 never has its bit set;
 *   2. no missed hand-over: when no worker can move (all idle, the ready queue empty),
 *      no task is parked on a semaphore with enough free permits for it, and every task
 *      is done;
 *   3. conservation: then no permit is granted, the ledger is empty, parked_hint is 0.
 * The end-state checks are made by `checker`, whose `timeout` is executable exactly in
 * the states where no other process can move; every such state is checked, and a worker
 * blocked anywhere but at its `end` label would be an invalid end state. (Progress -- no
 * cycle that never completes a task -- is not checked.)
 *
 * Memory model: each step here is one atomic operation of the code, and spin interleaves
 * them with sequential consistency. That is faithful: the operations the protocol's
 * Dekker pairs are made of -- the grant CAS (G2), the release CAS (G3), the park ring's
 * publishing and claiming CASes, the parked_hint increments, the loads K3, K2 and the
 * re-park's look -- are seq_cst operations or locked RMWs (x86-64: every RMW is a full
 * barrier; the parked_hint decrement is a relaxed fetch_sub, still a locked
 * instruction). The only other stores are release stores of ledger slots (G4, and the
 * undo of G1). A later load of the same thread may pass one of them, but those loads
 * read the permit word or parked_hint, not the ledger, and a slot that is seen free
 * later only makes another thread's G1 fail, an interleaving this model has too (after
 * which the task parks and its K1 looks at the permit word, not at the ledger).
 *
 * Steps and the code they stand for (labels as in permits.hpp, parking.hpp and
 * docs/resources.md):
 *   try_acquire(): the "cheap look" (permits load); G1 (one CAS per ledger slot); G2
 *                  (the permit word CAS, one step: its retry loop only reloads); the undo
 *                  (one release store per claimed slot);
 *   release():     G3 (the CAS clearing the holder's bits; the ledger loads before it
 *                  read slots that cannot change while their bit is set); G4 (one
 *                  release store per slot);
 *   park():        push_record's publishing CAS (R3); the parked_hint fetch_add;
 *                  K1 = unpark_to_queues on the same semaphore. The ring protocol itself
 *                  is ring.pml's: here a park ring is a FIFO whose push (R3) and pop
 *                  (the claim CAS parked -> running, T2) are one step each;
 *   pop_parked():  the pop, then the parked_hint fetch_sub (the record_defect check is
 *                  not modelled: no record is corrupt here);
 *   unpark_to_queues(): K3 (parked_hint load), then per task: K2 (permits load), the pop
 *                  and fetch_sub, and either requeue_record (one step: its push) or
 *                  repark (the publishing CAS, the fetch_add, one more permits load);
 *   release_for(): Permits::release per need; then (hand_over) per semaphore released:
 *                  K3, the hand-over
 *                  pop and fetch_sub (first semaphore with a parked task only), and
 *                  unpark_to_queues with the handed-over task's need reserved.
 *   Permits::wake_sleepers only wakes direct (futex) waiters, of which there are none here.
 *
 * Mutants, each must fail (check.sh runs every MUTANT* tested here):
 *   MUTANT            release_for as it was before commit 001a935: it returned at the
 *                     first task it popped, and nothing else was unparked. It wedges:
 *                     worker A runs task 0 {s0, s1} (capacities 1); worker B parks task 2
 *                     on s1 and task 1 on s0 (each K1 sees the permit taken); A releases
 *                     s0 and s1, pops task 1 from s0 and returns; A runs task 1 and
 *                     releases s0 (nothing parked there). Task 2 stays parked on s1 with
 *                     s1 free and parked_hint 1 (until a janitor tick, in the code);
 *   MUTANT_NO_K1      the parker does not look at the permits after parking;
 *   MUTANT_LATE_HINT  the parker counts itself in parked_hint after its K1 look;
 *   MUTANT_REPARK_NO_LOOK  unpark_to_queues returns after a re-park without its look;
 *   MUTANT_REPARK_BAIL     unpark_to_queues as in the code now: after kMaxReparks
 *                     re-parks it returns even when the last look saw the permit word
 *                     change. It wedges: worker B's K1 for task 1 {s0: 2} (capacity 2,
 *                     one permit held by A's task) pops it (parked_hint 1 -> 0), finds 1
 *                     permit free, re-parks it; before the re-park's fetch_add, A
 *                     releases s0 and A's K3 reads parked_hint 0; B's look sees the word
 *                     changed and goes round again -- and after the last re-park, where
 *                     the same happens, returns. Task 1 stays parked on s0 with both
 *                     permits free. The model proper has the fix: the popped task that
 *                     would be the last re-park goes to its queue instead (requeue_record;
 *                     whoever takes it parks it again, with its own K1). The model's bound
 *                     is REPARKS = 2 (8 in the code), so that runs this small reach it.
 * (Incrementing parked_hint before the push instead of after it verifies: K1 comes after
 * both.)
 *
 * -DJANITOR adds one janitor tick (client.cpp janitor_tick: recount parked_hint from the
 * park rings, raise it to the count by a CAS from the value read, unpark_to_queues)
 * running alongside the workers; semaphore_janitor.pml checks it (CONFIG 3, label soak:
 * minutes). The recount only raises the hint: one that lowers it (its mutant,
 * MUTANT_RECOUNT_LOWERS) fails, because a pop takes a task out of its ring before its
 * decrement, so a recount between the two counts that decrement twice; the task parked
 * again then leaves the hint at 0 and releases skip it (a missed hand-over). */

#define NSEM 2
#define NSL 3           /* ledger slots per semaphore, at most (56 in the code); nsl[s] are used */
#define NT 4            /* tasks, at most */
#define NONE 255

#define READY 1         /* in the ready queue */
#define RUN 2           /* owned by a worker (taken, or popped from a park ring) */
#define PARKED 3        /* in a park ring */
#define DONE 4

byte cap[NSEM];
byte bits[NSEM];              /* the grant bitmap of the permit word */
byte holders[NSEM * NSL];     /* the ledger: task + 1, or 0 */
byte nsl[NSEM];               /* ledger slots of s: its capacity, as for a semaphore of capacity 56 */
short hint[NSEM];             /* parked_hint (an int32 in the code) */
byte rq[NSEM * NT];           /* park rings: FIFO, oldest first */
byte rn[NSEM];
byte st[NT];
byte need[NT * NSEM];
byte inrun[NSEM];             /* monitor: permits of the tasks whose handler runs */
byte ndone = 0;
byte ntask;                   /* tasks in this run */

#define H(s, i) holders[(s) * NSL + (i)]
#define NEED(t, s) need[(t) * NSEM + (s)]
#define BIT(x, i) (((x) >> (i)) & 1)
#define POPCOUNT(x) (BIT(x, 0) + BIT(x, 1) + BIT(x, 2))
#define INUSE(s) POPCOUNT(bits[s])
#define LOWBIT(x) (BIT(x, 0) -> 0 : (BIT(x, 1) -> 1 : 2))
/* permits of s whose bit is set and whose ledger slot names task t */
#define HELD1(s, t, i) (BIT(bits[s], i) && H(s, i) == (t) + 1)
#define HELD(s, t) (HELD1(s, t, 0) + HELD1(s, t, 1) + HELD1(s, t, 2))

#ifndef REPARKS
#define REPARKS 2       /* kMaxReparks (8 in the code): re-parks in one unpark_to_queues call */
#endif

/* grant(s, n, t) is Permits::try_acquire: ok = whether n permits of s were granted to task t. */
inline grant(s, n, t) {
  ok = false;
  if
  :: (INUSE(s) + n > cap[s]) -> skip                   /* cheap look: used up, no ledger write */
  :: else ->
       do
       :: (i < nsl[s] && cnt < n) ->
            atomic {                                   /* G1: CAS holders[i] 0 -> t */
              if
              :: (H(s, i) == 0) -> H(s, i) = t + 1; cl = cl | (1 << i); cnt++
              :: else -> skip
              fi;
              i++
            }
       :: else -> break
       od;
       if
       :: (cnt == n) ->
            d_step {                                   /* G2: the grant, one CAS */
              assert((bits[s] & cl) == 0);             /* a slot with holder 0 has its bit clear */
              if
              :: (INUSE(s) + n <= cap[s]) -> bits[s] = bits[s] | cl; ok = true
              :: else -> skip
              fi
            }
       :: else -> skip                                 /* not enough free ledger slots */
       fi;
       do
       :: (!ok && cl != 0) -> d_step { i = LOWBIT(cl); H(s, i) = 0; cl = cl & ~(1 << i) }   /* undo */
       :: else -> break
       od
  fi;
  atomic { i = 0; cnt = 0; cl = 0 }
}

/* sem_release(s, t) is Permits::release: all permits of s held by t; fr = how many.
 * `ran`: t's handler ran (release_for), so the capacity monitor stops counting its
 * permits of s here. */
inline sem_release(s, t, ran) {
  d_step {                                             /* G3: one CAS clearing t's bits */
    if :: ran -> inrun[s] = inrun[s] - NEED(t, s) :: else -> skip fi;
    m = (HELD1(s, t, 0) -> 1 : 0) | (HELD1(s, t, 1) -> 2 : 0) | (HELD1(s, t, 2) -> 4 : 0);
    bits[s] = bits[s] & ~m;
    fr = POPCOUNT(m)
  };
  do
  :: (m != 0) -> d_step { i = LOWBIT(m); H(s, i) = 0; m = m & ~(1 << i); i = 0 }   /* G4 */
  :: else -> break
  od
}

/* One step: the claim of the oldest task of s's park ring (parked -> running(me)); v =
 * the task, or NONE if the ring is empty. */
inline pop(s) {
  d_step {
    if
    :: (rn[s] == 0) -> v = NONE
    :: else ->
         v = rq[s * NT];
         j = 0;
         do
         :: (j + 1 < rn[s]) -> rq[s * NT + j] = rq[s * NT + j + 1]; j++
         :: else -> break
         od;
         rn[s]--;
         rq[s * NT + rn[s]] = 0;
         j = 0;
         st[v] = RUN
    fi
  }
}

/* unpark_to_queues(s, reserved): parked tasks of s back to the ready queue while the free
 * permits (less `reserved`, a hand-over's) cover their need; one that needs more goes
 * back to the tail of the ring (re-park), then one more look at the permit word. */
inline unpark(s, reserved, after_park) {
  if
  :: (hint[s] <= 0 && !after_park) -> skip             /* K3 (a parker's K1 does not read it) */
  :: else ->
       tk = reserved;
       do
       :: (rp >= REPARKS) -> break                     /* kMaxReparks */
       :: else ->
            pw = bits[s];                              /* K2 */
            if
            :: (POPCOUNT(pw) + tk >= cap[s]) -> break  /* no permit free */
            :: else -> skip
            fi;
            pop(s);                                    /* pop_parked: the claim ... */
            if
            :: (v == NONE) -> break
            :: else -> skip
            fi;
            hint[s]--;                                 /* ... and the fetch_sub */
            if
            :: (NEED(v, s) <= cap[s] - POPCOUNT(pw) - tk) ->
                 d_step { st[v] = READY; tk = tk + NEED(v, s); v = NONE }   /* requeue_record */
#ifndef MUTANT_REPARK_BAIL
            :: (NEED(v, s) > cap[s] - POPCOUNT(pw) - tk && rp + 1 >= REPARKS) ->
                 d_step { st[v] = READY; v = NONE };   /* the fix: at the bound, requeue_record */
                 break                                 /* instead of a re-park */
#endif
            :: else ->
                 d_step {                              /* repark: the publishing CAS */
                   rq[s * NT + rn[s]] = v; rn[s]++; st[v] = PARKED; v = NONE; rp++
                 };
                 hint[s]++;                            /* fetch_add */
#ifndef MUTANT_REPARK_NO_LOOK
                 if
                 :: (bits[s] == pw) -> break           /* one more look: unchanged, done */
                 :: else -> skip
                 fi
#else
                 break
#endif
            fi
       od;
       atomic { tk = 0; rp = 0; pw = 0 }
  fi
}

/* acquire_for(t): res = RUN (granted) or PARKED. */
inline acquire_for(t) {
  fs = NONE;
  if
  :: (NEED(t, 0) > 0) ->
       grant(0, NEED(t, 0), t);
       if :: !ok -> fs = 0 :: else -> skip fi
  :: else -> skip
  fi;
  if
  :: (fs == NONE && NEED(t, 1) > 0) ->
       grant(1, NEED(t, 1), t);
       if
       :: !ok ->
            fs = 1;
            if                                         /* return the first: sem_release, */
            :: (NEED(t, 0) > 0) -> sem_release(0, t, false)   /* then wake_sleepers (waiters only) */
            :: else -> skip
            fi
       :: else -> skip
       fi
  :: else -> skip
  fi;
  if
  :: (fs == NONE) -> res = RUN
  :: else ->
       res = PARKED;
       d_step { rq[fs * NT + rn[fs]] = t; rn[fs]++; st[t] = PARKED }   /* push: publishing CAS */
#ifdef MUTANT_LATE_HINT
       unpark(fs, 0, 1);                               /* K1 before the count: a releaser */
       hint[fs]++                                      /* between them sees no parked task */
#else
       hint[fs]++;                                     /* fetch_add, before K1 */
#ifndef MUTANT_NO_K1
       unpark(fs, 0, 1)                                /* K1 */
#else
       skip                                            /* no second look after parking */
#endif
#endif
  fi;
  atomic { fs = NONE; ok = false }
}

/* The hand-over on semaphore s, of which k permits were just released: the oldest parked
 * task is claimed to run next here (if none is yet), its need reserved, and the rest go
 * to unpark_to_queues. MUTANT, the release_for before 001a935: the first task popped is
 * handed over and release_for returns; nothing else is unparked. */
inline hand_over(s, k) {
#ifdef MUTANT
  if
  :: (k == 0 || nx != NONE) -> skip
  :: else ->
       if
       :: (hint[s] <= 0) -> skip                       /* K3 */
       :: else ->
            pop(s);
            if
            :: (v != NONE) -> hint[s]--; d_step { nx = v; v = NONE }
            :: else -> skip
            fi
       fi
  fi
#else
  if
  :: (k == 0) -> skip
  :: else ->
       if
       :: (hint[s] <= 0) -> skip                       /* K3 */
       :: else ->
            if
            :: (nx == NONE) ->
                 pop(s);                               /* pop_parked */
                 if
                 :: (v != NONE) -> hint[s]--; d_step { nx = v; rs = NEED(v, s); v = NONE }
                 :: else -> skip
                 fi
            :: else -> skip
            fi;
            unpark(s, rs, 0);
            rs = 0
       fi
  fi
#endif
}

/* release_for(t): nx = the task to run next, or NONE. */
inline release_for(t) {
  nx = NONE;
  if :: (NEED(t, 0) > 0) -> sem_release(0, t, true); k0 = fr :: else -> skip fi;
  if :: (NEED(t, 1) > 0) -> sem_release(1, t, true); k1 = fr :: else -> skip fi;
  hand_over(0, k0);
  hand_over(1, k1);
  atomic { k0 = 0; k1 = 0; fr = 0 }
}

#define TAKE(k) :: (st[k] == READY) -> t = k

proctype worker(byte me) {
  byte t = NONE, nx = NONE, v = NONE, fs = NONE, res = 0;
  byte i = 0, j = 0, cnt = 0, cl = 0, m = 0, fr = 0, k0 = 0, k1 = 0, rs = 0, tk = 0, rp = 0, pw = 0;
  bool ok = false;
end:
  do
  :: atomic {                                          /* take a task from the ready queue */
       if TAKE(0) TAKE(1) TAKE(2) TAKE(3) fi;
       st[t] = RUN
     };
     do
     :: acquire_for(t);
        if
        :: (res == PARKED) -> break                    /* parked: take other work */
        :: else -> skip
        fi;
        d_step {                                       /* the handler starts */
          inrun[0] = inrun[0] + NEED(t, 0);
          inrun[1] = inrun[1] + NEED(t, 1);
          assert(inrun[0] <= cap[0] && inrun[1] <= cap[1]);   /* 1: capacity */
          assert(HELD(0, t) == NEED(t, 0) && HELD(1, t) == NEED(t, 1))
        };
        release_for(t);
        atomic { st[t] = DONE; ndone++; t = nx; nx = NONE };   /* complete, then the handed-over task */
        if
        :: (t == NONE) -> break
        :: else -> skip
        fi
     od;
     atomic { t = NONE; res = 0 }
  od
}

#ifdef JANITOR
/* One janitor tick (client.cpp janitor_tick): read parked_hint, recount it from the park
 * rings (depth_guess: a load), store the count only if the hint did not change meanwhile
 * (CAS), then unpark_to_queues. */
proctype janitor() {
  byte s = 0, d = 0, v = NONE, j = 0, tk = 0, rp = 0, pw = 0;
  short h0 = 0;
  do
  :: (s < NSEM) ->
       h0 = hint[s];                                   /* seq_cst load */
       d = rn[s];                                      /* depth_guess */
#if defined(MUTANT_RECOUNT_LOWERS)
       atomic { if :: (hint[s] == h0) -> hint[s] = d :: else -> skip fi }  /* CAS, either way */
#else
       atomic { if :: (hint[s] == h0 && d > h0) -> hint[s] = d :: else -> skip fi }  /* CAS, up only */
#endif
       unpark(s, 0, 0);
       d_step { d = 0; h0 = 0; s++ }
  :: else -> break
  od
}
#endif

active proctype checker() {
  byte s = 0, t = 0;
  timeout;                                             /* no worker can move: all idle */
  d_step {
    s = 0;
    do
    :: (s < NSEM) ->
         t = 0;
         do
         :: (t < rn[s]) ->                             /* 2: no missed hand-over */
              assert(INUSE(s) + NEED(rq[s * NT + t], s) > cap[s]);
              t++
         :: else -> break
         od;
         assert(bits[s] == 0);                         /* 3: conservation */
         assert(H(s, 0) == 0 && H(s, 1) == 0 && H(s, 2) == 0);
         assert(rn[s] == 0);
#ifndef JANITOR
         assert(hint[s] == 0);                         /* exact, without the janitor's recount */
#endif
         s++
    :: else -> break
    od;
    assert(ndone == ntask)                             /* 2: every task done */
  }
}

/* Two runs in one check (init picks one; -DCONFIG=1 or 2 checks that one alone):
 *   2: two workers; s0 of capacity 2, s1 of capacity 1; tasks {s0, s1}, {s0: 2}, {s1},
 *      {s0}: releases of two permits, grants of two, re-parks of a task that
 *      needs more than is free, and a G1 that finds too few free ledger slots;
 *   1: three workers; s0 and s1 of capacity 1; tasks {s0, s1}, {s0}, {s1}.
 * -DCONFIG=3 is run 1 with two workers only (small enough for -DJANITOR). */
#ifndef CONFIG
#define CONFIG 0
#endif
init {
  byte t = 0, nw = 0;
  if
#if CONFIG == 0 || CONFIG == 2
  :: d_step {
       cap[0] = 2; cap[1] = 1; ntask = 4; nw = 2; nsl[0] = 2; nsl[1] = 1;
       NEED(0, 0) = 1; NEED(0, 1) = 1; NEED(1, 0) = 2; NEED(2, 1) = 1; NEED(3, 0) = 1
     }
#endif
#if CONFIG == 0 || CONFIG == 1
  :: d_step {
       cap[0] = 1; cap[1] = 1; ntask = 3; nw = 3; nsl[0] = 1; nsl[1] = 1;
       NEED(0, 0) = 1; NEED(0, 1) = 1; NEED(1, 0) = 1; NEED(2, 1) = 1
     }
#endif
#if CONFIG == 3
  :: d_step {
       cap[0] = 1; cap[1] = 1; ntask = 3; nw = 2; nsl[0] = 1; nsl[1] = 1;
       NEED(0, 0) = 1; NEED(0, 1) = 1; NEED(1, 0) = 1; NEED(2, 1) = 1
     }
#endif
  fi;
  d_step {
    do
    :: (t < ntask) -> st[t] = READY; t++
    :: else -> break
    od;
    t = 0
  };
  atomic {
    run worker(0); run worker(1);
    if :: (nw == 3) -> run worker(2) :: else -> skip fi
#ifdef JANITOR
    ; run janitor()
#endif
    ; nw = 0
  }
}
