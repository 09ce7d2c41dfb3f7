/*
 * worker.h
 *		What the background workers share: a short transaction of their own.
 */
#ifndef AIMROUTE_WORKER_H
#define AIMROUTE_WORKER_H

#include "postgres.h"

/* How many databases aimroute.database may name. */
#define AIMROUTE_MAX_DATABASES 32

/*
 * What a worker supplies to the skeleton (WorkerMain): its name, what it
 * does once connected, and one round of its work.
 */
typedef struct WorkerKind
{
	const char *name;			  /* backend type and application name */
	void (*start)(int slot);	  /* once connected (may be NULL); slot: the
								  * database's place in aimroute.database */
	long (*round)(bool *missing); /* one round; returns the milliseconds to
								   * sleep, *missing when aimroute is not
								   * installed */
} WorkerKind;

extern void WorkerInit(void);
extern void WorkerMain(Datum arg, const WorkerKind *kind) pg_attribute_noreturn();
extern const char *WorkerDatabase(Datum arg);
extern bool WorkerBeginTransaction(const char *activity);
extern void WorkerCommitTransaction(void);
extern void WorkerRegister(const char *function, const char *name);
extern bool WorkersRunHere(void);
extern bool WorkerHasFunction(const char *name);
extern double WorkerFloat(const char *sql, bool read_only);

#endif /* AIMROUTE_WORKER_H */
