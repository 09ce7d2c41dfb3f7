/*
 * worker.h
 *		What the background workers share: a short transaction of their own.
 */
#ifndef AIMROUTE_WORKER_H
#define AIMROUTE_WORKER_H

extern bool WorkerBeginTransaction(const char *activity);
extern void WorkerCommitTransaction(void);
extern void WorkerRegister(const char *function, const char *name);
extern bool WorkersRunHere(void);

#endif /* AIMROUTE_WORKER_H */
