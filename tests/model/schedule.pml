/* Firing a schedule's due times exactly once (lib/src/engine/schedules.hpp, F1..F4, and
 * finish_firing, the reaper's part), with two firers that may be SIGKILLed at any step
 * and come back as new participants once reaped, and a reaper that runs finish_firing
 * and then recover_records for each dead firer.
 *
 * The schedule's `next` word is (due, claimer), changed only by CAS: modelled as two
 * variables changed together in one atomic step. A firer's record holds the occurrence:
 * free, reserved (filled, not accepted) or queued (published), and the id of the task it
 * holds (a fresh id at every reservation, as a record's version makes ids unique); a
 * published record may be taken and freed, and reserved again, at any time after.
 *
 * Checked: no due time is published twice (assert at every publish), and when every
 * due time up to D_MAX has passed, each was published exactly once (assert at the end).
 * Mutants that must fail:
 *   MUTANT_GIVE_BACK_ALWAYS  the reaper gives a claimed due time back without looking at
 *                            the record (a published occurrence is fired again);
 *   MUTANT_NO_ID_CHECK       the reaper takes "reserved by the dead firer" to mean "not
 *                            published", without the task id (a record reserved again
 *                            for the next due time looks like the unpublished one);
 *   MUTANT_PUBLISH_FIRST     a firer publishes before it claims.
 */
#define NF 2
#define D_MAX 2
#define MAX_CRASHES 1

byte due = 0;
byte claimer = 0;            /* 0 = none, else firer + 1 */
byte published[D_MAX];
byte rec_state[NF];          /* 0 free, 1 reserved, 2 queued */
byte rec_tid[NF];
byte tid_seq = 0;
bool note[NF];
byte note_due[NF];
byte note_tid[NF];
bool dead[NF];
byte crashes = 0;

/* A SIGKILL here, at most MAX_CRASHES in a run. */
#define CRASH if :: crashes < MAX_CRASHES -> crashes++; goto killed :: skip fi

proctype firer(byte f) {
  byte d, t;
restart:
  do
  :: atomic { due >= D_MAX -> break }
  :: atomic { due < D_MAX && claimer == 0 -> d = due }
     /* A published occurrence of an earlier firing may be taken and freed by now. */
     if :: rec_state[f] == 2 -> rec_state[f] = 0 :: skip fi;
#ifdef MUTANT_PUBLISH_FIRST
     atomic { tid_seq++; t = tid_seq; rec_tid[f] = t; rec_state[f] = 2; published[d]++; assert(published[d] <= 1) }
     CRASH;
     atomic { note_due[f] = d; note_tid[f] = t; note[f] = 1 }
     if
     :: atomic { due == d && claimer == 0 -> claimer = f + 1 }
     :: atomic { !(due == d && claimer == 0) -> note[f] = 0 }; goto next
     fi;
#else
     /* F1: the record, reserved and filled, then the note. */
     atomic { tid_seq++; t = tid_seq; rec_tid[f] = t; rec_state[f] = 1 }
     CRASH;
     atomic { note_due[f] = d; note_tid[f] = t; note[f] = 1 }
     CRASH;
     /* F2: the claim; a firer that loses frees its record. */
     if
     :: atomic { due == d && claimer == 0 -> claimer = f + 1 }
     :: atomic { !(due == d && claimer == 0) -> rec_state[f] = 0 }; CRASH; note[f] = 0; goto next
     fi;
     CRASH;
     /* F3: publish. */
     atomic { rec_state[f] = 2; published[d]++; assert(published[d] <= 1) }
     /* Its task may be taken and done at once, and the record reserved again by another
      * thread of this process, before this one advances. */
     if :: atomic { rec_state[f] == 2 -> tid_seq++; rec_tid[f] = tid_seq; rec_state[f] = 1 } :: skip fi;
#endif
     CRASH;
     /* F4: advance (refused if a reaper settled the claim meanwhile). */
     atomic { if :: due == d && claimer == f + 1 -> due = d + 1; claimer = 0 :: else -> skip fi }
     CRASH;
     note[f] = 0;
     if :: rec_state[f] == 1 -> rec_state[f] = 0 :: else -> skip fi;  /* the other thread's, done with */
next:
     skip
  od;
  goto done;
killed:
  dead[f] = 1;
  /* Reaped: a new process takes the participant's place. */
  (dead[f] == 0);
  goto restart;
done:
  skip
}

/* finish_firing, then recover_records' part (a reserved record of the dead is freed). */
active proctype reaper() {
  byte f, nd, nt, ns, ntid;
  bool nn;
end:
  do
  :: f = 0;
     do
     :: f < NF ->
        if
        :: dead[f] ->
           atomic { nn = note[f]; nd = note_due[f]; nt = note_tid[f]; ns = rec_state[f]; ntid = rec_tid[f] }
           if
           :: nn ->
              atomic {
                if
                :: due == nd && claimer == f + 1 ->
#ifdef MUTANT_GIVE_BACK_ALWAYS
                   claimer = 0
#else
#ifdef MUTANT_NO_ID_CHECK
                   if :: ns == 1 -> claimer = 0 :: else -> due = nd + 1; claimer = 0 fi
#else
                   if :: ns == 1 && ntid == nt -> claimer = 0 :: else -> due = nd + 1; claimer = 0 fi
#endif
#endif
                :: else -> skip
                fi
              }
           :: else -> skip
           fi;
           note[f] = 0;
           if :: rec_state[f] == 1 -> rec_state[f] = 0 :: else -> skip fi;
           dead[f] = 0
        :: else -> skip
        fi;
        f++
     :: else -> break
     od
  od
}

init {
  byte d;
  atomic { run firer(0); run firer(1) }
  (_nr_pr == 2);  /* the firers have finished: only the reaper and init are left */
  assert(due == D_MAX);
  for (d : 0 .. D_MAX - 1) { assert(published[d] == 1) }
}
