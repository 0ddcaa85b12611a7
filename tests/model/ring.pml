/* A model of the shmsched ring protocol (lib/include/shmsched/ring.hpp and the record
 * transitions around it in lib/src/engine/records.hpp), for spin.
 *
 * Two producers publish three task records into a ring of two slots (so it wraps and
 * fills); two consumers take tasks and finish them. Any one process may crash at any step (at most MAXCRASH
 * crashes in a run); a reaper then recovers the crashed process's records exactly as
 * reap_dead() does. Checked:
 *   - every accepted task (its record reached `queued`) is finished at least once;
 *   - the ring never delivers a record twice for one publication (a claim is one CAS
 *     from `queued` at the slot's position);
 *   - after recovery the ring still accepts and yields (no wedge), and no slot holds a
 *     live entry that nobody can take.
 * docs/ring-protocol.md maps each labelled step to the code. */

#define NSLOT 2
#define NREC 4          /* records 0,1,2: the producers'; 3: the after-recovery check */
#define MAXCRASH 1
#define LAP(p) ((p) / NSLOT)
#define IDX(p) ((p) % NSLOT)

mtype = { RESERVED, QUEUED, RUNNING, DONE };

mtype st[NREC];
byte owner[NREC];      /* process id; 9 = nobody */
byte where[NREC];      /* position it was last put at */
byte published[NREC];  /* times it became queued (S1) */
byte delivered[NREC];  /* times a consumer claimed it (T2) */
bool accepted[NREC];
byte finished[NREC];

byte slap[NSLOT];      /* slot word: lap, full, value */
bool sfull[NSLOT];
byte sval[NSLOT];
byte head = 0;         /* hints */
byte tail = 0;

bool dead[6];
byte ncrash = 0;
byte producers_left = 2;
bool recovered = false;

/* A crash is allowed at any step until the reaper starts its round (one round of
 * recovery per run: the reaper in the real system runs again for later crashes). */
bool reaping = false;
#define CRASH(me) if :: atomic { (ncrash < MAXCRASH && !reaping) -> ncrash++; dead[me] = true }; goto crashed :: true -> skip fi

/* Whether the entry FULL(lap of pos, v) is a leftover: v is not takeable there. */
#define STALE(v, pos) (st[v] != QUEUED || where[v] != (pos))

/* Push record r (owned by `me`, not yet queued or running) into the ring: W1, S1, R3.
 * `crashable` says whether this process may crash (the reaper is modelled as reliable
 * here; its own crash is covered by idempotence: it only repeats these steps). */
inline push(me, r, crashable) {
  byte t, l, v;
  bool f;
  t = tail;                                            /* R1 */
  do
  :: atomic { l = slap[IDX(t)]; f = sfull[IDX(t)]; v = sval[IDX(t)] }   /* R2 */
     if
     :: (l == LAP(t) && !f) ->
          where[r] = t;                                /* W1 */
          if
          :: (st[r] != QUEUED) ->
               atomic { st[r] = QUEUED; owner[r] = me; published[r]++; accepted[r] = true }  /* S1 */
          :: else -> skip
          fi;
          if :: crashable -> CRASH(me) :: else -> skip fi;
          if                                           /* R3: CAS EMPTY(lap t) -> FULL(lap t, r) */
          :: atomic { (slap[IDX(t)] == LAP(t) && !sfull[IDX(t)]) -> sfull[IDX(t)] = true; sval[IDX(t)] = r };
             break
          :: else -> skip                              /* lost the race: look again at t */
          fi
     :: (l == LAP(t) && f) || (l > LAP(t)) -> t++      /* tail hint behind */
     :: (l + 1 == LAP(t) && f) ->
          if
          :: atomic { STALE(v, t - NSLOT) &&           /* R4': clear a leftover */
                      slap[IDX(t)] == l && sfull[IDX(t)] && sval[IDX(t)] == v ->
                      sfull[IDX(t)] = false; slap[IDX(t)] = LAP(t) }
          :: else -> skip                              /* full: with 2 slots and 3 records it frees up */
          fi
     fi
  od;
  if :: crashable -> CRASH(me) :: else -> skip fi;
  atomic { if :: (tail < t + 1) -> tail = t + 1 :: else -> skip fi }   /* hint */
}

proctype producer(byte me; byte r) {
  st[r] = RESERVED; owner[r] = me;
  CRASH(me);
  push(me, r, true);
  if
  :: (r == 0) ->      /* producer 0 publishes a second task: the ring wraps */
       r = 2; st[r] = RESERVED; owner[r] = me;
       CRASH(me);
       push(me, r, true)
  :: else -> skip
  fi;
  producers_left--;
  goto out;
crashed:
  producers_left--;
out:
  skip
}

/* Pop once: R5, R6, T1/T2 (claim), R4 (clear). Sets `got` to the record or NREC. */
inline pop(me, got) {
  byte h, l, v, c;
  bool f;
  got = NREC;
  h = head;                                            /* R5 */
  do
  :: atomic { l = slap[IDX(h)]; f = sfull[IDX(h)]; v = sval[IDX(h)] }   /* R6 */
     if
     :: (l == LAP(h) && !f) -> break                   /* empty */
     :: (l == LAP(h) && f) ->
          atomic {                                     /* T1 + T2: CAS queued -> running(me) */
            if
            :: (st[v] == QUEUED && where[v] == h) ->
                 st[v] = RUNNING; owner[v] = me; delivered[v]++; c = v;
                 assert(delivered[v] <= published[v])  /* never twice for one publication */
            :: else -> c = NREC                        /* leftover */
            fi
          };
          CRASH(me);
          atomic {                                     /* R4: CAS FULL(lap h, v) -> EMPTY(lap h + 1) */
            if
            :: (slap[IDX(h)] == l && sfull[IDX(h)] && sval[IDX(h)] == v) ->
                 sfull[IDX(h)] = false; slap[IDX(h)] = l + 1
            :: else -> skip
            fi
          };
          atomic { if :: (head < h + 1) -> head = h + 1 :: else -> skip fi };
          if
          :: (c != NREC) -> got = c; break
          :: else -> h++
          fi
     :: (l > LAP(h)) -> h++                            /* head hint behind */
     fi
  od
}

#define ALL_FINISHED ((!accepted[0] || finished[0] > 0) && (!accepted[1] || finished[1] > 0) && (!accepted[2] || finished[2] > 0))

proctype consumer(byte me) {
  byte got;
  /* Poll until the ring is seen empty after the producers are done and the reaper has
   * recovered: then init checks that every accepted task was finished. A lost task is
   * not in the ring, so the consumers stop and the check fails. */
  bool last;
  do
  :: last = (producers_left == 0 && recovered);   /* read before the pop that may end it */
     pop(me, got);
     if
     :: (got != NREC) ->
          CRASH(me);
          atomic { st[got] = DONE; owner[got] = 9; finished[got]++ }
     :: else ->
          if
          :: last -> break
          :: else -> skip
          fi
     fi
  od;
  goto out;
crashed:
  skip;
out:
  skip
}

/* reap_dead() for a crashed process: its `reserved` records are dropped, `queued` ones
 * not in the ring are published, `running` ones are requeued (attempt counted). */
proctype reaper() {
  byte r;
  atomic { (producers_left == 0) -> reaping = true };
  r = 0;
  do
  :: (r < 3) ->
       /* Each decision is one CAS from the state the reaper observed, as in
        * recover_records(): a record that a live process moved meanwhile is left alone. */
       if
       :: atomic { (owner[r] < 6 && dead[owner[r]] && st[r] == RESERVED) -> owner[r] = 9 }  /* never accepted */
       :: atomic { (owner[r] < 6 && dead[owner[r]] && st[r] == QUEUED &&
                    !(sfull[IDX(where[r])] && slap[IDX(where[r])] == LAP(where[r]) && sval[IDX(where[r])] == r)) ->
                   st[r] = RUNNING; owner[r] = 5 };
            push(5, r, false)                          /* accepted, never published */
       :: atomic { (owner[r] < 6 && dead[owner[r]] && st[r] == RUNNING) -> owner[r] = 5 };
            push(5, r, false)                          /* running(dead): requeued */
       :: else -> skip
       fi;
       r++
  :: (r == 3) -> break
  od;
  recovered = true;
  goto out;
crashed:      /* not reachable: the reaper is called with crashable = false */
  skip;
out:
  skip
}

init {
  byte i, got;
  for (i : 0 .. NREC - 1) { owner[i] = 9 }
  atomic {
    run producer(0, 0); run producer(1, 1);
    run consumer(2); run consumer(3);
    run reaper()
  }
  /* every process has ended */
  (_nr_pr == 1);
  assert(ALL_FINISHED);
  /* No wedge: the ring still accepts and yields a new task. */
  st[3] = RESERVED; owner[3] = 4;
  push(4, 3, false);
  pop(4, got);
  assert(got == 3);
  goto out;
crashed:      /* not reachable: init pushes with crashable = false */
  skip;
out:
  skip
}
