/* Named leases in a PostgreSQL database shared by several qodd nodes: at most one holder per name at a time, for
 * work that only one node may do (e.g. delivering the outbox). Time is the database's clock, so the nodes' clocks
 * need not agree. Each call is one autocommit statement on the lease's own connection; safe from any thread.
 * Implemented in postgres.c, on the same schema as the store (opening either runs the migrations). */
#ifndef QOD_STORE_PG_LEASE_H
#define QOD_STORE_PG_LEASE_H

#include <stddef.h>
#include <stdint.h>

typedef struct qod_pg_lease qod_pg_lease;

/* Connects to the postgres:// or postgresql:// URI (borrowed) and migrates the schema. A call the server has not
 * answered within answer_ms (0: no limit) gives up its connection and is tried once more on a new one, then fails
 * with QOD_ERR_STORE: a server process frozen, or cut off without a reset, must not hold the caller (a node's lease
 * round) past its lease. QOD_OK or QOD_ERR_STORE. */
int qod_pg_lease_open(const char *uri, int64_t answer_ms, qod_pg_lease **out);
/* Closes the connection; leases held run until they expire or are released. NULL is a no-op. */
void qod_pg_lease_close(qod_pg_lease *l);
/* Takes lease `name` for `holder`, or renews it when holder has it, for ttl_ms (1 ms to 24 h). QOD_OK with *epoch
 * (optional) set to a fencing token that grows whenever the lease changes hands or lapses; QOD_ERR_BUSY while
 * another holder's lease runs; QOD_ERR_INVALID for empty or over-long names; QOD_ERR_STORE. */
int qod_pg_lease_acquire(qod_pg_lease *l, const char *name, const char *holder, int64_t ttl_ms, int64_t *epoch);
/* qod_pg_lease_acquire() that never waits: QOD_ERR_BUSY also while the lease's row is locked by another
 * transaction (a holder's fenced write still open, after its lease ran out: its process frozen, say). For taking
 * over a lease another holder let run out. */
int qod_pg_lease_take(qod_pg_lease *l, const char *name, const char *holder, int64_t ttl_ms, int64_t *epoch);
/* Ends holder's lease on name now; QOD_OK also when holder did not hold it. */
int qod_pg_lease_release(qod_pg_lease *l, const char *name, const char *holder);
/* The running lease on name: holder copied into holder[cap] (truncated), *epoch and *remaining_ms when non-NULL.
 * QOD_ERR_NOTFOUND when nobody holds it. */
int qod_pg_lease_holder(qod_pg_lease *l, const char *name, char *holder, size_t cap, int64_t *epoch,
                        int64_t *remaining_ms);
/* Calls fn for every running lease whose name starts with prefix, in name order (fn returns 0 to go on).
 * Strings borrowed for the call. */
int qod_pg_lease_list(qod_pg_lease *l, const char *prefix, int (*fn)(void *arg, const char *name, const char *holder),
                      void *arg);

#endif
