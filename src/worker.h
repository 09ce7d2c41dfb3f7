/*
 * worker.h
 *		What the background workers share: a short transaction of their own.
 */
#ifndef AIMROUTE_WORKER_H
#define AIMROUTE_WORKER_H

#include "postgres.h"

/* How many databases aimroute.database may name. */
#define AIMROUTE_MAX_DATABASES 32

extern void WorkerInit(void);
extern const char *WorkerDatabase(Datum arg);
extern int WorkerConnect(Datum arg, const char *name);
extern bool WorkerBeginTransaction(const char *activity);
extern void WorkerCommitTransaction(void);
extern void WorkerRegister(const char *function, const char *name);
extern bool WorkersRunHere(void);

#endif /* AIMROUTE_WORKER_H */
