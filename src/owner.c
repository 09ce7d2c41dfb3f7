/*
 * owner.c
 *		Acting as the extension's owner.
 *
 * Every object of aimroute but its C functions belongs to the role that ran
 * CREATE EXTENSION (schema/090_owner.sql), which need not be a superuser:
 * aimroute is a trusted extension.  Work that aimroute does beyond its
 * caller's rights runs as that owner -- the background workers' work, and
 * the queueing of a lead's notice that a dealer user asked for -- never as
 * the bootstrap superuser the workers connect as.  Otherwise a trigger or a
 * default the owner put on its own tables would run with a superuser's
 * rights.  As VACUUM does for a table's owner, the switch is a
 * security-restricted operation (no SET ROLE, no temporary tables), and
 * settings changed under it are undone when it ends.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"

#include "catalog.h"
#include "owner.h"

/*
 * ExtensionOwner returns the role that owns extension aimroute in the
 * current database, or InvalidOid when it is not installed.
 */
Oid
ExtensionOwner(void)
{
	Oid ext;
	Oid owner;
	Oid schema;

	return ExtensionRow("aimroute", &ext, &owner, &schema) ? owner : InvalidOid;
}

/*
 * BecomeExtensionOwner makes the extension's owner the current user, in a
 * security-restricted operation, until RestoreCaller.  It changes nothing
 * when the extension is not installed.  An error in between needs no
 * RestoreCaller: aborting the (sub)transaction restores the user.
 */
void
BecomeExtensionOwner(OwnerSwitch *state)
{
	Oid owner = ExtensionOwner();

	state->switched = OidIsValid(owner);
	if (!state->switched)
		return;
	GetUserIdAndSecContext(&state->saved_user, &state->saved_context);
	SetUserIdAndSecContext(owner, state->saved_context | SECURITY_LOCAL_USERID_CHANGE |
									  SECURITY_RESTRICTED_OPERATION);
	state->guc_nest_level = NewGUCNestLevel();
	state->settings_forgotten = false;
}

/*
 * ForgetOwnerSettings undoes the settings changed since
 * BecomeExtensionOwner, before a commit that would keep them.
 */
void
ForgetOwnerSettings(OwnerSwitch *state)
{
	if (!state->switched || state->settings_forgotten)
		return;
	AtEOXact_GUC(false, state->guc_nest_level);
	state->settings_forgotten = true;
}

/*
 * RestoreCaller undoes BecomeExtensionOwner: settings changed meanwhile go
 * back, and the caller is the current user again.
 */
void
RestoreCaller(OwnerSwitch *state)
{
	if (!state->switched)
		return;
	ForgetOwnerSettings(state);
	SetUserIdAndSecContext(state->saved_user, state->saved_context);
	state->switched = false;
}
