/*
 * adf.h
 *		Rendering a lead as an ADF 1.0 (Auto-lead Data Format) XML document,
 *		the format dealer CRMs ingest.
 */
#ifndef AIMROUTE_ADF_H
#define AIMROUTE_ADF_H

/*
 * The values of one ADF message, in the order of the arguments of
 * aimroute.adf_render().  Each is a NUL-terminated string in the database
 * encoding, or NULL when missing.
 */
typedef enum AdfField
{
	ADF_LEAD_ID,
	ADF_REQUEST_DATE,
	ADF_VEHICLE_YEAR,
	ADF_VEHICLE_MAKE,
	ADF_VEHICLE_MODEL,
	ADF_FIRST_NAME,
	ADF_LAST_NAME,
	ADF_EMAIL,
	ADF_PHONE,
	ADF_STREET,
	ADF_CITY,
	ADF_REGION_CODE,
	ADF_POSTAL_CODE,
	ADF_COUNTRY,
	ADF_COMMENTS,
	ADF_VENDOR_ID,
	ADF_VENDOR_NAME,
	ADF_PROVIDER_NAME,
	ADF_NFIELDS
} AdfField;

extern char *AdfRender(const char *const values[ADF_NFIELDS]);

#endif /* AIMROUTE_ADF_H */
