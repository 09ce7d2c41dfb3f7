/*
 * model_share.h
 *		Routing models in shared memory, one per database and
 *		configuration version (model_share.c).
 */
#ifndef AIMROUTE_MODEL_SHARE_H
#define AIMROUTE_MODEL_SHARE_H

#include "storage/dsm.h"

#include "model.h"

extern void ModelShareInit(void);
extern bool ModelShareEnabled(void);
extern dsm_segment *ModelShareAttach(const ModelKey *key);
extern void ModelShareLockBuild(const ModelKey *key);
extern void ModelShareUnlockBuild(const ModelKey *key);
extern dsm_segment *ModelSharePublish(const ModelKey *key, const char *bytes, Size size);

#endif /* AIMROUTE_MODEL_SHARE_H */
