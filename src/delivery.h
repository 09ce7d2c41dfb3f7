/*
 * delivery.h
 *		Lead delivery: the outbox queue and the delivery worker.
 */
#ifndef AIMROUTE_DELIVERY_H
#define AIMROUTE_DELIVERY_H

extern int64 QueueLeadDelivery(int64 lead_id, const char *dealer_number, const char *event);
extern void DeliveryWorkerInit(void);
extern void DeliveryWakeWorkerAtCommit(void);

#endif /* AIMROUTE_DELIVERY_H */
