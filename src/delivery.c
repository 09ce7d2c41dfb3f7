/*
 * delivery.c
 *		Queueing a lead's notice and its messages in the outbox at once.
 *
 * Routing only marks a lead to be sent (aimroute.leads.notice_pending,
 * leads.c); the delivery worker expands the marked leads in batches
 * (aimroute.delivery_expand).  A move and send_lead queue their notice at
 * once, through aimroute.queue_lead_delivery(): one prepared statement,
 * kept for the session, that clears the lead's mark and runs
 * aimroute.queue_notices, the statement the worker's expansion runs too,
 * in the caller's transaction.  The delivery worker (delivery_worker.c)
 * sends the messages.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "catalog.h"
#include "delivery.h"
#include "kept_plan.h"
#include "owner.h"
#include "search_path.h"

/*
 * The notice and its messages (aimroute.queue_notices, whose recipient
 * rules are aimroute.lead_recipients), and the lead's mark cleared: the
 * lead gets this notice and not also the one its routing marked.
 */
static const char *const queue_sql =
	"WITH cleared AS ("
	"  UPDATE aimroute.leads l SET notice_pending = false"
	"   WHERE l.lead_id = $1 AND l.notice_pending)"
	" SELECT q.notification_id FROM aimroute.queue_notices(ARRAY[$1], ARRAY[$2], $3) q";

/*
 * The queue of a database not updated from 0.1.0 yet, whose schema has
 * neither the mark nor aimroute.queue_notices: the notice and its messages
 * by the rules of 0.1.0, which aimroute.lead_recipients keeps.  It serves
 * only until ALTER EXTENSION aimroute UPDATE.
 */
static const char *const queue_0_1_0_sql =
	"WITH c AS ("
	"  SELECT c.contact_id, c.email, c.mobile,"
	"         'Leads: Emails To' = ANY (c.contact_types) AS lead_to"
	"    FROM aimroute.dealer_contacts c"
	"   WHERE c.dealer_number = $2"
	"     AND c.contact_types && '{Leads: Emails To,Leads: Emails CC}'::text[]),"
	" i AS ("
	"  SELECT i.integration_id, i.kind, i.endpoint FROM aimroute.crm_integrations i"
	"   WHERE i.dealer_number = $2 AND i.active),"
	" n AS ("
	"  INSERT INTO aimroute.lead_notifications (lead_id, dealer_number, event, no_contacts, messages)"
	"  SELECT $1, $2, $3, NOT q.ok, CASE WHEN q.ok THEN q.messages ELSE 0 END"
	"    FROM (SELECT (EXISTS (SELECT FROM c WHERE c.lead_to AND c.email IS NOT NULL)"
	"                  OR EXISTS (SELECT FROM i)) AS ok,"
	"                 (SELECT count(c.email) + count(c.mobile) FILTER (WHERE s.push_gateway_url IS NOT NULL)"
	"                    FROM c) + (SELECT count(*) FROM i) AS messages"
	"            FROM aimroute.settings s) q"
	"  RETURNING notification_id, no_contacts),"
	" m AS ("
	"  INSERT INTO aimroute.outbox (notification_id, lead_id, dealer_number, method, role,"
	"                               contact_id, integration_id, recipient)"
	"  SELECT n.notification_id, $1, $2, r.method, r.role, r.contact_id, r.integration_id, r.recipient"
	"    FROM n, ("
	"      SELECT 'email', CASE WHEN c.lead_to THEN 'To' ELSE 'CC' END, c.contact_id, NULL::bigint,"
	"             c.email FROM c WHERE c.email IS NOT NULL"
	"      UNION ALL"
	"      SELECT 'mobile', 'Push', c.contact_id, NULL, c.mobile FROM c, aimroute.settings s"
	"       WHERE c.mobile IS NOT NULL AND s.push_gateway_url IS NOT NULL"
	"      UNION ALL"
	"      SELECT 'crm', i.kind, NULL, i.integration_id, i.endpoint FROM i"
	"    ) AS r (method, role, contact_id, integration_id, recipient)"
	"   WHERE NOT n.no_contacts)"
	" SELECT notification_id FROM n";

static SPIPlanPtr queue_plan = NULL;
static SPIPlanPtr queue_0_1_0_plan = NULL;
static Oid queue_types[3] = { INT8OID, TEXTOID, TEXTOID };

static void CheckLeadHolder(int64 lead_id, const char *dealer_number);

PG_FUNCTION_INFO_V1(aimroute_queue_lead_delivery);
PG_FUNCTION_INFO_V1(aimroute_wake_delivery_worker);
PG_FUNCTION_INFO_V1(aimroute_new_view_token);

/*
 * QueueLeadDelivery queues the notice of a lead to a dealer and its
 * messages, and returns the notice's id.  The caller is connected to SPI.
 */
int64
QueueLeadDelivery(int64 lead_id, const char *dealer_number, const char *event)
{
	Datum args[3];
	bool isnull;
	Datum id;

	args[0] = Int64GetDatum(lead_id);
	args[1] = CStringGetTextDatum(dealer_number);
	args[2] = CStringGetTextDatum(event);
	if (SPI_execute_plan(
			AimrouteHasColumn("leads", "notice_pending")
				? KeptPlan(&queue_plan, queue_sql, 3, queue_types, CURSOR_OPT_GENERIC_PLAN)
				: KeptPlan(&queue_0_1_0_plan, queue_0_1_0_sql, 3, queue_types,
						   CURSOR_OPT_GENERIC_PLAN),
			args, NULL, false, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not queue the delivery of lead " INT64_FORMAT, lead_id);
	id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	DeliveryWakeWorkerAtCommit();
	return isnull ? 0 : DatumGetInt64(id);
}

/*
 * CheckLeadHolder refuses to queue a lead's notice to any dealer but the
 * one holding the lead, and a lead the caller cannot see: it reads the
 * lead with the caller's rights, under row-level security, so a dealer
 * user can queue only its own dealers' leads, and only to them.
 */
static void
CheckLeadHolder(int64 lead_id, const char *dealer_number)
{
	static SPIPlanPtr plan = NULL;
	Oid type = INT8OID;
	Datum arg = Int64GetDatum(lead_id);
	char *holder = NULL;

	if (SPI_execute_plan(KeptPlan(&plan,
								  "SELECT dealer_number FROM aimroute.leads WHERE lead_id = $1", 1,
								  &type, 0),
						 &arg, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
		holder = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (holder == NULL)
		ereport(
			ERROR,
			(errcode(ERRCODE_NO_DATA_FOUND),
			 errmsg("lead " INT64_FORMAT " does not exist", lead_id),
			 errhint(
				 "A lead of a dealer outside the caller's scope is not seen (aimroute.user_scopes).")));
	if (strcmp(holder, dealer_number) != 0)
		ereport(
			ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("lead " INT64_FORMAT " is held by dealer %s, not %s", lead_id, holder,
					dealer_number),
			 errhint(
				 "A lead's notice goes to the dealer holding it; move the lead with aimroute.reassign first.")));
}

/*
 * aimroute_queue_lead_delivery is the SQL function
 * aimroute.queue_lead_delivery(lead_id, dealer_number, event).  The lead is
 * checked with the caller's rights; the notice and its messages, which a
 * dealer user may not write, are queued as the extension's owner.
 */
Datum
aimroute_queue_lead_delivery(PG_FUNCTION_ARGS)
{
	int64 lead_id;
	char *dealer_number;
	char *event;
	OwnerSwitch owner;
	int64 id;
	int pinned;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	lead_id = PG_GETARG_INT64(0);
	dealer_number = text_to_cstring(PG_GETARG_TEXT_PP(1));
	event = text_to_cstring(PG_GETARG_TEXT_PP(2));
	pinned = SpiConnectPinned();
	CheckLeadHolder(lead_id, dealer_number);
	BecomeExtensionOwner(&owner);
	id = QueueLeadDelivery(lead_id, dealer_number, event);
	RestoreCaller(&owner);
	SpiFinishPinned(pinned);
	PG_RETURN_INT64(id);
}

/*
 * aimroute_wake_delivery_worker is the SQL function
 * aimroute.wake_delivery_worker(): the delivery worker wakes when the
 * current transaction commits, for messages queued by SQL of its own.
 */
Datum
aimroute_wake_delivery_worker(PG_FUNCTION_ARGS)
{
	DeliveryWakeWorkerAtCommit();
	PG_RETURN_VOID();
}

/*
 * aimroute_new_view_token is the SQL function aimroute.new_view_token(): 30
 * bytes from the strong random source, as 40 URL-safe base64 characters
 * (240 bits), the default of a notice's view token.
 */
Datum
aimroute_new_view_token(PG_FUNCTION_ARGS)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint8 bytes[30];
	char token[41];
	int n = 0;

	if (!pg_strong_random(bytes, sizeof(bytes)))
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
						errmsg("could not generate a random view token")));
	for (int i = 0; i < (int) sizeof(bytes); i += 3)
	{
		uint32 v = ((uint32) bytes[i] << 16) | ((uint32) bytes[i + 1] << 8) | bytes[i + 2];

		token[n++] = alphabet[(v >> 18) & 63];
		token[n++] = alphabet[(v >> 12) & 63];
		token[n++] = alphabet[(v >> 6) & 63];
		token[n++] = alphabet[v & 63];
	}
	token[n] = '\0';
	PG_RETURN_TEXT_P(cstring_to_text(token));
}
