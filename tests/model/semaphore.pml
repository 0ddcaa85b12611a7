/* A model of the shmsched semaphore protocol for task needs (lib/src/semaphore.cpp:
 * grant, sem_release, sem_freed, unpark_to_queues, Client::acquire_for,
 * Client::release_for; the worker loop around them is lib/src/consumer.cpp run/run_one),
 * for spin. Permit leases are not modelled (they are being removed).
 *
 * Three workers take tasks from the ready queue. A task needs permits of one or two of
 * two semaphores (s0: capacity 2, s1: capacity 1). A worker's acquire_for grants the
 * needs in ascending semaphore order, or returns those it got and parks the task on the
 * semaphore that was not free; a granted task runs, then release_for returns its permits
 * and hands parked tasks over: the first one runs next on this worker (acquire_for for it
 * again), the others go back to the ready queue. Nobody else moves parked tasks: no
 * janitor, no direct releaser, so a hand-over the workers miss is a task parked for good.
 * Checked:
 *   1. capacity: the permits of the tasks whose handler runs never exceed a semaphore's
 *      capacity, and a running task holds exactly its needs (the ledger names it);
 *   2. no missed hand-over: when every worker is idle (no ready task left), no task is
 *      parked on a semaphore that has enough free permits for it, and every task is done;
 *   3. conservation: then no permit is granted, the ledger is empty, and parked_hint is 0.
 * The end-state checks are made by the `checker` process, whose `timeout` is executable
 * exactly in the states where no worker can move (all idle at their `end` label): every
 * such state is checked, and a worker blocked anywhere else is an invalid end state.
 *
 * Memory model: every step here is one atomic operation of the code, and the model
 * interleaves them with sequential consistency (spin's default). That is faithful: the
 * operations of the protocol's Dekker pairs -- the grant (G2), the release (G3), the
 * park-ring publishing CAS, the parked_hint increment and the loads K3/K2 -- are seq_cst
 * or locked RMWs (x86-64: every RMW is a full barrier; the parked_hint decrement is a
 * relaxed fetch_sub, a locked instruction too). The only other stores are the release
 * stores of ledger slots (G4, the undo of G1); a later load of the same thread may pass
 * such a store, but those loads read the permit word and parked_hint, never the ledger,
 * and a ledger slot freed late only makes another's G1 fail later, which is an
 * interleaving of this model too (and a G1 failure parks the task, then K1 looks at the
 * permit word, not the ledger).
 *
 * Steps and the code they stand for (labels as in semaphore.cpp / docs/resources.md):
 *   grant():      "cheap look" (permits load), G1 (one CAS per ledger slot), G2 (the
 *                 CAS on the permit word, one step: its retry loop only reloads), undo
 *                 (one release store per claimed slot);
 *   sem_release():G3 (the CAS clearing the holder's bits; the holder loads before it
 *                 read slots that cannot change while their bit is set), G4 (one
 *                 release store per slot);
 *   park:         push_record's publishing CAS (R3; the ring protocol itself is
 *                 ring.pml's: here the ring is a FIFO whose push and pop are one step
 *                 each, the publishing CAS and the claim CAS T2), then the parked_hint
 *                 fetch_add, then K1 = unpark_to_queues on the same semaphore;
 *   unpark_to_queues(): K3 (parked_hint load), then per task: K2 (permits load), the
 *                 pop (claim parked -> running), the parked_hint fetch_sub, the requeue;
 *   release_for():sem_release for each need, then per released semaphore: K3, pop,
 *                 fetch_sub, and run it next / requeue it. sem_after_release only wakes
 *                 direct (futex) waiters, of which there are none here.
 *
 * The current code's release_for returns from inside its loop at the first task it hands
 * over: the other semaphore's parked tasks, and more parked tasks than one on a
 * semaphore it freed several permits of, are not handed over. That is MUTANT (the model
 * of the current code; it wedges: see the report in this file's history / the trail).
 * The model proper is the fixed release_for: on every semaphore it released, it hands
 * over up to as many parked tasks as it freed permits (the first runs next, the others
 * are requeued). Further mutants, each must fail: MUTANT_NO_K1 (the parker does not look
 * at the permits after parking).
 *
 * Optional: -DJANITOR adds one janitor tick (recount parked_hint from the park rings,
 * then unpark_to_queues), run concurrently with the workers. Not part of the check. */

#define NSEM 2
#define NSL 3           /* ledger slots per semaphore (56 in the code): one more than s0's capacity, so a G1 can fail */
#define NT 5            /* tasks, at most */
#define NONE 255

#define READY 1         /* in the ready queue */
#define RUN 2           /* owned by a worker (taken, or popped from a park ring) */
#define PARKED 3        /* in a park ring */
#define DONE 4

byte cap[NSEM];
byte bits[NSEM];              /* the grant bitmap of the permit word */
byte holders[NSEM * NSL];     /* the ledger: task + 1, or 0 */
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

/* The current code hands over one task in all (MUTANT); the fix up to as many as it
 * freed permits on each semaphore it released. */
#ifdef MUTANT
#define HANDOVER_LIMIT(k) 1
#define HANDOVER_STOP (nx != NONE)
#else
#define HANDOVER_LIMIT(k) (k)
#define HANDOVER_STOP false
#endif

/* grant(s, n, t): ok = whether n permits of s were granted to task t. */
inline grant(s, n, t) {
  ok = false;
  if
  :: (INUSE(s) + n > cap[s]) -> skip                   /* cheap look: used up, no ledger write */
  :: else ->
       do
       :: (i < NSL && cnt < n) ->
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

/* sem_release(s, t): all permits of s held by t; fr = how many. `ran`: t's handler ran
 * (release_for), so the capacity monitor stops counting its permits of s here. */
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

/* unpark_to_queues(s): parked tasks of s back to the ready queue while permits are free. */
inline unpark(s) {
  if
  :: (hint[s] <= 0) -> skip                            /* K3 */
  :: else ->
       do
       :: (INUSE(s) + mv >= cap[s]) -> break           /* K2 */
       :: else ->
            pop(s);
            if
            :: (v == NONE) -> break
            :: else -> skip
            fi;
            hint[s]--;                                 /* fetch_sub */
            d_step { st[v] = READY; v = NONE; mv++ }   /* requeue_record */
       od;
       mv = 0
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
            :: (NEED(t, 0) > 0) -> sem_release(0, t, false)   /* then sem_after_release (waiters only) */
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
       unpark(fs);                                     /* K1 before the count: a releaser */
       hint[fs]++                                      /* between them sees no parked task */
#else
       hint[fs]++;                                     /* fetch_add, before K1 */
#ifndef MUTANT_NO_K1
       unpark(fs)                                      /* K1 */
#else
       skip                                            /* no second look after parking */
#endif
#endif
  fi;
  atomic { fs = NONE; ok = false }
}

/* Hand-over on semaphore s, of which k permits were just released. */
inline hand_over(s, k) {
  if
  :: (k == 0 || HANDOVER_STOP) -> skip
  :: else ->
       if
       :: (hint[s] <= 0) -> skip                       /* K3 */
       :: else ->
            do
            :: (j2 < HANDOVER_LIMIT(k)) ->
                 pop(s);
                 if
                 :: (v == NONE) -> break
                 :: else -> skip
                 fi;
                 hint[s]--;                            /* fetch_sub */
                 if
                 :: (nx == NONE) -> nx = v; v = NONE; j2++   /* runs next here */
                 :: else -> d_step { st[v] = READY; v = NONE; j2++ }   /* requeue_record */
                 fi
            :: else -> break
            od;
            j2 = 0
       fi
  fi
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
  byte i = 0, j = 0, j2 = 0, cnt = 0, cl = 0, m = 0, mv = 0, fr = 0, k0 = 0, k1 = 0;
  bool ok = false;
end:
  do
  :: atomic {                                          /* take a task from the ready queue */
       if TAKE(0) TAKE(1) TAKE(2) TAKE(3) TAKE(4) fi;
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
/* One janitor tick (client.cpp janitor_tick): recount parked_hint from the park rings
 * (depth_guess: a load), store it, then unpark_to_queues. */
proctype janitor() {
  byte s = 0, d = 0, v = NONE, j = 0, mv = 0;
  do
  :: (s < NSEM) ->
       d = rn[s];                                      /* depth_guess */
       hint[s] = d;                                    /* seq_cst store */
       unpark(s);
       d_step { d = 0; s++ }
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
         assert(hint[s] == 0 && rn[s] == 0);
         s++
    :: else -> break
    od;
    assert(ndone == ntask)                             /* 2: every task done */
  }
}

/* Two runs in one check (init picks one; -DCONFIG=1 or 2 checks that one alone):
 *   1: three workers; s0 and s1 of capacity 1; tasks {s0, s1}, {s0}, {s1};
 *   2: two workers; s0 of capacity 2, s1 of capacity 1; tasks {s0, s1}, {s0: 2}, {s1},
 *      {s0}, {s0}: releases of two permits, grants of two, and a G1 that finds too few
 *      free ledger slots. */
#ifndef CONFIG
#define CONFIG 0
#endif
init {
  byte t = 0, nw = 0;
  if
#if CONFIG != 2
  :: d_step {
       cap[0] = 1; cap[1] = 1; ntask = 3; nw = 3;
       NEED(0, 0) = 1; NEED(0, 1) = 1; NEED(1, 0) = 1; NEED(2, 1) = 1
     }
#endif
#if CONFIG != 1
  :: d_step {
       cap[0] = 2; cap[1] = 1; ntask = 5; nw = 2;
       NEED(0, 0) = 1; NEED(0, 1) = 1; NEED(1, 0) = 2; NEED(2, 1) = 1; NEED(3, 0) = 1; NEED(4, 0) = 1
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
