/*
 * owner.h
 *		Acting as the extension's owner (owner.c).
 */
#ifndef AIMROUTE_OWNER_H
#define AIMROUTE_OWNER_H

/* What BecomeExtensionOwner changed, for RestoreCaller to undo. */
typedef struct OwnerSwitch
{
	bool switched;
	Oid saved_user;
	int saved_context;
	int guc_nest_level;
	bool settings_forgotten;
} OwnerSwitch;

extern Oid ExtensionOwner(void);
extern void BecomeExtensionOwner(OwnerSwitch *state);
extern void ForgetOwnerSettings(OwnerSwitch *state);
extern void RestoreCaller(OwnerSwitch *state);

#endif /* AIMROUTE_OWNER_H */
