/* A model of the shmsched ring protocol WITH RUNS (lib/include/shmsched/ring.hpp,
 * try_push with a run and try_pop_many, and the record transitions around them in
 * lib/src/engine/records.hpp: move_run, push_run), for spin. ring.pml models entries of
 * one record; this one the entries of several (docs/ring-protocol.md, "Runs").
 *
 * Producer 0 publishes records 0, 1 and 2 as one run (W1 for each, S1 for each, one
 * R3); producer 1 publishes record 3 alone. Consumer 2 takes up to two tasks per pop
 * (try_take_batch), consumer 3 one (try_take), so a run is split between poppers,
 * taken from its front, and the entry moved on past what was taken (or cleared) with
 * one CAS; a pop that empties an entry goes on to the next one. After recovery, init
 * pushes record 4 and the ring wraps. Any
 * one process may crash at any step (at most MAXCRASH crashes in a run), a consumer
 * included between its claim and the move of the entry; a reaper then recovers the
 * crashed process's records exactly as reap_dead() does. (A batch in the code queues
 * all its records before its first R3; that state -- queued, in no ring -- is the one
 * modelled here between S1 and R3.) Checked:
 *   - every accepted task (its record reached `queued`) is finished at least once;
 *   - the ring never delivers a record twice for one publication (a claim is one CAS
 *     from `queued` at the slot's position);
 *   - after recovery the ring still accepts and yields (no wedge), and no slot holds a
 *     live entry that nobody can take.
 * docs/ring-protocol.md maps each labelled step to the code. */

#define NSLOT 2
#define NREC 5          /* records 0,1,2 (a run), 3: the producers'; 4: the after-recovery check */
#define NTASK 4         /* the producers' records */
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

byte slap[NSLOT];      /* slot word: lap, full, front value, count */
bool sfull[NSLOT];
byte sval[NSLOT];
byte scnt[NSLOT];
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

/* Whether value v is not takeable at pos; an entry of n values from v is a leftover
 * when none of them is (n <= 3 here). */
#define STALE(v, pos) (st[v] != QUEUED || where[v] != (pos))
#define STALE_ALL(v, n, pos) (STALE(v, pos) && ((n) < 2 || STALE((v) + 1, pos)) && ((n) < 3 || STALE((v) + 2, pos)))
/* The entry at pos still holds value r (r is in the part not yet moved past). */
#define HOLDS(pos, r) (sfull[IDX(pos)] && slap[IDX(pos)] == LAP(pos) && sval[IDX(pos)] <= (r) && \
                       (r) < sval[IDX(pos)] + scnt[IDX(pos)])
/* Where a popper moves the entry after looking at its values up to k (exclusive). The
 * mutant moves it past the whole run after taking only its front: the rest is lost. */
#ifdef MUTANT
#define MOVED_TO(k, e) (e)
#else
#define MOVED_TO(k, e) (k)
#endif

/* Push records r .. r+n-1 (owned by `me`, not yet queued or running) into the ring as one
 * entry: W1 for each, S1 for each (first attempt only; a crash may come between two),
 * one R3. `crashable` says whether this process may crash (the reaper is modelled as
 * reliable here; its own crash is covered by idempotence: it only repeats these steps). */
inline push(me, r, n, crashable) {
  byte t, l, v, c, k;
  bool f;
  t = tail;                                            /* R1 */
  do
  :: atomic { l = slap[IDX(t)]; f = sfull[IDX(t)]; v = sval[IDX(t)]; c = scnt[IDX(t)] }   /* R2 */
     if
     :: (l == LAP(t) && !f) ->
          k = 0;
          do
          :: (k < n) ->
               where[r + k] = t;                       /* W1 */
               if
               :: (st[r + k] != QUEUED) ->
                    atomic { st[r + k] = QUEUED; owner[r + k] = me; published[r + k]++; accepted[r + k] = true }  /* S1 */
               :: else -> skip
               fi;
               if :: crashable -> CRASH(me) :: else -> skip fi;
               k++
          :: else -> break
          od;
          if                                           /* R3: CAS EMPTY(lap t) -> FULL(lap t, r, n) */
          :: atomic { (slap[IDX(t)] == LAP(t) && !sfull[IDX(t)]) -> sfull[IDX(t)] = true; sval[IDX(t)] = r; scnt[IDX(t)] = n };
             break
          :: else -> skip                              /* lost the race: look again at t */
          fi
     :: (l == LAP(t) && f) || (l > LAP(t)) -> t++      /* tail hint behind */
     :: (l + 1 == LAP(t) && f) ->
          if
          :: atomic { STALE_ALL(v, c, t - NSLOT) &&    /* R4': clear a leftover run */
                      slap[IDX(t)] == l && sfull[IDX(t)] && sval[IDX(t)] == v && scnt[IDX(t)] == c ->
                      sfull[IDX(t)] = false; slap[IDX(t)] = LAP(t) }
          :: else -> skip                              /* full: it frees up */
          fi
     fi
  od;
  if :: crashable -> CRASH(me) :: else -> skip fi;
  atomic { if :: (tail < t + 1) -> tail = t + 1 :: else -> skip fi }   /* hint */
}

proctype producer(byte me; byte r; byte n) {
  byte j = 0;
  do
  :: (j < n) -> atomic { st[r + j] = RESERVED; owner[r + j] = me }; j++   /* S0 for each */
  :: else -> break
  od;
  CRASH(me);
  push(me, r, n, true);
  producers_left--;
  goto out;
crashed:
  producers_left--;
out:
  skip
}

/* Take up to `want` (1 or 2) values: R5, R6, then T1/T2 on the entry's values from its
 * front until `want` are taken or the entry ends, then R4: move the entry on past the
 * values looked at (or clear it when none is left); an entry looked at to its end
 * leaves the pop going on to the next position. The values taken are got[me], got2[me]
 * (NREC: none), ng[me] of them. */
inline pop(me, want) {
  byte h, l, v, c, k, e;
  bool f;
  ng[me] = 0; got[me] = NREC; got2[me] = NREC;
  h = head;                                            /* R5 */
  do
  :: atomic { l = slap[IDX(h)]; f = sfull[IDX(h)]; v = sval[IDX(h)]; c = scnt[IDX(h)] }   /* R6 */
     if
     :: (l == LAP(h) && !f) -> break                   /* empty */
     :: (l == LAP(h) && f) ->
          e = v + c;
          k = v;
          do
          :: (k < e && ng[me] < want) ->
               atomic {                                /* T1 + T2: CAS queued -> running(me) */
                 if
                 :: (st[k] == QUEUED && where[k] == h) ->
                      st[k] = RUNNING; owner[k] = me; delivered[k]++;
                      if :: (ng[me] == 0) -> got[me] = k :: else -> got2[me] = k fi;
                      ng[me]++;
                      assert(delivered[k] <= published[k])  /* never twice for one publication */
                 :: else -> skip                       /* taken already, or a leftover */
                 fi
               };
               k++
          :: else -> break
          od;
          CRASH(me);
          atomic {                                     /* R4: move on past k, or clear */
            if
            :: (slap[IDX(h)] == l && sfull[IDX(h)] && sval[IDX(h)] < k) ->
                 if
                 :: (MOVED_TO(k, e) == e) -> sfull[IDX(h)] = false; slap[IDX(h)] = l + 1
                 :: else -> scnt[IDX(h)] = e - k; sval[IDX(h)] = k
                 fi
            :: else -> skip
            fi
          };
          if
          :: (k == e) ->
               atomic { if :: (head < h + 1) -> head = h + 1 :: else -> skip fi };
               if
               :: (ng[me] == want) -> break
               :: else -> h++
               fi
          :: else -> break                             /* taken, with values left in the entry */
          fi
     :: (l > LAP(h)) -> h++                            /* head hint behind */
     fi
  od
}

#define DONE_IF_ACCEPTED(r) (!accepted[r] || finished[r] > 0)
#define ALL_FINISHED (DONE_IF_ACCEPTED(0) && DONE_IF_ACCEPTED(1) && DONE_IF_ACCEPTED(2) && DONE_IF_ACCEPTED(3))

byte got[6];   /* per popper: the values its last pop took */
byte got2[6];
byte ng[6];

proctype consumer(byte me; byte want) {
  /* Poll until the ring is seen empty after the producers are done and the reaper has
   * recovered: then init checks that every accepted task was finished. A lost task is
   * not in the ring, so the consumers stop and the check fails. */
  bool last;
  do
  :: last = (producers_left == 0 && recovered);   /* read before the pop that may end it */
     pop(me, want);
     if
     :: (ng[me] != 0) ->
          CRASH(me);
          atomic { st[got[me]] = DONE; owner[got[me]] = 9; finished[got[me]]++ };
          if
          :: (ng[me] == 2) ->
               CRASH(me);                              /* between two completions of a batch */
               atomic { st[got2[me]] = DONE; owner[got2[me]] = 9; finished[got2[me]]++ }
          :: else -> skip
          fi
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
  :: (r < NTASK) ->
       /* Each decision is one CAS from the state the reaper observed, as in
        * recover_records(): a record that a live process moved meanwhile is left alone. */
       if
       :: atomic { (owner[r] < 6 && dead[owner[r]] && st[r] == RESERVED) -> owner[r] = 9 }  /* never accepted */
       :: atomic { (owner[r] < 6 && dead[owner[r]] && st[r] == QUEUED &&
                    !HOLDS(where[r], r)) ->
                   st[r] = RUNNING; owner[r] = 5 };
            push(5, r, 1, false)                       /* accepted, never published */
       :: atomic { (owner[r] < 6 && dead[owner[r]] && st[r] == RUNNING) -> owner[r] = 5 };
            push(5, r, 1, false)                       /* running(dead): requeued */
       :: else -> skip
       fi;
       r++
  :: (r == NTASK) -> break
  od;
  recovered = true;
  goto out;
crashed:      /* not reachable: the reaper is called with crashable = false */
  skip;
out:
  skip
}

init {
  byte i;
  for (i : 0 .. NREC - 1) { owner[i] = 9 }
  atomic {
    run producer(0, 0, 3); run producer(1, 3, 1);
    run consumer(2, 2); run consumer(3, 1);
    run reaper()
  }
  /* every process has ended */
  (_nr_pr == 1);
  assert(ALL_FINISHED);
  /* No wedge: the ring still accepts and yields a new task. */
  st[4] = RESERVED; owner[4] = 4;
  push(4, 4, 1, false);
  pop(4, 1);
  assert(got[4] == 4);
  goto out;
crashed:      /* not reachable: init pushes with crashable = false */
  skip;
out:
  skip
}
