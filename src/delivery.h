/*
 * delivery.h
 *		Lead delivery: the outbox queue and the delivery worker.
 */
#ifndef AIMROUTE_DELIVERY_H
#define AIMROUTE_DELIVERY_H

extern int64 QueueLeadDelivery(int64 lead_id, const char *dealer_number, const char *event);
extern void DeliveryWorkerInit(void);
extern void DeliveryWakeWorkerAtCommit(void);

/* bounce_mailbox.c: the delivery worker reads the bounce mailbox. */
extern void BounceMailboxInit(void);
extern long BounceMailboxRound(const char *ca_file, int timeout);

#endif /* AIMROUTE_DELIVERY_H */
