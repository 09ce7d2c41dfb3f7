/*
 * reroute_worker.h
 *		The background worker that re-routes overdue unviewed leads.
 */
#ifndef AIMROUTE_REROUTE_WORKER_H
#define AIMROUTE_REROUTE_WORKER_H

/* aimroute.database: where the background workers run (when preloaded). */
extern char *aimroute_worker_database;

extern void RerouteWorkerInit(void);

#endif /* AIMROUTE_REROUTE_WORKER_H */
