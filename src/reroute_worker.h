/*
 * reroute_worker.h
 *		The background worker that re-routes overdue unviewed leads.
 */
#ifndef AIMROUTE_REROUTE_WORKER_H
#define AIMROUTE_REROUTE_WORKER_H

extern void RerouteWorkerInit(void);

#endif /* AIMROUTE_REROUTE_WORKER_H */
